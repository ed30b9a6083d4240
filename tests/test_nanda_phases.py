"""`icl-lab experiment nanda-phases`: the phase boundaries read from the progress measures."""

from __future__ import annotations

import math

import polars as pl
import pytest

from icl_lab.experiments import nanda


def curves(steps, **columns) -> pl.DataFrame:
    return pl.DataFrame({"step": steps, **columns})


def test_phases_read_each_boundary_where_the_curves_cross_it():
    steps = list(range(0, 4001, 100))
    n = len(steps)

    def ramp(at, before, after):
        return [before if s < at else after for s in steps]

    wide = curves(
        steps,
        train_accuracy=ramp(300, 0.5, 1.0),
        test_accuracy=ramp(2000, 0.05, 0.99),
        test_loss=[20 - abs(s - 800) / 100 if s < 1900 else 0.5 for s in steps],  # peaks at 800
        restricted_loss=[4.0 if s < 300 else 4.0 * math.exp(-(s - 300) / 200) for s in steps],
        excluded_loss=[1.0] * n,
        # weight norm: flat, a steep fall from 2000 to 2500, then flat again
        weight_norm=[100.0 if s < 2000 else max(50.0, 100.0 - (s - 2000) / 10) for s in steps],
        gini_embedding=[0.1] * n, gini_neuron_logit=[0.2] * n, key_frequency_count=[5.0] * n,
    )
    p = nanda.phases(wide)
    assert p["memorised_step"] == 300
    assert p["test_loss_peak_step"] == 800
    # 4 e^{-(s-300)/200} < 2 first at s - 300 > 200 ln 2 = 138.6: the evaluation at 500
    assert p["restricted_fall_step"] == 500
    # < 0.01 first at s - 300 > 200 ln 400 = 1198: the evaluation at 1500
    assert p["circuit_formed_step"] == 1500
    assert p["generalised_step"] == 2000 and p["test_loss_below_1_step"] == 1900
    # relative drop over the next 1000 steps, d(t) = (w(t) - w(t + 1000)) / w(t): 0.5 from 1500 to
    # 2000 (the first is the peak), then 0.44, 0.375, 0.29, 0.17 at 2100..2400 and 0 at 2500,
    # the first below a quarter of the peak: the fall is over there
    assert p["cleanup_end_step"] == nanda.cleanup_end(steps, wide["weight_norm"].to_list(), 2000) == 2500


def test_cleanup_end_is_none_while_the_norm_still_falls():
    steps = list(range(0, 5001, 100))
    falling = [1000.0 * 0.999 ** s for s in steps]  # a steady relative fall: never levels off
    assert nanda.cleanup_end(steps, falling, 1000) is None
    assert nanda.cleanup_end(steps, falling, None) is None


@pytest.mark.slow
def test_the_experiment_trains_tabulates_and_keeps_its_runs(tmp_path):
    overrides = {"task.p": 23, "device": "cpu", "train.eval_every": 10, "train.checkpoint_every": 20}
    table = nanda.run_experiment(tmp_path, [0], steps=40, progress=False, overrides=overrides)
    assert table["seed"].to_list() == [0] and (tmp_path / "nanda_phases.parquet").exists()
    assert (tmp_path / "nanda_phases.png").stat().st_size > 10_000 and (tmp_path / "nanda_phases.svg").exists()
    text = nanda.markdown(table)
    for label, _, _ in nanda.ROWS:
        assert label in text
    assert "key frequencies (final)" in text and "paper (epochs)" in text
    again = nanda.run_experiment(tmp_path, [0], steps=40, progress=False, overrides=overrides)  # kept, not retrained
    assert again.drop("wall_minutes").equals(table.drop("wall_minutes"))
