"""Prakash & Martin (2025)'s anti-grokking picture: train and test accuracy against training
steps on a log axis (their long runs span decades), and the hidden layers' mean HTSR α below,
one colour per weight decay (mean ± sd over seeds); α = 2 marked (below it: over-fit layers,
their signal of anti-grokking)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.figures.runs import grouped_curves

ALPHA = "alpha_hidden_mean"
ALPHA_TITLE = "HTSR alpha (hidden layers, mean)"  # the panel's y title (the metric's family would read "mean")
PANELS = [["train_accuracy", "test_accuracy"], [ALPHA_TITLE]]
ALPHA_LEVEL = 2.0


def anti_grokking_figure(groups: dict[str, list[Path]]) -> alt.VConcatChart:
    """groups: a condition ("weight decay 0.01") -> its runs, one per seed."""
    curves = grouped_curves(groups, ["train_accuracy", "test_accuracy", ALPHA])
    curves = curves.with_columns(pl.col("metric").replace(ALPHA, ALPHA_TITLE))
    bands, _ = explore.for_log_axes(explore.condition_bands(curves), True, False, "mean")
    levels = pl.DataFrame({"metric": [ALPHA_TITLE], "value": [ALPHA_LEVEL], "label": ["α = 2"]})
    panels = [p for p in PANELS if set(p) & set(bands["metric"].unique().to_list())]
    return charts.curve_panels(bands, panels, by="condition", domain=list(groups), axis="training steps", log_x=True,
                               levels=levels, colour_title="condition")


