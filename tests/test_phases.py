"""Phase detection against hand-made curves whose transition (or absence of one) is known.

Steps are evaluation steps: a crossing is reported at the first evaluation at or above its
level, so on a grid of spacing Δ a crossing at step c comes back in [c, c + Δ], and the 10-90%
width of a rise of true width W in [W, W + 2Δ]: those are the tolerances below.
"""

import json
import math

import numpy as np
import pytest
import torch

from icl_lab import find_transition, load_run

CHANCE = 1 / 32  # 1/L for the reference bursty task (L = 32)


def logistic(steps, center, width_10_90, lo=CHANCE, hi=1.0):
    k = 2 * np.log(9) / width_10_90  # a logistic rises from 10% to 90% over 2 ln 9 / k
    return lo + (hi - lo) / (1 + np.exp(-k * (np.asarray(steps) - center)))


STEPS = np.arange(0, 3050, 50)  # evaluation steps of the synthetic curves


def early_rise_then_flat(level, seed, steps=STEPS):
    """A run that never learns ICL: chance at step 0, `level` (±0.02) from step 50 on."""
    rng = np.random.default_rng(seed)
    y = np.clip(level + rng.normal(0, 0.02, len(steps)), 0, 1)
    y[0] = CHANCE
    return steps, y


@pytest.mark.parametrize("level", [0.2, 0.25, 0.5])
@pytest.mark.parametrize("seed", range(3))
def test_an_early_rise_to_the_random_context_label_level_is_no_transition(level, seed):
    # 1/N-like levels (N = 8: 0.125-0.25) and the reference task's B/N = 4/8 = 0.5
    steps, y = early_rise_then_flat(level, seed)
    t = find_transition(steps, y)
    assert t.transition_step is None and t.width is None and t.start_step is None
    assert t.y_hi == pytest.approx(level, abs=0.03)
    assert t.reason
    if level == 0.5:  # big enough for min_rise: the ceiling rule is what rejects it
        assert t.y_lo == pytest.approx(CHANCE, abs=1e-9)
        assert "min_closed" in t.reason


def test_without_a_ceiling_the_same_rise_counts():
    steps, y = early_rise_then_flat(0.5, seed=0)
    t = find_transition(steps, y, ceiling=None)
    assert t.transition_step == 50 and t.y_lo == pytest.approx(CHANCE) and t.reason is None


@pytest.mark.parametrize("seed", range(3))
def test_width_is_the_rise_not_back_to_a_dip_in_the_plateau(seed):
    # creep from chance to 0.25 by step 300, a dip to 0.08 at 800-850, a linear rise 1000 -> 1300
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 3050, 50)
    y = np.interp(steps, [0, 300, 1000, 1300], [CHANCE, 0.25, 0.25, 1.0])
    y[steps < 1000] += rng.normal(0, 0.01, (steps < 1000).sum())
    y[(steps == 800) | (steps == 850)] = 0.08
    t = find_transition(steps, y)
    # 10% of the rise is reached at 1030 (last evaluation at or below: 1000), 90% at 1270
    # (first at or above: 1300), the midpoint at 1150
    assert (t.start_step, t.end_step, t.width) == (1000, 1300, 300)
    assert t.transition_step in (1150, 1200)
    assert t.y_lo == pytest.approx(0.25, abs=0.02) and t.y_hi == pytest.approx(1.0)


@pytest.mark.parametrize("spacing", [10, 50])
def test_clean_sigmoid_midpoint_and_width(spacing):
    steps = np.arange(0, 4000, spacing)
    t = find_transition(steps, logistic(steps, 1500, 400))
    assert 1500 <= t.transition_step <= 1500 + spacing
    assert 400 <= t.width <= 400 + 2 * spacing
    # the plateau estimate includes the logistic's long tail (y_lo ≈ 0.044, not 1/32), which
    # shifts the 10% and 90% levels by a little: each within one interval of the exact crossing
    assert abs(t.start_step - 1300) <= spacing and abs(t.end_step - 1700) <= spacing
    assert t.y_lo == pytest.approx(CHANCE, abs=0.02) and t.y_hi == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("ceiling", ["auto", 0.0])
def test_falling_loss_from_ln2_to_zero(ceiling):
    # Singh et al.: the loss sits at ln 2 (one of two context labels), then drops to ~0
    steps = np.arange(0, 4000, 25)
    rng = np.random.default_rng(0)
    loss = math.log(2) - logistic(steps, 2000, 200, lo=0.0, hi=math.log(2) - 0.01)
    loss = loss + rng.normal(0, 0.01, len(steps))
    t = find_transition(steps, loss, direction="down", ceiling=ceiling)
    assert abs(t.transition_step - 2000) <= 50
    assert 200 <= t.width <= 300
    assert t.y_lo == pytest.approx(math.log(2), abs=0.02) and t.y_hi == pytest.approx(0.01, abs=0.02)


