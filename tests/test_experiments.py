"""Smoke test of the Singh clamp experiment (the full run lives in the CLI / docs)."""

import polars as pl

from icl_lab import load_run
from icl_lab.experiments.singh import CONDITIONS, run_experiment

TINY = {
    "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32,
    "model.d_model": 16, "train.eval_every": 4, "train.checkpoint_every": 0, "device": "cpu",
}


def test_singh_experiment_runs_every_condition_and_resumes(tmp_path):
    table = run_experiment(tmp_path, seeds=[0, 1], steps=8, progress=False, overrides=TINY)
    assert table["condition"].to_list() == list(CONDITIONS)
    assert (tmp_path / "singh_clamps.parquet").exists() and "| induction |" in (tmp_path / "singh_clamps.md").read_text()
    learned = load_run(tmp_path / "learned_head-seed1")
    spec = learned.config["interventions"][0]
    assert spec["target"] == "checkpoint" and spec["checkpoint_run"].endswith("none-seed1")
    assert load_run(tmp_path / "induction-seed0").curve("induction_score.L1H0")["value"].to_list() == [1.0, 1.0, 1.0]
    before = (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns
    again = run_experiment(tmp_path, seeds=[0, 1], steps=8, progress=False, overrides=TINY)
    assert (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns == before  # not redone
    assert again.equals(table)
    assert isinstance(table, pl.DataFrame)
