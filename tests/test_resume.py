"""A stopped run resumed from its last checkpoint ends byte-identical to one that never stopped."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from icl_lab import load_run, train
from icl_lab.config import ConfigError
from icl_lab.measures import registry
from icl_lab.store import read_json
from interventions import Intervention


def crash_at_evaluation(monkeypatch, n):
    original = registry.MEASURES["icl_accuracy"]
    calls = {"n": 0}

    def flaky(model, data):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("simulated crash")
        return original.fn(model, data)

    monkeypatch.setitem(registry.MEASURES, "icl_accuracy", dataclasses.replace(original, fn=flaky))


@pytest.mark.parametrize("with_clamp", [False, True])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_run_config, monkeypatch, with_clamp):
    config = tiny_run_config.with_overrides({"train.steps": 20, "train.eval_every": 3, "train.checkpoint_every": 5})
    if with_clamp:  # a clamp with state of its own (a running mean) must resume too
        config = dataclasses.replace(config, interventions=(Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean", strength=0.5),))
    train(config, tmp_path / "whole", progress=False)
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 5)  # evaluations at 0, 3, 6, 9, [12 crashes]; checkpoints at 0, 5, 10
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(config, tmp_path / "stopped", progress=False)
    assert read_json(tmp_path / "stopped" / "status.json")["state"] == "failed"
    train(config, tmp_path / "stopped", progress=False, resume=True)
    assert (tmp_path / "stopped" / "metrics.parquet").read_bytes() == (tmp_path / "whole" / "metrics.parquet").read_bytes()
    assert (tmp_path / "stopped" / "checkpoints" / "step_20.safetensors").read_bytes() == (tmp_path / "whole" / "checkpoints" / "step_20.safetensors").read_bytes()
    run = load_run(tmp_path / "stopped")
    assert run.status["state"] == "done"
    if with_clamp:
        assert run.summary["intervention_calls"] == load_run(tmp_path / "whole").summary["intervention_calls"]


def test_resume_refuses_another_config(tmp_path, tiny_run_config):
    train(tiny_run_config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="differs in train"):
        train(tiny_run_config.with_overrides({"train.lr": 1e-2}), tmp_path / "run", progress=False, resume=True)


def test_sigkill_then_icl_lab_resume(tmp_path, tiny_run_config):
    args = ["--steps", "400", "--seed", "2", "--device", "cpu", "--set", "task.num_classes=64", "--set", "task.num_labels=8",
            "--set", "eval_size=32", "--set", "model.d_model=16", "--set", "train.eval_every=20", "--set", "train.checkpoint_every=50", "--no-progress"]
    cli = [sys.executable, "-m", "icl_lab.cli"]
    subprocess.run(cli + ["train", "bursty", "--out", str(tmp_path / "whole")] + args, check=True, capture_output=True)
    proc = subprocess.Popen(cli + ["train", "bursty", "--out", str(tmp_path / "killed")] + args, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoints" / "step_100.state.json").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_json(tmp_path / "killed" / "status.json")["state"] == "running"  # really killed mid-run
    out = subprocess.run(cli + ["resume", str(tmp_path / "killed"), "--no-progress"], check=True, capture_output=True, text=True).stdout
    assert "resuming" in out
    assert (tmp_path / "killed" / "metrics.parquet").read_bytes() == (tmp_path / "whole" / "metrics.parquet").read_bytes()
