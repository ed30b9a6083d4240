"""The rule benchmarks/compile_equivalence.py judges whole runs by: differences per evaluation
against rtol/atol, and the one-ulp control (eager from weights moved by one ulp) that a
trajectory amplifying rounding is held to instead."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import polars as pl
import pytest

spec = importlib.util.spec_from_file_location("compile_equivalence", Path(__file__).parents[1] / "benchmarks" / "compile_equivalence.py")
ce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ce)


def frame(rows):
    return pl.DataFrame(rows, schema=["step", "metric", "value"], orient="row")


def test_differences_and_the_first_step_out_of_tolerance():
    eager = frame([(0, "loss", 2.0), (0, "acc", 0.5), (50, "loss", 1.0), (50, "acc", 0.9), (100, "loss", 0.5), (100, "acc", math.inf)])
    other = frame([(50, "loss", 1.00005), (0, "acc", 0.5), (0, "loss", 2.0), (50, "acc", 0.9), (100, "loss", 0.6), (100, "acc", 1.0)])
    diffs = ce.differences(eager, other)  # rows matched by (step, metric), whatever their order
    assert diffs[50, "loss"] == pytest.approx(5e-5)
    assert diffs[100, "acc"] == math.inf
    s = ce.summarise(diffs, eager)
    # 5e-5 at step 50 is inside atol 1e-5 + rtol 1e-4 * 1.0; step 100 is the first out
    assert s["first_out"] == 100 and s["max_abs"] == math.inf and s["where"] == "acc@100"
    inside = ce.summarise(ce.differences(eager, eager), eager)
    assert inside["first_out"] is None and inside["max_abs"] == 0.0


def test_different_evaluations_are_refused():
    with pytest.raises(SystemExit, match="different steps"):
        ce.differences(frame([(0, "loss", 1.0)]), frame([(50, "loss", 1.0)]))


def row(first_out, max_abs, control=None, transition=(900, 900), calls=True, control_transition=900, step=(1e-7, 1e-6, 1e-6)):
    r = {"compiled": {"first_out": first_out, "max_abs": max_abs}, "step": {"loss": step[0], "grad": step[1], "control_grad": step[2]}, "transition_eager": {"icl_accuracy": transition[0]},
         "transition_compiled": {"icl_accuracy": transition[1]}, "calls_equal": calls, "eval_every": 50}
    if control is not None:
        r["control"] = {"first_out": control[0], "max_abs": control[1]}
        r["transition_control"] = {"icl_accuracy": control_transition}
    return r


def test_transition_shift():
    assert ce.transition_shift({"a": 900, "b": 100}, {"a": 950, "b": 100}) == 50
    assert ce.transition_shift({"a": 900}, {"a": None}) == math.inf
    assert ce.transition_shift({"a": 900}, {}) == math.inf
    assert ce.transition_shift(None, None) == 0


def test_verdict():
    assert ce.verdict(row(None, 1e-6)) == "yes"
    assert ce.verdict(row(None, 1e-6, transition=(900, 950))) == "no"
    assert ce.verdict(row(None, 1e-6, calls=False)) == "no"
    # out of tolerance with no control, or with a control that stays inside: a real difference
    assert ce.verdict(row(1300, 0.99)) == "no"
    assert ce.verdict(row(1300, 0.99, control=(None, 1e-6))) == "no"
    # the control drifts as much and as early: amplified rounding
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28))).startswith("yes")
    # the transition may move by one evaluation, or as far as the control's moved
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28), transition=(900, 950))).startswith("yes")
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28), transition=(900, 1000))) == "no"
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28), transition=(900, 1000), control_transition=800)).startswith("yes")
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28), calls=False)) == "no"
    # leaving far earlier than the control, or by far more, is not
    assert ce.verdict(row(400, 0.99, control=(1050, 1.28))) == "no"
    assert ce.verdict(row(1300, 7.0, control=(1050, 1.28))) == "no"
    # whatever the whole runs do, one compiled step must equal the eager one to rounding
    assert ce.verdict(row(None, 1e-6, step=(1e-7, 1e-3, 1e-6))) == "no"
    assert ce.verdict(row(1300, 0.99, control=(1050, 1.28), step=(1e-3, 1e-6, 1e-6))) == "no"
    # a gradient that one ulp of the weights moves by 7e-3 (ReLUs at 0) may differ by up to 5x that
    assert ce.verdict(row(None, 1e-6, step=(3e-7, 3.7e-3, 7e-3))) == "yes"
    assert ce.verdict(row(None, 1e-6, step=(3e-7, 4e-2, 7e-3))) == "no"