def test_falling_loss_two_drops_reports_the_last():
    # ln L -> ln 2 in the first 200 steps (chance to random context label), ln 2 -> 0 at 2000
    steps = np.arange(0, 4000, 25)
    loss = np.interp(steps, [0, 200], [math.log(32), math.log(2)])
    loss = loss - logistic(steps, 2000, 200, lo=0.0, hi=math.log(2) - 0.01)
    t = find_transition(steps, loss, direction="down", ceiling=0.0)
    assert abs(t.transition_step - 2000) <= 25
    assert t.y_lo == pytest.approx(math.log(2), abs=0.02) and t.start_step >= 1800


@pytest.mark.parametrize("seed", range(3))
def test_creep_then_jump_reports_the_jump(seed):
    # Reddy's two stages: chance -> B/N = 0.5 over the first 400 steps, then the jump at 1500
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 3050, 50)
    creep = np.interp(steps, [0, 400], [CHANCE, 0.5])
    y = creep + logistic(steps, 1500, 300, lo=0.0, hi=0.48) + rng.normal(0, 0.015, len(steps))
    t = find_transition(steps, y)
    assert abs(t.transition_step - 1500) <= 100
    assert t.start_step >= 1250 and 250 <= t.width <= 500
    assert t.y_lo == pytest.approx(0.5, abs=0.03)


def test_grokking_test_accuracy():
    # test accuracy at ~1/p (p = 97) long after memorisation, then the rise to 1
    rng = np.random.default_rng(1)
    steps = np.arange(0, 20_000, 100)
    y = np.clip(logistic(steps, 9000, 1500, lo=1 / 97) + rng.normal(0, 0.01, len(steps)), 0, 1)
    t = find_transition(steps, y)
    assert abs(t.transition_step - 9000) <= 200 and 1400 <= t.width <= 1900


def test_rfm_test_accuracy_curve():
    # 30 RFM iterations: 0 until iteration 10, then 0.17, 0.54, 0.80, 0.92, 0.97, 0.99, 1.0, ...
    values = [0.0] * 11 + [0.17, 0.54, 0.80, 0.92, 0.97, 0.99] + [1.0] * 13
    t = find_transition(range(30), values)
    # midpoint 0.5: first reached at 12; 10%: last at or below at 10; 90%: first at 14
    assert (t.transition_step, t.start_step, t.end_step, t.width) == (12, 10, 14, 4)
    assert (t.y_lo, t.y_hi) == (0.0, 1.0) and t.reason is None


def test_a_later_dip_inside_the_final_level_does_not_move_the_transition():
    steps = np.arange(0, 3050, 50)
    y = logistic(steps, 1000, 200)
    y[(steps >= 2000) & (steps < 2150)] = 0.6  # three evaluations
    t = find_transition(steps, y)
    assert 1000 <= t.transition_step <= 1050 and t.end_step <= 1150


def test_a_short_spike_in_the_plateau_is_not_the_transition():
    steps = np.arange(0, 3050, 50)
    y = np.where(steps < 100, CHANCE, 0.5) + logistic(steps, 2000, 200, lo=0.0, hi=0.48)
    y[(steps == 500) | (steps == 550)] = 0.95  # survives a 3-point median
    t = find_transition(steps, y)
    assert 2000 <= t.transition_step <= 2050 and t.start_step >= 1850


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="direction.*'sideways'"):
        find_transition([0, 1], [0, 1], direction="sideways")
    with pytest.raises(ValueError, match="ceiling.*'top'"):
        find_transition([0, 1], [0, 1], ceiling="top")
    with pytest.raises(ValueError, match="min_closed.*1.5"):
        find_transition([0, 1], [0, 1], min_closed=1.5)


# ICL accuracy of a real bursty/small run (K = 2048, L = 32, N = 8, B = 4; the README example),
# every 50 steps to step 1900: chance, the B/N = 0.5 plateau by step 100, the jump at 700-900
REAL_ICL_ACCURACY = [
    0.0312, 0.3779, 0.498, 0.5029, 0.4785, 0.4932, 0.5078, 0.499, 0.5127, 0.5059, 0.5166, 0.499, 0.5459,
    0.5293, 0.6621, 0.7783, 0.8887, 0.9209, 0.9824, 0.9932, 0.999, 0.9941, 0.9941, 0.998, 0.998, 0.9941,
    0.9961, 0.9902, 0.9922, 0.9922, 0.9951, 0.9951, 0.9971, 0.9961, 0.9951, 0.998, 0.9883, 0.9844, 0.9795,
]


