"""Transience (Singh et al. 2023; 2025, Fig. 1's layout): the strategy probes' accuracy against
training steps, one panel per condition: ICL accuracy on novel classes, flip accuracy (ICL),
ciwl and iwl accuracy (what replaces it), mean ± sd over seeds, one colour per probe; each
seed's ICL peak and the step where it has lost half its gain drawn as dashed rules."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.figures.runs import grouped_curves, read_runs

PROBES = {  # metric -> the legend's name for it
    "icl_accuracy": "ICL accuracy (novel classes)",
    "flip_accuracy": "flip accuracy (ICL)",
    "ciwl_accuracy": "ciwl accuracy (CIWL or IWL)",
    "iwl_accuracy": "iwl accuracy (IWL)",
}


def panel_of(condition: str) -> str:
    return f"{condition}: the probes' accuracy"


def transience_figure(groups: dict[str, list[Path]]) -> alt.VConcatChart:
    """groups: a condition -> its runs, one per seed."""
    curves = grouped_curves(groups, list(PROBES))
    # one panel per condition, one colour per probe: the panels select on `metric`, the colours on `condition`
    swapped = curves.with_columns(pl.col("condition").map_elements(panel_of, return_dtype=pl.String).alias("metric"),
                                  pl.col("metric").replace_strict(PROBES, return_dtype=pl.String).alias("condition"))
    bands = explore.condition_bands(swapped).with_columns(pl.col("low").clip(0.0, 1.0), pl.col("high").clip(0.0, 1.0))
    rules = []
    for condition, paths in groups.items():
        for info in read_runs(paths):
            if "icl_accuracy" in info.transience:
                peak, half = info.transience["icl_accuracy"]
                rules += [{"run": info.name, "condition": PROBES["icl_accuracy"], "metric": panel_of(condition), "step": s, "kind": kind}
                          for s, kind in ((peak, "ICL peak"), (half, "half the gain lost"))]
    rules_frame = pl.DataFrame(rules, schema={"run": pl.String, "condition": pl.String, "metric": pl.String, "step": pl.Int64, "kind": pl.String})
    return charts.curve_panels(bands, [[panel_of(c)] for c in groups], by="condition", domain=list(PROBES.values()),
                               axis="training steps", rules=rules_frame, colour_title="probe", y_title="accuracy")
