"""The transience experiment on tiny settings: every condition runs, the held clamp starts at
the unclamped run's ICL peak on its strongest layer-1 induction head, and the table is what
the runs' own curves say."""

import numpy as np
import polars as pl
import pytest

from icl_lab import find_transience, load_run
from icl_lab.config import ConfigError
from icl_lab.experiments import transience

TINY = {
    "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32,
    "model.d_model": 16, "train.eval_every": 4, "train.checkpoint_every": 0, "device": "cpu",
}


@pytest.mark.slow
def test_transience_runs_every_condition_and_tabulates_the_runs_curves(tmp_path):
    table = transience.run_experiment(tmp_path, seeds=[0, 1], conditions=["hold_induction"], steps=24, progress=False, overrides=TINY)
    assert table["condition"].to_list() == ["none", "hold_induction"]  # the unclamped runs come with it
    assert (tmp_path / "transience.parquet").exists() and "| hold_induction |" in (tmp_path / "transience.md").read_text()
    assert (tmp_path / "transience.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "transience.svg").read_text()
    assert "training steps" in svg and "hold_induction: the probes' accuracy" in svg and "flip accuracy (ICL)" in svg
    for seed in (0, 1):
        none = load_run(tmp_path / f"none-seed{seed}")
        curve = none.curve("icl_accuracy")
        values = curve["value"].to_numpy()
        # independent: the first evaluation 90% of the way from the first value to the first quarter's highest
        quarter = values[: max(2, len(values) // 4)]
        peak = next(int(s) for s, v in zip(curve["step"], values) if v >= values[0] + 0.9 * (quarter.max() - values[0]))
        (spec,) = load_run(tmp_path / f"hold_induction-seed{seed}").config.interventions
        assert spec.steps == (peak, -1) and spec.target == "induction" and spec.hook == "blocks.1.attn.hook_pattern"
        at = none.metrics.filter(pl.col("metric").str.starts_with("induction_score.L1H") & (pl.col("step") == peak))
        assert spec.heads == (int(at.sort("value", descending=True)["metric"][0][-1]),)
    row = table.filter(pl.col("condition") == "none").row(0, named=True)
    finals = [load_run(tmp_path / f"none-seed{s}").summary["final"] for s in (0, 1)]
    for metric in transience.STRATEGY_METRICS:
        assert row[f"{metric}_mean"] == pytest.approx(np.mean([f[metric] for f in finals]))
        assert row[f"{metric}_sd"] == pytest.approx(np.std([f[metric] for f in finals], ddof=1))
    peaks = [find_transience(load_run(tmp_path / f"none-seed{s}").curve("icl_accuracy")["step"], load_run(tmp_path / f"none-seed{s}").curve("icl_accuracy")["value"]).peak_value for s in (0, 1)]
    assert row["peak_icl_mean"] == pytest.approx(np.mean(peaks))
    flips = [load_run(tmp_path / f"none-seed{s}").curve("flip_accuracy") for s in (0, 1)]
    assert row["peak_flip_mean"] == pytest.approx(np.mean([f["value"].max() for f in flips]))
    first_best = [f.filter(f["value"] == f["value"].max())["step"].min() for f in flips]
    assert row["peak_flip_step_mean"] == pytest.approx(np.mean(first_best))


def test_each_condition_changes_only_what_it_names():
    configs = transience.plan("bursty/transience", None, 100, None)
    assert list(configs) == list(transience.CONDITIONS)
    base = configs["none"]
    assert set(transience.STRATEGY_METRICS) <= set(base.measures) and base.train.steps == 100
    assert configs["weight_decay"].train.weight_decay == transience.WEIGHT_DECAY and base.train.weight_decay == 0
    assert configs["weight_decay"].train.optimizer == "adam"  # coupled: L2 in the gradient
    assert configs["decoupled_decay"].train.optimizer == "adamw"  # decoupled: θ ← θ − lr·λ·θ
    assert configs["decoupled_decay"].train.weight_decay == transience.DECOUPLED_WEIGHT_DECAY
    assert configs["match_exemplars"].task_config.match_exemplars and not base.task_config.match_exemplars
    for name, config in configs.items():
        assert config.model == base.model and config.interventions == ()
        assert config.task_config.num_classes == 256 and config.task_config.burstiness == 4, name


def test_strategy_on_top_reads_the_probes():
    assert transience.strategy_on_top({"flip_accuracy": 0.9, "iwl_accuracy": 0.0, "ciwl_accuracy": 0.2}) == "ICL"
    assert transience.strategy_on_top({"flip_accuracy": 0.05, "iwl_accuracy": 0.05, "ciwl_accuracy": 0.9}) == "CIWL"
    assert transience.strategy_on_top({"flip_accuracy": 0.0, "iwl_accuracy": 0.95, "ciwl_accuracy": 1.0}) == "IWL"


def test_transience_refuses_bad_input_before_training(tmp_path):
    with pytest.raises(ConfigError, match="unknown condition 'wd'.*Valid conditions: none, weight_decay"):
        transience.run_experiment(tmp_path, seeds=[0], conditions=["wd"], progress=False)
    with pytest.raises(ConfigError, match="bursty or pairs preset"):
        transience.run_experiment(tmp_path, seeds=[0], preset="modular/cpu", progress=False)
    with pytest.raises(ConfigError, match="--hold-from 500 is not before the runs' last step 100"):
        transience.run_experiment(tmp_path, seeds=[0], steps=100, hold_from=500, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_hold_starts_where_the_first_rise_ends_not_at_a_late_maximum():
    steps = np.arange(0, 4000, 100)
    # rises by step 300 to 0.5, falls to 0.4, then rises again late to 0.6 (a bimodal run)
    values = np.concatenate([[0.03, 0.2, 0.4, 0.5, 0.49], np.full(25, 0.4), np.linspace(0.4, 0.6, 10)])
    assert transience.first_rise_end(steps, values) == 300  # 0.03 + 0.9 (0.5 − 0.03) = 0.453
    assert transience.first_rise_end(steps, np.full(40, 0.1)) == 0  # no rise: from the start


@pytest.mark.slow
def test_runs_extended_with_resume_steps_are_tabulated_without_training_again(tmp_path):
    from icl_lab.train import extend

    transience.run_experiment(tmp_path, seeds=[0], conditions=["hold_induction"], steps=16, progress=False, overrides=TINY)
    runs = [tmp_path / "none-seed0", tmp_path / "hold_induction-seed0"]
    for run_dir in runs:  # `icl-lab resume RUN --steps 24`, run by run
        extend(run_dir, 24, progress=False)
    written = {run_dir: (run_dir / "metrics.parquet").stat().st_mtime_ns for run_dir in runs}
    table = transience.run_experiment(tmp_path, seeds=[0], conditions=["hold_induction"], steps=24, progress=False, overrides=TINY)
    assert {run_dir: (run_dir / "metrics.parquet").stat().st_mtime_ns for run_dir in runs} == written  # kept, not retrained
    for condition, run_dir in zip(("none", "hold_induction"), runs):
        run = load_run(run_dir)
        assert run.metrics["step"].max() == 24
        row = table.filter(pl.col("condition") == condition).row(0, named=True)
        assert row["iwl_accuracy_mean"] == pytest.approx(run.summary["final"]["iwl_accuracy"])
    (spec,) = load_run(runs[1]).config.interventions
    assert spec.steps[1] == -1  # the held clamp went on to the new end
