"""Measures: a registry of `(model, eval data) -> {name: value}` functions."""

from icl_lab.measures import (  # noqa: F401  (registers the measures)
    attention,
    bursty,
    classification,
    geometry,
    golechha,
    htsr,
    information,
    llc,
)
from icl_lab.grokking import measures as _grokking_measures  # noqa: F401
from icl_lab.measures.registry import (
    MEASURES,
    EvalData,
    Measure,
    MEASURE_GROUPS,
    PROGRESS_SUITE,
    evaluate,
    expand_measures,
    measures_for_task,
    register_measure,
    validate_measures,
)

__all__ = [
    "MEASURES",
    "EvalData",
    "Measure",
    "MEASURE_GROUPS",
    "PROGRESS_SUITE",
    "evaluate",
    "expand_measures",
    "measures_for_task",
    "register_measure",
    "validate_measures",
]
