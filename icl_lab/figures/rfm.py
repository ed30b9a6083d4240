"""Mallinar et al. (2024)'s RFM progress: train and test accuracy against RFM iteration, and
below it the AGOP's circulant deviation (0: the feature matrix's operand block is exactly
circulant) with the AGOP alignment to the final feature matrix. One run: a colour per
measure; several (train fractions): a colour per run, measures told apart by dash."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.figures.runs import by_metric, grouped_curves, unit

PANELS = [["train_accuracy", "test_accuracy"], ["circulant_deviation", "agop_alignment"]]


def rfm_figure(groups: dict[str, list[Path]]) -> alt.VConcatChart:
    """groups: a label -> its RFM run (e.g. "train fraction 0.5" -> [run]); one run per label."""
    metrics = [m for p in PANELS for m in p]
    curves = grouped_curves(groups, metrics).with_columns(pl.col("condition").alias("run"))
    axis = unit(explore.declarations_of({"kind": "rfm"}).x_axis)
    if len(groups) == 1:
        return charts.curve_panels(by_metric(curves), PANELS, by="run", domain=metrics, axis=axis, colour_title="measure")
    return charts.curve_panels(curves, PANELS, by="run", domain=list(groups), axis=axis, colour_title="run")


