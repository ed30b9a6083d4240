"""LLC stage boundaries (icl_lab/stages.py) on curves whose critical points are known by
construction: sums of logistic steps in log10(step), with and without noise."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from icl_lab.stages import find_stages, stages_of_run

STEPS = np.unique(np.round(np.logspace(0, 3.5, 40)).astype(int))
X = np.log10(STEPS)


def step_up(centre: float, width: float = 0.08) -> np.ndarray:
    return 1 / (1 + np.exp(-(X - centre) / width))


def kinds(stages) -> list[tuple[str, int]]:
    return [(b.kind, b.step) for b in stages.boundaries]


def test_rise_plateau_rise_has_its_plateau_between_the_rises():
    stages = find_stages(STEPS, 10 * step_up(1.5) + 10 * step_up(2.8))
    middle = [b for b in stages.boundaries if b.kind == "plateau"]
    assert len(middle) == 1
    # the slope's zero between the two rises: halfway in log step, 10^2.15 ≈ 141
    assert 10**1.9 <= middle[0].step <= 10**2.4
    assert middle[0].start_step < middle[0].step < middle[0].end_step
    assert [s["direction"] for s in stages.stages] == ["increasing"] * len(stages.stages)


def test_rise_then_fall_turns_at_a_peak():
    stages = find_stages(STEPS, 10 * step_up(1.5) - 8 * step_up(2.8))
    peaks = [b for b in stages.boundaries if b.kind == "peak"]
    assert len(peaks) == 1 and 10**1.8 <= peaks[0].step <= 10**2.5
    directions = [s["direction"] for s in stages.stages]
    assert "increasing" in directions and directions[-1] == "decreasing"
    assert not [b for b in stages.boundaries if b.kind == "trough"]


def test_one_rise_between_flat_stretches_has_two_boundaries_where_it_starts_and_settles():
    stages = find_stages(STEPS, 5 + 10 * step_up(2.0))
    assert [k for k, _ in kinds(stages)] == ["plateau_end", "plateau_start"]
    start, settle = stages.boundaries
    assert start.step < 100 < settle.step


@pytest.mark.parametrize("seed", range(10))
def test_noise_alone_makes_no_stage(seed):
    rng = np.random.default_rng(seed)
    sd = 1.5
    stages = find_stages(STEPS, 30 + rng.normal(0, sd, len(STEPS)), noise=sd)
    assert stages.boundaries == ()
    assert stages.reason and ("less than the change that counts" in stages.reason or "no turning point" in stages.reason)


@pytest.mark.parametrize("seed", range(5))
def test_a_peak_survives_noise_smaller_than_it(seed):
    rng = np.random.default_rng(seed)
    curve = 10 * step_up(1.5) - 8 * step_up(2.8) + rng.normal(0, 0.5, len(STEPS))
    peaks = [b for b in find_stages(STEPS, curve, noise=0.5).boundaries if b.kind == "peak"]
    assert len(peaks) == 1 and 10**1.7 <= peaks[0].step <= 10**2.6


def test_too_few_estimates_give_a_reason_not_a_boundary():
    stages = find_stages([0, 10, 100, 1000], [1.0, 5.0, 2.0, 8.0])
    assert stages.boundaries == () and "at least 5" in stages.reason


def test_stages_of_run_reads_every_estimate_and_ignores_sds_chains_and_flags():
    rows = []
    for step, value in zip(STEPS, 10 * step_up(1.5) - 8 * step_up(2.8)):
        rows += [(int(step), "llc", float(value)), (int(step), "llc.std", 0.1), (int(step), "llc.chain0", float(value)),
                 (int(step), "llc.L1H0", float(value) / 2), (int(step), "icl_accuracy", 0.5)]
    rows.append((5000, "llc.diverged", 1.0))
    metrics = pl.DataFrame(rows, schema={"step": pl.Int64, "metric": pl.String, "value": pl.Float64}, orient="row")
    stages = stages_of_run(metrics)
    assert sorted(stages) == ["llc", "llc.L1H0"]
    assert [b["kind"] for b in stages["llc"]["boundaries"]].count("peak") == 1