def test_real_reference_curve():
    steps = np.arange(0, 1950, 50)
    t = find_transition(steps, REAL_ICL_ACCURACY)
    # by hand: plateau ≈ 0.5, final ≈ 0.99; midpoint ≈ 0.745 first reached at 750 (0.778), 10%
    # (≈ 0.549) last at or below at 650 (0.529), 90% (≈ 0.94) first reached at 900 (0.982)
    assert (t.start_step, t.transition_step, t.end_step, t.width) == (650, 750, 900, 250)
    assert t.y_lo == pytest.approx(0.5, abs=0.02) and t.y_hi == pytest.approx(0.99, abs=0.01)
    # the same run stopped on its plateau (step 650) has no transition yet
    stopped = find_transition(steps[:14], REAL_ICL_ACCURACY[:14])
    assert stopped.transition_step is None and stopped.y_lo == pytest.approx(CHANCE, abs=1e-3)


@pytest.fixture
def one_thread():
    # the matrices are tiny: on a loaded 2-core machine a second thread makes this run 6x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_run_that_never_learns_icl_has_no_transition(tmp_path, tiny_run_config, one_thread):
    """A real tiny run whose ICL accuracy rises from chance (1/L = 1/8) to the random
    context-label level B/N = 2/4 and stays there: the old detector called that a transition."""
    from icl_lab.train import train

    config = tiny_run_config.with_overrides({
        "task.num_classes": 256, "task.eval_size": 256, "train.steps": 200, "train.eval_every": 20,
        "train.checkpoint_every": 200, "train.lr": 1e-2, "measures": ["-*", "icl_accuracy", "context_label_accuracy"],
    })
    result = train(config, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["transitions"] == result.summary["transitions"]
    run = load_run(tmp_path / "run")
    icl = run.curve("icl_accuracy")["value"].to_numpy()
    context_label = run.curve("context_label_accuracy")["value"].to_numpy()
    # independent check that the run sits at the random-context-label level: it always answers
    # with a context label, right about half the time (2 distinct labels in a context)
    assert context_label[-3:].min() >= 0.9
    assert abs(icl[-3:].mean() - 0.5) <= 0.08
    assert icl.max() - icl[0] >= 0.3  # a real rise, bigger than the old min_rise of 0.2
    found = summary["transitions"]["icl_accuracy"]
    assert found["transition_step"] is None and found["width"] is None
    assert found["y_hi"] == pytest.approx(0.5, abs=0.08) and "min_closed" in found["reason"]


def pairs_curves(drop_at, steps=STEPS):
    """Shaped like the pairs runs (15 labels): the training loss falls from ln 15 to ln 2, sits
    there, and drops to ~0 around `drop_at` (None: never); held-out-pair accuracy creeps from
    chance 1/15 to 1/2, then rises to ~0.85 with the drop."""
    early = np.exp(-steps / 150)
    drop = np.zeros_like(steps, dtype=float) if drop_at is None else 1 / (1 + np.exp(-(steps - drop_at) / 60))
    loss = (math.log(15) * early + math.log(2) * (1 - early)) * (1 - drop) + 0.01
    acc = (1 / 15 * early + 0.5 * (1 - early)) * (1 - drop) + 0.85 * drop
    return steps, loss, acc


def test_pairs_summary_reads_the_drop_from_ln2_and_the_rise_from_one_half(tmp_path):
    """summary.json of a pairs run reads each tracked metric with the task's Reading: the loss's
    drop from ln 2 (not the early fall from ln 15) and accuracy's rise from 1/2 (not the creep
    from chance), each with its width measured on that rise; a run that stays on the plateau
    has neither."""
    from icl_lab.presets import get_preset
    from icl_lab.store import metrics_frame
    from icl_lab.tasks.pairs import PairsTask
    from icl_lab.train import summarize

    config = get_preset("pairs", "cpu").config
    assert config.track == ("train_loss", "icl_accuracy")
    for drop_at in (1200, None):
        steps, loss, acc = pairs_curves(drop_at)
        run = tmp_path / str(drop_at)
        run.mkdir()
        rows = [(int(s), "train_loss", float(v)) for s, v in zip(steps[1:], loss[1:])]
        rows += [(int(s), "icl_accuracy", float(v)) for s, v in zip(steps, acc)]
        metrics_frame(rows).write_parquet(run / "metrics.parquet")
        found = summarize(run, config, 1.0, PairsTask.transition_readings)["transitions"]
        if drop_at is None:
            assert found["train_loss"]["transition_step"] is None and found["icl_accuracy"]["transition_step"] is None
            continue
        for name in ("train_loss", "icl_accuracy"):
            t = found[name]
            assert abs(t["transition_step"] - 1200) <= 50, (name, t)
            assert 1000 <= t["start_step"] < 1200 < t["end_step"] <= 1400 and t["width"] <= 400, (name, t)
        assert found["train_loss"]["y_lo"] == pytest.approx(math.log(2)) and found["icl_accuracy"]["y_lo"] == pytest.approx(0.5, abs=0.01)
        assert found["train_loss"]["transition_sequences"] == found["train_loss"]["transition_step"] * config.train.batch_size


def test_reading_clips_only_the_plateaus_far_side():
    from icl_lab.phases import Reading

    down, up = Reading("down", ceiling=0.0, plateau=math.log(2)), Reading("up", ceiling=None, plateau=0.5)
    assert down.clip([2.7, 0.9, 0.69, 0.1]).tolist() == pytest.approx([math.log(2), math.log(2), 0.69, 0.1])
    assert up.clip([0.07, 0.3, 0.6]).tolist() == pytest.approx([0.5, 0.5, 0.6])
    assert Reading().clip([0.1, 0.9]).tolist() == [0.1, 0.9]


# -- transience: a rise followed by a lasting fall ------------------------------------------------

def _sigmoid(s, at, width):
    return 1 / (1 + np.exp(-(s - at) / width))


@pytest.mark.parametrize("seed", range(6))
def test_transience_finds_the_peak_and_the_half_loss_step_of_a_rise_and_fall(seed):
    from icl_lab.phases import find_transience

    rng = np.random.default_rng(seed)
    steps = np.arange(0, 20_000, 100)
    rise_at, fall_at = rng.uniform(2000, 5000), rng.uniform(9000, 14000)
    gain, kept = rng.uniform(0.4, 0.9), rng.uniform(0.0, 0.3)  # the fall leaves `kept` of the gain
    clean = 0.1 + gain * _sigmoid(steps, rise_at, 200) - gain * (1 - kept) * _sigmoid(steps, fall_at, 500)
    found = find_transience(steps, clean + rng.normal(0, 0.02, len(steps)))
    assert found.transient, found.reason
    assert rise_at <= found.peak_step <= fall_at  # on the plateau between the rise and the fall
    assert found.peak_value == pytest.approx(0.1 + gain, abs=0.05)
    assert found.final_value == pytest.approx(0.1 + gain * kept, abs=0.05)
    # independent: the clean curve first drops below peak - gain/2 where its fall sigmoid reaches
    # 1 / (2 (1 - kept)), i.e. at fall_at + 500 ln(p / (1 - p)) with p that fraction
    p = 1 / (2 * (1 - kept))
    expected = fall_at + 500 * np.log(p / (1 - p))
    assert abs(found.half_step - expected) <= 600, (found.half_step, expected)


@pytest.mark.parametrize("seed", range(6))
def test_no_transience_on_a_rise_that_stays_on_a_plateau_or_on_noise(seed):
    from icl_lab.phases import find_transience

    rng = np.random.default_rng(100 + seed)
    steps = np.arange(0, 20_000, 100)
    rise = 0.1 + 0.8 * _sigmoid(steps, rng.uniform(2000, 12000), 300)
    for label, curve, sd in (("rise and noise", rise, 0.05), ("plateau only", np.full(len(steps), 0.5), 0.05),
                             ("noise only", np.full(len(steps), rng.uniform(0.1, 0.9)), 0.1)):
        found = find_transience(steps, np.clip(curve + rng.normal(0, sd, len(steps)), 0, 1))
        assert not found.transient, (label, found)
        assert found.half_step is None and found.reason


def test_transience_ignores_a_dip_that_recovers_and_reads_a_loss_downwards():
    from icl_lab.phases import find_transience

    steps = np.arange(0, 10_000, 50)
    dip = 0.1 + 0.8 * _sigmoid(steps, 2000, 100) - 0.6 * (np.abs(steps - 6000) < 800)
    assert not find_transience(steps, dip).transient  # back at its peak by the end
    loss = 2.0 - 1.5 * _sigmoid(steps, 2000, 100) + 1.2 * _sigmoid(steps, 6000, 300)  # falls, then climbs back
    found = find_transience(steps, loss, direction="down")
    assert found.transient and found.peak_value == pytest.approx(0.5, abs=0.02) and found.final_value == pytest.approx(1.7, abs=0.02)
    assert 5500 <= found.half_step <= 6500
    assert "too few" in find_transience([0, 1], [0.0, 1.0]).reason
