"""Bad input that used to be accepted (or failed with a traceback), each refused in one line
before any work starts (issue 27, "Unclear or missing words")."""

import pytest
from conftest import tree_digest

from icl_lab.config import MAX_STEPS, ConfigError
from icl_lab.store import intact_state_steps


@pytest.mark.parametrize("steps", [1e20, MAX_STEPS + 1, "1e12"])
def test_an_absurd_step_count_is_refused_at_parse_time(tiny_run_config, steps):
    with pytest.raises(ConfigError, match=r"train\.steps=.* is more than 100,000,000"):
        tiny_run_config.with_overrides({"train.steps": steps})


def test_the_largest_allowed_step_count_is_accepted(tiny_run_config):
    assert tiny_run_config.with_overrides({"train.steps": MAX_STEPS}).train.steps == MAX_STEPS


@pytest.mark.slow
def test_measure_on_a_file_says_it_is_a_file(tmp_path):
    import subprocess
    import sys

    file = tmp_path / "notes.txt"
    file.write_text("not a run")
    done = subprocess.run([sys.executable, "-m", "icl_lab.cli", "measure", str(file), "--measures", "icl_accuracy"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "a file, not a directory" in done.stderr and "notes.txt" in done.stderr
    assert file.read_text() == "not a run"


def _interrupt_when_running(cmd, run_dir, env=None):
    """Start `cmd`, send Ctrl-C (SIGINT) once run_dir's status says running, return (code, stderr)."""
    import json
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    status = run_dir / "status.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            # a complete checkpoint (weights and training state), not one half-written: under load
            # a Ctrl-C between its files leaves a run that restarts from step 0 (and says so)
            if json.loads(status.read_text())["state"] == "running" and intact_state_steps(run_dir)[0]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["train", "resume"])
def test_ctrl_c_prints_one_line_with_the_resume_command(tmp_path, verb):
    import json
    import os
    import sys

    run_dir = tmp_path / "long"
    base = [sys.executable, "-m", "icl_lab.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    train = [*base, "train", "pairs", "--steps", "100000", "--threads", "1", "--no-progress", "--out", str(run_dir),
             "--set", "train.eval_every=20", "--set", "train.checkpoint_every=20"]
    if verb == "resume":  # a stopped run, interrupted again while resuming
        code, _ = _interrupt_when_running(train, run_dir, env)
        assert code == 130
        cmd = [*base, "resume", str(run_dir), "--threads", "1", "--no-progress"]
    else:
        cmd = train
    code, err = _interrupt_when_running(cmd, run_dir, env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == f"icl-lab {verb}: interrupted (Ctrl-C); run {run_dir} is stopped and resumable: icl-lab resume {run_dir}"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"


@pytest.mark.parametrize("change", ["drop", "reshape", "retype", "foreign"])
def test_a_checkpoint_that_does_not_fit_names_the_tensor_and_its_shape(done_run, change):
    import torch
    from safetensors.torch import load_file, save_file

    from icl_lab.posthoc import measure_run
    from icl_lab.store import RunError, paths

    weights = paths(done_run).weights(5)
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    shape = list(tensors[name].shape)
    if change == "drop":
        del tensors[name]
        expected = rf"missing: {name}"
    elif change == "reshape":
        tensors[name] = torch.zeros(shape[0] + 1, *shape[1:])
        expected = rf"{name} is \[{shape[0] + 1}.*\] float32, the model's \[{shape[0]}.*\] float32"
    elif change == "retype":
        tensors[name] = tensors[name].double()
        expected = rf"{name} is .* float64, the model's .* float32"
    else:
        tensors["bridge.extra_weight"] = torch.zeros(2)
        expected = r"not the model's: bridge\.extra_weight"
    save_file(tensors, weights)
    with pytest.raises(RunError, match=rf"step_5\.safetensors: its tensors do not fit the run's model \({expected}"):
        measure_run(done_run, ["icl_accuracy"], [5], progress=False)


def test_ablation_baseline_of_a_clamped_run_is_the_model_its_curves_measured(tmp_path, tiny_run_config):
    """The baseline of an ablation scan equals the run's own stored metric at that step (which
    the live evaluation measured with the run's clamp on), not the unclamped model's value."""
    import polars as pl

    from icl_lab import train
    from icl_lab.ablate import ablation_scan, patching_scan
    from icl_lab.store import load_metrics
    from interventions import Intervention

    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")
    config = tiny_run_config.with_overrides({"train.steps": 10, "train.eval_every": 5, "train.checkpoint_every": 5})
    config = config.__class__(**{**config.__dict__, "interventions": (clamp,)})
    train(config, tmp_path / "run", progress=False)
    stored = load_metrics(tmp_path / "run").filter(pl.col("step") == 10)
    stored = dict(zip(stored["metric"].to_list(), stored["value"].to_list()))
    table = ablation_scan(tmp_path / "run", step=10, kind="zero", over="heads")
    baselines = dict(table.select("metric", "baseline").unique().iter_rows())
    losses = [m for m in baselines if m.endswith("loss") and m in stored]
    assert losses
    for metric in losses:
        assert abs(baselines[metric] - stored[metric]) < 1e-5, (metric, baselines[metric], stored[metric])
    assert patching_scan(tmp_path / "run", step=10, over="layers").height > 0


def test_a_diverging_run_fails_in_one_line_with_its_traceback_in_status(tmp_path):
    import contextlib
    import io
    import json

    from icl_lab.cli import main

    run = tmp_path / "diverged"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "pairs", "--steps", "30", "--no-progress", "--out", str(run), "--set", "train.lr=1e30"])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"icl-lab train: run {run} failed: NonFiniteLoss:"), err.getvalue()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "Traceback" in status["error"] and "NonFiniteLoss" in status["error"]


