"""Bad input that used to be accepted (or failed with a traceback), each refused in one line
before any work starts (issue 27, "Unclear or missing words")."""

import pytest

from icl_lab.config import MAX_STEPS, ConfigError


@pytest.mark.parametrize("steps", [1e20, MAX_STEPS + 1, "1e12"])
def test_an_absurd_step_count_is_refused_at_parse_time(tiny_run_config, steps):
    with pytest.raises(ConfigError, match=r"train\.steps=.* is more than 100,000,000"):
        tiny_run_config.with_overrides({"train.steps": steps})


def test_the_largest_allowed_step_count_is_accepted(tiny_run_config):
    assert tiny_run_config.with_overrides({"train.steps": MAX_STEPS}).train.steps == MAX_STEPS


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
            if json.loads(status.read_text())["state"] == "running" and any((run_dir / "checkpoints").glob("*.safetensors")):
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
    import subprocess
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


@pytest.fixture
def short_run(tmp_path, tiny_run_config):
    from icl_lab import train

    config = tiny_run_config.with_overrides({"train.steps": 10, "train.eval_every": 5, "train.checkpoint_every": 5})
    train(config, tmp_path / "run", progress=False)
    return tmp_path / "run"


@pytest.mark.parametrize("change", ["drop", "reshape", "retype", "foreign"])
def test_a_checkpoint_that_does_not_fit_names_the_tensor_and_its_shape(short_run, change):
    import torch
    from safetensors.torch import load_file, save_file

    from icl_lab.posthoc import measure_run
    from icl_lab.store import RunError, paths

    weights = paths(short_run).weights(5)
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
        measure_run(short_run, ["icl_accuracy"], [5], progress=False)
