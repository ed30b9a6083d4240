"""Reddy (ICLR 2024)'s phase diagram: final ICL and IWL accuracy as two heatmaps over the
number of classes K (rows) and the burstiness B (columns), mean over seeds, printed in each cell."""

from __future__ import annotations

import altair as alt
import numpy as np
import polars as pl

from icl_lab.explore import charts

PANELS = (("icl_accuracy_mean", "ICL accuracy (novel classes)"), ("iwl_accuracy_mean", "IWL accuracy (trained classes)"))


def reddy_figure(table: pl.DataFrame) -> alt.HConcatChart:
    """table: the reddy-phases table (K, B, icl_accuracy_mean, iwl_accuracy_mean, ...); a cell
    the grid lacks is left empty. Both panels share the colour scale 0 to 1."""
    classes, bursts = sorted(set(table["K"].to_list())), sorted(set(table["B"].to_list()))
    panels = []
    for column, title in PANELS:
        values = np.full((len(classes), len(bursts)), np.nan)
        for row in table.iter_rows(named=True):
            values[classes.index(row["K"]), bursts.index(row["B"])] = row[column]
        chart = charts.heatmap(values, bursts, classes, f"final {title}", x_title="burstiness B", y_title="classes K",
                               domain=[0.0, 1.0], scheme="blues", text=True, value_title="accuracy (mean over seeds)")
        panels.append(chart.properties(width=60 * len(bursts) + 40, height=36 * len(classes)))
    return alt.hconcat(*panels).resolve_scale(color="shared")