@pytest.mark.parametrize("name, content, expected", [
    ("t.pt", None, r"is not one of \.safetensors, \.npy, \.npz \(pickle-based"),
    ("t.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}   ", r"is not a readable \.safetensors file"),
    ("t.npy", b"\x93NUMPY garbage", r"is not a readable \.npy file"),
    ("t.npz", b"PK garbage", r"is not a readable \.npz file"),
])
def test_a_file_target_reads_data_formats_only_and_names_a_bad_file(tmp_path, tiny_run_config, name, content, expected):
    import pickle

    from icl_lab.config import ConfigError
    from icl_lab.models import build_model
    from icl_lab.tasks import make_task
    from interventions import Intervention, InterventionEngine

    sentinel = tmp_path / "unpickled"
    path = tmp_path / name
    if content is None:
        path.write_bytes(pickle.dumps(Path_touch(sentinel)))
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        spec = Intervention(hook="blocks.1.hook_resid_pre", target="file", file=str(path))
        task = make_task("bursty", tiny_run_config.task_config, seed=0, device="cpu")
        model = build_model(tiny_run_config.model, task.io, seed=0, device="cpu")
        InterventionEngine(model, task, [spec]).close()
    assert not sentinel.exists()


def test_a_numpy_file_target_is_read(tmp_path, tiny_run_config):
    import numpy as np
    import torch

    from icl_lab.models import build_model
    from icl_lab.tasks import make_task
    from interventions import Intervention, InterventionEngine

    np.save(tmp_path / "t.npy", np.full((tiny_run_config.model.d_model,), 0.5, dtype=np.float32))
    spec = Intervention(hook="blocks.1.hook_resid_pre", target="file", file=str(tmp_path / "t.npy"))
    task = make_task("bursty", tiny_run_config.task_config, seed=0, device="cpu")
    model = build_model(tiny_run_config.model, task.io, seed=0, device="cpu")
    batch = task.sample_batch(2, task.make_generator(0))
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.hook_resid_pre"], batch=batch)
    assert torch.allclose(cache["blocks.1.hook_resid_pre"], torch.tensor(0.5))


