"""Transition detection on synthetic curves, and config round trips."""

import json

import numpy as np
import pytest

from icl_lab import RunConfig, find_transition, get_preset


def logistic(steps, center, width_10_90, lo=0.03, hi=1.0):
    # 10-90% rise of a logistic is 2 ln 9 / k
    k = 2 * np.log(9) / width_10_90
    return lo + (hi - lo) / (1 + np.exp(-k * (steps - center)))


@pytest.mark.parametrize("noise", [0.02, 0.03])
@pytest.mark.parametrize("seed", range(5))
def test_transition_of_a_noisy_logistic(seed, noise):
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 4000, 50)
    y = logistic(steps, 1500, 400) + rng.normal(0, noise, len(steps))
    y[rng.integers(0, 20)] = 0.9  # one wild evaluation before the rise
    t = find_transition(steps, y)
    assert abs(t.transition_step - 1500) <= 100  # two evaluation intervals
    assert 300 <= t.width <= 600
    assert t.y_lo == pytest.approx(0.03, abs=0.06) and t.y_hi == pytest.approx(1.0, abs=0.03)
    assert t.y_lo == pytest.approx(0.03, abs=0.05) and t.y_hi == pytest.approx(1.0, abs=0.05)


def test_early_transition_within_the_first_evaluations():
    steps = np.arange(0, 3000, 50)
    y = logistic(steps, 75, 40)  # up by the second evaluation
    t = find_transition(steps, y)
    assert t.transition_step in (50, 100)
    assert t.y_lo == pytest.approx(0.03, abs=0.02)


def test_rise_without_plateau_starts_from_the_first_evaluation():
    steps = np.arange(0, 3000, 50)
    y = logistic(steps, 120, 100)  # rises over the first few evaluations only
    t = find_transition(steps, y)
    assert t.y_lo == pytest.approx(0.03, abs=0.02)
    assert t.transition_step in (100, 150)


def test_plateau_then_jump_uses_the_plateau():
    steps = np.arange(0, 3000, 50)
    y = np.where(steps < 100, 0.03, 0.5) + logistic(steps, 900, 250, lo=0.0, hi=0.5)
    t = find_transition(steps, y)
    assert t.y_lo == pytest.approx(0.5, abs=0.03)
    assert abs(t.transition_step - 900) <= 50


def test_single_odd_last_evaluation_does_not_hide_the_transition():
    steps = np.arange(0, 3050, 50)
    y = logistic(steps, 1000, 200)
    y[-1] = 0.4  # e.g. a clamp released just before the final evaluation
    t = find_transition(steps, y)
    assert abs(t.transition_step - 1000) <= 50


def test_no_transition_on_a_flat_or_small_curve():
    steps = np.arange(0, 2000, 50)
    rng = np.random.default_rng(0)
    assert find_transition(steps, 0.5 + rng.normal(0, 0.03, len(steps))).transition_step is None
    assert find_transition(steps, logistic(steps, 1000, 200, lo=0.4, hi=0.5)).transition_step is None


def test_falling_curve():
    steps = np.arange(0, 3000, 25)
    loss = 3.0 - logistic(steps, 2000, 200, lo=0.0, hi=2.9)
    t = find_transition(steps, loss, direction="down")
    assert abs(t.transition_step - 2000) <= 50
    assert t.y_lo == pytest.approx(3.0, abs=0.05)


def test_run_config_round_trips_through_json():
    config = get_preset("bursty", "reddy").config.with_overrides({"seed": 7, "task.zipf_alpha": 1.0})
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.task_config.zipf_alpha == 1.0 and again.train.optimizer == "sgd"


def test_overrides_bare_and_dotted_keys():
    config = get_preset("bursty", "small").config
    a = config.with_overrides({"lr": 1e-3, "task.num_classes": 512, "n_heads": 4, "seed": 2})
    assert a.train.lr == 1e-3 and a.task_config.num_classes == 512 and a.model.n_heads == 4 and a.seed == 2
    assert config.train.lr == 3e-3  # frozen: the preset is untouched


def test_from_dict_refuses_unknown_keys():
    from icl_lab.config import ConfigError

    data = get_preset("bursty", "small").config.to_dict()
    data["train"]["learning_rate"] = 1
    with pytest.raises(ConfigError, match="train.learning_rate"):
        RunConfig.from_dict(data)


def test_set_measures_adds_to_the_presets_removes_with_minus_and_replaces_with_minus_star():
    from icl_lab.presets import get_preset
    from icl_lab.config import ConfigError
    from icl_lab.measures import MEASURE_GROUPS

    preset = get_preset("bursty", "small").config
    before = list(preset.measures)
    assert "llc" not in before and "induction_score" in before
    added = preset.with_overrides({"measures": "llc"}).measures
    assert list(added) == before + ["llc"]  # the preset's measures are kept, in order
    grouped = preset.with_overrides({"measures": "progress"}).measures
    assert set(grouped) == set(before) | {m for m in MEASURE_GROUPS["progress"] if m in grouped} and len(grouped) == len(set(grouped))
    assert len(grouped) > len(before)
    removed = preset.with_overrides({"measures": ["-induction_score", "-previous_token_score"]}).measures
    assert list(removed) == [m for m in before if m not in ("induction_score", "previous_token_score")]
    assert preset.with_overrides({"measures": ["-*", "icl_accuracy"]}).measures == ("icl_accuracy",)
    assert preset.with_overrides({"measures": []}).measures == ()
    with pytest.raises(ConfigError, match="cannot remove 'llc'.*measured: icl_accuracy"):
        preset.with_overrides({"measures": "-llc"})
