"""The trainer writes a complete, atomic, reproducible run directory."""

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch

from icl_lab import load_checkpoint, load_run, train
from icl_lab.config import ConfigError
from icl_lab.measures import registry
from icl_lab.models import build_model
from icl_lab.store import RunError, RunWriter, load_metrics
from icl_lab.tasks import ModularTask, make_task
from icl_lab.tasks.base import Milestone


def test_run_directory_layout(tmp_path, tiny_run_config):
    result = train(tiny_run_config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.status["state"] == "done"
    assert run.checkpoint_steps == [0, 5, 10, 12]  # step 0, every 5, and the last
    assert run.metrics.schema == pl.Schema({"step": pl.Int64, "metric": pl.String, "value": pl.Float64})
    assert sorted(run.metrics["step"].unique().to_list()) == [0, 4, 8, 12]
    names = set(run.metrics["metric"].unique().to_list())
    assert {"icl_accuracy", "iwl_accuracy", "label_swap_accuracy", "train_loss", "induction_score.L1H0"} <= names
    assert "train_loss" not in set(run.metrics.filter(pl.col("step") == 0)["metric"].to_list())
    cfg = run.record  # config.json as written: the config and where it ran
    assert cfg["seed"] == 3 and cfg["task"] == "bursty" and cfg["task_config"]["num_classes"] == 64
    assert run.config.seed == 3 and run.config.task_config.num_classes == 64  # the RunConfig read back
    assert {"torch", "transformer-lens", "python"} <= set(cfg["versions"])
    assert "commit" in cfg["git"]
    assert "icl_accuracy" in result.summary["transitions"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_step"] == 12


def test_last_checkpoint_reproduces_the_returned_model(tmp_path, tiny_run_config):
    result = train(tiny_run_config, tmp_path / "run", progress=False)
    task = make_task("bursty", tiny_run_config.task_config, seed=3, device="cpu")
    fresh = build_model(tiny_run_config.model, task.io, seed=99, device="cpu")
    fresh.load_checkpoint_state(load_checkpoint(tmp_path / "run", 12))
    batch = task.eval_sets()["icl"]
    with torch.no_grad():
        assert torch.equal(fresh(batch.inputs, batch.positions), result.model(batch.inputs, batch.positions))
        first = build_model(tiny_run_config.model, task.io, seed=99, device="cpu")
        first.load_checkpoint_state(load_checkpoint(tmp_path / "run", 0))
        assert not torch.equal(first(batch.inputs, batch.positions), fresh(batch.inputs, batch.positions))


def test_final_metrics_match_an_independent_evaluation(tmp_path, tiny_run_config):
    result = train(tiny_run_config, tmp_path / "run", progress=False)
    icl = result.task.eval_sets()["icl"]
    with torch.no_grad():
        acc = (result.model(icl.inputs, icl.positions).argmax(-1) == icl.targets).float().mean().item()
    final = load_run(tmp_path / "run").curve("icl_accuracy")["value"].to_list()[-1]
    assert final == pytest.approx(acc)


def test_same_seed_same_bytes_other_seed_other_metrics(tmp_path, tiny_run_config):
    train(tiny_run_config, tmp_path / "a", progress=False)
    train(tiny_run_config, tmp_path / "b", progress=False)
    other = tiny_run_config.with_overrides({"seed": 4})
    train(other, tmp_path / "c", progress=False)
    a = (tmp_path / "a" / "metrics.parquet").read_bytes()
    assert a == (tmp_path / "b" / "metrics.parquet").read_bytes()
    assert not load_metrics(tmp_path / "a").equals(load_metrics(tmp_path / "c"))


def test_training_reduces_the_loss(tmp_path, tiny_run_config):
    config = tiny_run_config.with_overrides({"train.steps": 60, "train.eval_every": 20, "train.lr": 1e-2})
    train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    train_loss = run.curve("train_loss")["value"].to_list()
    initial = run.curve("label_swap_loss")["value"].to_list()[0]  # ≈ ln L at initialisation
    assert initial == pytest.approx(np.log(8), abs=0.3)
    assert train_loss[-1] < initial - 0.2


def test_failure_is_recorded_and_finished_work_kept(tmp_path, tiny_run_config, monkeypatch):
    calls = {"n": 0}
    original = registry.MEASURES["icl_accuracy"]

    def flaky(model, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("measure exploded at the third evaluation")
        return original.fn(model, data)

    monkeypatch.setitem(registry.MEASURES, "icl_accuracy", dataclasses.replace(original, fn=flaky))
    with pytest.raises(RuntimeError, match="exploded"):
        train(tiny_run_config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.status["state"] == "failed"
    assert "measure exploded" in run.status["error"]
    assert sorted(run.metrics["step"].unique().to_list()) == [0, 4]  # what finished is kept
    assert 0 in run.checkpoint_steps and 5 in run.checkpoint_steps


def test_existing_run_directory_is_not_overwritten(tmp_path, tiny_run_config):
    train(tiny_run_config, tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="--overwrite"):
        train(tiny_run_config, tmp_path / "run", progress=False)
    train(tiny_run_config, tmp_path / "run", progress=False, overwrite=True)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    writer = RunWriter.create(tmp_path / "r", {"task": "test"}, verb="test")
    for step in range(5):
        writer.add_metrics(step, {"x": step * 0.5})
        writer.flush_metrics()
    writer.save_checkpoint(3, {"w": torch.ones(2)})
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".lock", "checkpoints", "config.json", "manifest.json", "metrics.parquet", "status.json"]
    writer.close()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoints", "config.json", "manifest.json", "metrics.parquet", "status.json"]
    assert load_metrics(tmp_path / "r")["value"].to_list() == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="finished"):
        writer.set_status("finished")


def test_summary_records_transitions_and_first_steps(tmp_path, tiny_run_config):
    from icl_lab.train import summarize

    writer = RunWriter.create(tmp_path / "r", {"task": "test"}, verb="test")
    for step in range(0, 1000, 50):
        writer.add_metrics(step, {
            "train_accuracy": 1.0 if step >= 200 else 0.5,
            "test_accuracy": 0.02 if step < 600 else 0.97,
        })
    writer.flush_metrics()
    writer.close()
    config = tiny_run_config.with_overrides({"track": ["test_accuracy"]})
    # the first steps are those of the milestones the task declares (modular: s₁, s₂) ...
    summary = summarize(tmp_path / "r", config, wall_seconds=1.0, milestones=ModularTask.milestones)
    assert summary["first_steps"] == {"train_accuracy>=1": 200, "test_accuracy>=0.95": 600}
    assert [m.key for m in ModularTask.milestones] == ["train_accuracy>=1", "test_accuracy>=0.95"]
    # ... a milestone never reached is left out, and a task without milestones records none
    unreached = (Milestone("test_accuracy", 0.99, "never"), Milestone("train_accuracy", 0.5, "from the start"))
    assert summarize(tmp_path / "r", config, 1.0, milestones=unreached)["first_steps"] == {"train_accuracy>=0.5": 0}
    assert summarize(tmp_path / "r", config, wall_seconds=1.0)["first_steps"] == {}
    assert summary["transitions"]["test_accuracy"]["transition_step"] == 600
    assert all("transition_step" in t for t in summary["transitions"].values())


def test_denser_checkpoints_in_a_window_and_on_a_log_schedule(tmp_path, tiny_run_config):
    """Checkpoints where the circuit forms: every evaluation inside the window, and log-spaced
    steps (3 a decade: 1, 2, 5, 10, 22, 46, ...), on top of the regular cadence."""
    config = tiny_run_config.with_overrides({
        "train.steps": 60, "train.eval_every": 4, "train.checkpoint_every": 25,
        "train.checkpoint_window": [20, 33], "train.checkpoints_per_decade": 3,
    })
    train(config, tmp_path / "run", progress=False)
    regular = {0, 25, 50, 60}
    window = {20, 24, 28, 32}
    log_spaced = {round(10 ** (k / 3)) for k in range(7)} - {100}  # 1, 2, 5, 10, 22, 46 (100 > 60)
    assert load_run(tmp_path / "run").checkpoint_steps == sorted(regular | window | log_spaced)


def test_checkpoint_schedule_is_checked(tiny_run_config):
    with pytest.raises(ConfigError, match="checkpoint_window"):
        tiny_run_config.with_overrides({"train.checkpoint_window": [30, 20]})
    with pytest.raises(ConfigError, match="checkpoints_per_decade"):
        tiny_run_config.with_overrides({"train.checkpoints_per_decade": -1})