class Path_touch:
    """Unpickling this creates `path` (proof that a file was unpickled)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def _rewrite_state(run_dir, step, change_tensors=None, change_record=None):
    """Change checkpoint `step`'s training state and recompute its checksums, so only the
    contents are wrong (what a checksum cannot catch)."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    folder = run_dir / "checkpoints"
    tensors_file, record_file = folder / f"step_{step}.state.safetensors", folder / f"step_{step}.state.json"
    if change_tensors:
        tensors = load_file(tensors_file)
        change_tensors(tensors)
        save_file(tensors, tensors_file)
    record = json.loads(record_file.read_text())
    if change_record:
        change_record(record["state"])
    record["sha256"]["state"] = hashlib.sha256(tensors_file.read_bytes()).hexdigest()
    record_file.write_text(json.dumps(record))


def _drop(d, key):
    d.pop(key)


FOREIGN_STATES = {
    "rng of another size": (lambda t: t.update(torch_rng=t["torch_rng"][:100]), None, "the global RNG state is"),
    "generator of another size": (lambda t: t.update(data_generator=t["data_generator"][:8]), None, "data generator state is"),
    "moment of another shape": (lambda t: t.update({k: t[k][:1] for k in [sorted(n for n in t if n.endswith("exp_avg"))[0]]}),
                                None, "optimizer exp_avg of parameter"),
    "scheduler without lr_lambdas": (None, lambda s: _drop(s["scheduler"], "lr_lambdas"), "scheduler state has keys"),
    "optimizer of the wrong kind": (None, lambda s: s.update(optimizer=[1, 2]), "the optimizer state is a list"),
    "summary-like list": (None, lambda s: s.update(eval_steps={"a": 1}), "eval_steps is not a list"),
    "count of the wrong type": (None, lambda s: s.update(loss_count="many"), "loss_count is 'many'"),
    "step of another checkpoint": (None, lambda s: s.update(step=3), "step is 3"),
}


@pytest.mark.parametrize("case", list(FOREIGN_STATES))
@pytest.mark.parametrize("verb", ["resume", "resume --steps"])
def test_a_checksum_valid_foreign_state_is_refused_before_anything_is_written(done_run, case, verb):
    import contextlib
    import io
    import json

    from icl_lab.cli import main

    change_tensors, change_record, expected = FOREIGN_STATES[case]
    status = json.loads((done_run / "status.json").read_text())
    status["state"] = "stopped"  # resumable from its newest checkpoint (step 10)
    (done_run / "status.json").write_text(json.dumps(status))
    newest = max(int(p.name.split("_")[1].split(".")[0]) for p in (done_run / "checkpoints").glob("*.state.json"))
    _rewrite_state(done_run, newest, change_tensors, change_record)
    before = tree_digest(done_run)
    args = ["resume", str(done_run), "--no-progress"] + (["--steps", "20"] if verb == "resume --steps" else [])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit:
        main(args)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert exit.value.code == 2 and len(lines) == 1, err.getvalue()
    assert f"step_{newest}.state.json: not this run's training state" in lines[0] and expected in lines[0], lines[0]
    assert tree_digest(done_run) == before


@pytest.mark.parametrize("entry, expected", [
    ('"train.stpes" = 300', r"line 4: .*train\.stpes"),
    ('"train.lr" = nan', r"line 4: .*train\.lr"),
    ('"train.steps" = 300, "train.lr" = inf', r"line 4: .*train\.lr"),
])
def test_a_bad_entry_in_a_sweeps_set_table_names_its_line(entry, expected):
    from icl_lab.config import ConfigError
    from icl_lab.sweep import expand

    text = f'[sweep]\ntask = "bursty"\npreset = "small"\nset = {{ {entry} }}\n\n[axes]\nseed = [0, 1]\n'
    with pytest.raises(ConfigError, match=rf"^grid\.toml, {expected}"):
        expand(text, "grid.toml")
