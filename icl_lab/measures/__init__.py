"""Measures: a registry of `(model, eval data) -> {name: value}` functions."""

from icl_lab.measures import attention, bursty  # noqa: F401  (registers the measures)
from icl_lab.grokking import measures as _grokking_measures  # noqa: F401
from icl_lab.measures.registry import (
    MEASURES,
    EvalData,
    Measure,
    evaluate,
    measures_for_task,
    register_measure,
    validate_measures,
)

__all__ = [
    "MEASURES",
    "EvalData",
    "Measure",
    "evaluate",
    "measures_for_task",
    "register_measure",
    "validate_measures",
]
