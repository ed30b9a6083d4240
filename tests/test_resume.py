"""A stopped run resumed from its last checkpoint ends byte-identical to one that never stopped."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from icl_lab import extend, load_run, train
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


@pytest.mark.slow
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


@pytest.mark.parametrize("with_clamp", [False, True])
def test_extend_equals_a_run_configured_longer(tmp_path, tiny_run_config, with_clamp):
    """`extend` (icl-lab resume RUN --steps N) trains a finished run on: with its old end on the
    eval grid, the metrics table and the last weights are those of a run configured with N steps
    from the start; a clamp window ending at -1 goes on to the new end."""
    config = tiny_run_config.with_overrides({"train.steps": 12, "train.eval_every": 4, "train.checkpoint_every": 5})
    if with_clamp:
        config = dataclasses.replace(config, interventions=(Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean", strength=0.5),))
    train(config.with_overrides({"train.steps": 24}), tmp_path / "long", progress=False)
    train(config, tmp_path / "extended", progress=False)
    extend(tmp_path / "extended", 24, progress=False)
    long, extended = tmp_path / "long", tmp_path / "extended"
    assert (extended / "metrics.parquet").read_bytes() == (long / "metrics.parquet").read_bytes()
    assert (extended / "checkpoints" / "step_24.safetensors").read_bytes() == (long / "checkpoints" / "step_24.safetensors").read_bytes()
    record = read_json(extended / "config.json")
    assert record["train"]["steps"] == 24 and [(e["from"], e["to"]) for e in record["extended"]] == [(12, 24)]
    assert "git" in record["extended"][0] and "versions" in record["extended"][0]
    run = load_run(extended)
    assert run.status["state"] == "done" and run.status["steps"] == 24
    if with_clamp:
        assert run.summary["intervention_calls"] == load_run(long).summary["intervention_calls"]


def test_extend_off_the_eval_grid_adds_only_the_old_end(tmp_path, tiny_run_config):
    config = tiny_run_config.with_overrides({"train.steps": 10, "train.eval_every": 4, "train.checkpoint_every": 5})
    train(config.with_overrides({"train.steps": 16}), tmp_path / "long", progress=False)
    train(config, tmp_path / "extended", progress=False)
    extend(tmp_path / "extended", 16, progress=False)
    long, extended = load_run(tmp_path / "long").metrics, load_run(tmp_path / "extended").metrics
    assert sorted(set(extended["step"])) == [0, 4, 8, 10, 12, 16] and sorted(set(long["step"])) == [0, 4, 8, 12, 16]
    measured = extended.filter((extended["step"] != 10) & (extended["metric"] != "train_loss"))
    assert measured.equals(long.filter(long["metric"] != "train_loss"))


def test_extend_refuses_a_shorter_length_and_a_decaying_schedule_before_writing(tmp_path, tiny_run_config):
    train(tiny_run_config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="--steps 12 must be more than the run's train.steps=12"):
        extend(tmp_path / "run", 12, progress=False)
    train(tiny_run_config.with_overrides({"train.schedule": "cosine"}), tmp_path / "cosine", progress=False)
    with pytest.raises(ConfigError, match="'cosine'.*valid: 'constant'"):
        extend(tmp_path / "cosine", 40, progress=False)
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    assert read_json(tmp_path / "cosine" / "config.json")["train"]["steps"] == 12
    from icl_lab.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["resume", str(tmp_path / "run"), "--steps", "5"])
    assert exit.value.code == 2 and (tmp_path / "run" / "config.json").read_bytes() == before


def test_a_stopped_runs_status_names_the_command_that_continues_it(tmp_path, tiny_run_config, monkeypatch):
    """`icl-lab resume RUN` for a run trained alone; inside `continued_by` (a sweep or an
    experiment) that command, whose rerun resumes the run and finishes its table."""
    from icl_lab.lifecycle import continued_by

    original = registry.MEASURES["icl_accuracy"]

    def ctrl_c(model, data):
        raise KeyboardInterrupt

    monkeypatch.setitem(registry.MEASURES, "icl_accuracy", dataclasses.replace(original, fn=ctrl_c))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run_config, tmp_path / "alone", progress=False)
    assert read_json(tmp_path / "alone" / "status.json")["error"].endswith(f"resume it with `icl-lab resume {tmp_path / 'alone'}`")
    with pytest.raises(KeyboardInterrupt), continued_by("icl-lab sweep grid.toml --out out"):
        train(tiny_run_config, tmp_path / "member", progress=False)
    status = read_json(tmp_path / "member" / "status.json")
    assert status["state"] == "stopped" and "run `icl-lab sweep grid.toml --out out` again" in status["error"]
    assert "icl-lab resume" not in status["error"]
