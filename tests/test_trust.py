"""A run directory is safe to open, hard to destroy by accident, and has one writer at a time."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import interrupt_training_at, tree_digest

from icl_lab import load_run, train
from icl_lab.config import ConfigError
from icl_lab.posthoc import measure_run
from icl_lab.store import RunError, RunLock, RunLocked, intact_state_steps, load_checkpoint, paths, read_status
from icl_lab.train import NonFiniteLoss
from interventions import Intervention


class WritesAFile:
    """Unpickling this runs code: it creates the file named by `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# -- 1. nothing read back from disk runs code -----------------------------------------------
def test_a_pickled_state_is_never_unpickled_by_resume_or_measure(tmp_path, short_config):
    import dataclasses

    config = dataclasses.replace(short_config, interventions=(
        Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean", strength=0.5),))
    run = tmp_path / "run"
    train(config, run, progress=False)
    evidence = tmp_path / "pwned"
    p = paths(run)
    for step in (0, 5, 10, 12):  # an old-format (pickle) run: state.pt files only
        p.state_record(step).unlink()
        p.state_tensors(step).unlink()
        torch.save({"payload": WritesAFile(evidence)}, p.checkpoints / f"step_{step}.state.pt")
    with pytest.raises(RunError, match=r"step_12\.state\.pt"):
        train(config, run, progress=False, resume=True)
    with pytest.raises(RunError, match=r"step_5\.state\.pt: a pickle file"):  # a clamp's running mean lives there
        measure_run(run, ["icl_accuracy"], [5], progress=False)
    assert not evidence.exists()
    pickle.loads(pickle.dumps(WritesAFile(evidence)))  # the payload does work when unpickled
    assert evidence.exists()


# -- 2. only runs are overwritten ------------------------------------------------------------
def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, short_config, done_run):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "chapters" / "one.tex").write_text("\\chapter{Emergence}")
    (thesis / "notes.md").write_text("do not delete")
    os.rename(done_run, thesis / "nested-run")
    before = tree_digest(thesis)
    with pytest.raises(RunError, match="not a run directory written by icl-lab"):
        train(short_config, thesis, progress=False, overwrite=True)
    assert tree_digest(thesis) == before


def test_overwrite_refuses_a_run_holding_other_files(tmp_path, short_config, done_run):
    (done_run / "my-analysis.ipynb").write_text("{}")
    before = tree_digest(done_run)
    with pytest.raises(RunError, match="my-analysis.ipynb"):
        train(short_config, done_run, progress=False, overwrite=True)
    assert tree_digest(done_run) == before
    (done_run / "my-analysis.ipynb").unlink()
    train(short_config, done_run, progress=False, overwrite=True)  # a plain run is replaced
    assert read_status(done_run)["state"] == "done"


def test_out_that_is_a_file_or_unwritable_is_refused(tmp_path, short_config):
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(RunError, match="is a file"):
        train(short_config, target, progress=False)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunError, match="permission denied"):
            train(short_config, locked / "run", progress=False)


# -- 3. one writer per run -------------------------------------------------------------------
@pytest.fixture
def live_holder():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def hold_lock(run: Path, pid: int, verb: str = "train") -> None:
    paths(run).lock.write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "verb": verb, "started": "now"}))


def test_a_second_writer_is_refused_and_changes_nothing(done_run, short_config, live_holder):
    hold_lock(done_run, live_holder.pid)
    before = tree_digest(done_run)
    for attempt in (
        lambda: train(short_config, done_run, progress=False, overwrite=True),
        lambda: train(short_config, done_run, progress=False, resume=True),
        lambda: measure_run(done_run, ["icl_accuracy"], progress=False),
    ):
        with pytest.raises(RunLocked, match=f"pid {live_holder.pid}"):
            attempt()
    from icl_lab.ablate import ablation_scan

    with pytest.raises(RunLocked, match="icl-lab train"):
        ablation_scan(done_run, metrics=["icl_accuracy"])
    assert tree_digest(done_run) == before
    assert load_run(done_run).status["state"] == "done"  # readers never need the lock


def test_a_lock_whose_holder_is_gone_is_taken_over_with_a_notice(done_run, short_config, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hold_lock(done_run, dead.pid)
    measure_run(done_run, ["icl_accuracy"], [5], progress=False)
    assert "taking over the lock" in capsys.readouterr().err
    assert not paths(done_run).lock.exists()  # released after use


def test_lock_is_exclusive_within_one_process(done_run):
    with RunLock(done_run, "measure"):
        with pytest.raises(RunLocked):
            RunLock(done_run, "ablate").acquire()
    with RunLock(done_run, "ablate"):
        pass


# -- 4. exact resume, from step 0 too, with fallback -----------------------------------------
def crash_training_at(monkeypatch, call: int):
    """The `call`-th training forward pass raises (a crash between checkpoints)."""
    interrupt_training_at(monkeypatch, call, RuntimeError)


def test_resume_from_step_zero_is_exact(tmp_path, short_config, monkeypatch):
    train(short_config, tmp_path / "whole", progress=False)
    with monkeypatch.context() as m:
        crash_training_at(m, 4)  # before the first checkpoint after step 0 (step 5)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(short_config, tmp_path / "run", progress=False)
    assert intact_state_steps(tmp_path / "run")[0] == [0]
    train(short_config, tmp_path / "run", progress=False, resume=True)
    assert paths(tmp_path / "run").metrics.read_bytes() == paths(tmp_path / "whole").metrics.read_bytes()


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, short_config, monkeypatch, capsys):
    train(short_config, tmp_path / "whole", progress=False)
    with monkeypatch.context() as m:
        crash_training_at(m, 12)  # after the checkpoints at 0, 5, 10
        with pytest.raises(RuntimeError):
            train(short_config, tmp_path / "run", progress=False)
    state = paths(tmp_path / "run").state_tensors(10)
    state.write_bytes(state.read_bytes()[:100])  # torn by a disk problem
    # the two newest states stay (5, 10; step 0's was dropped when 10's was written): 10 is torn
    assert intact_state_steps(tmp_path / "run") == ([5], ["step 10: step_10.state.safetensors missing or does not match its checksum"])
    train(short_config, tmp_path / "run", progress=False, resume=True)
    assert "skipping the checkpoint at step 10" in capsys.readouterr().err
    assert paths(tmp_path / "run").metrics.read_bytes() == paths(tmp_path / "whole").metrics.read_bytes()
    assert read_status(tmp_path / "run")["state"] == "done"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked trainer")
def test_kills_at_ten_random_moments_each_resumed_end_byte_identical(tmp_path, tiny_run_config):
    config = tiny_run_config.with_overrides({"train.steps": 150, "train.eval_every": 5, "train.checkpoint_every": 7})
    started = time.perf_counter()
    train(config, tmp_path / "whole", progress=False)
    duration = time.perf_counter() - started
    run, rng = tmp_path / "killed", random.Random(1234)
    for _ in range(10):  # each child trains (or resumes) for a random slice of a run's time
        moment = rng.uniform(0.05, 0.3) * duration
        pid = os.fork()
        if pid == 0:  # the child trains (or resumes) until it is killed
            try:
                torch.set_num_threads(1)  # OpenMP's pool does not survive fork
                train(config, run, progress=False, resume=paths(run).config.exists())
            finally:
                os._exit(0)
        time.sleep(moment)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if read_status(run)["state"] == "done":
            break
    if read_status(run)["state"] != "done":  # every kill may have come before the run existed
        train(config, run, progress=False, resume=paths(run).config.exists())
    assert paths(run).metrics.read_bytes() == paths(tmp_path / "whole").metrics.read_bytes()
    for step in (0, 7, 147, 150):
        killed, whole = load_checkpoint(run, step), load_checkpoint(tmp_path / "whole", step)
        assert killed.keys() == whole.keys() and all(torch.equal(killed[k], whole[k]) for k in whole)


# -- 5. corrupt files: one line naming the file ----------------------------------------------
@pytest.mark.parametrize("name, content, expected", [
    ("config.json", "[1, 2]", "expected a JSON dict, found list"),
    ("config.json", '{"task": "bur', "not readable JSON"),
    ("status.json", "garbage", "not readable JSON"),
    ("summary.json", '"a string"', "expected a JSON dict, found str"),
    ("metrics.parquet", "PAR1 not really", "not a readable metrics table"),
])
def test_corrupt_run_files_are_named(done_run, name, content, expected):
    (done_run / name).write_text(content)
    with pytest.raises(RunError, match=expected) as err:
        load_run(done_run)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_corrupt_checkpoint_is_named(done_run):
    weights = paths(done_run).weights(5)
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(RunError, match=r"step_5\.safetensors: not a readable safetensors file"):
        load_checkpoint(done_run, 5)
    with pytest.raises(RunError, match=r"step_5\.safetensors"):
        measure_run(done_run, ["icl_accuracy"], [5], progress=False)


# -- 6. numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("train.lr", "NaN"), ("train.lr", "Infinity"), ("train.weight_decay", float("-inf"))])
def test_non_finite_numbers_are_refused_at_parse_time(short_config, key, value):
    with pytest.raises(ConfigError, match="finite"):
        short_config.with_overrides({key: value})


@pytest.mark.parametrize("seed", [-1, 10**20])
def test_seeds_outside_the_generators_range_are_refused(short_config, seed):
    with pytest.raises(ConfigError, match=r"seed must be an integer in 0\.\."):
        short_config.with_overrides({"seed": seed})


def test_a_non_finite_loss_fails_the_run_at_its_step(tmp_path, short_config, monkeypatch):
    from icl_lab.tasks.bursty import BurstyTask

    original, calls = BurstyTask.loss, {"n": 0}

    def diverging(self, logits, batch):
        calls["n"] += 1
        loss = original(self, logits, batch)
        return loss * float("inf") if calls["n"] >= 6 else loss

    monkeypatch.setattr(BurstyTask, "loss", diverging)
    with pytest.raises(NonFiniteLoss, match="non-finite at step 6"):
        train(short_config, tmp_path / "run", progress=False)
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "non-finite at step 6" in status["error"]
    calls["n"] = 0
    train(short_config.with_overrides({"train.nonfinite_loss": "continue"}), tmp_path / "study", progress=False)
    assert read_status(tmp_path / "study")["state"] == "done"
