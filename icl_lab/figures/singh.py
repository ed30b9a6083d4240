"""Singh et al. (ICML 2024)'s loss curves: the training loss against training sequences seen,
one curve per condition (mean ± sd over seeds), the ln 2 plateau marked, each condition's
transition (the experiment's table) a dashed rule in its colour.

Their figures plot "# sequences seen" (steps × batch); so does this one. On the bursty task
the experiment's curve is ICL accuracy and its plateau B/N.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.figures.runs import grouped_curves


def singh_figure(groups: dict[str, list[Path]], metric: str, *, batch_size: int, level: float, level_label: str,
                 transitions: dict[str, float | None] | None = None) -> alt.VConcatChart:
    """groups: condition -> its runs (one per seed); metric: the curve drawn (pairs:
    train_loss); level, level_label: the plateau's rule (ln 2); transitions: condition ->
    its transition in sequences (the table's mean), drawn as dashed rules."""
    curves = grouped_curves(groups, [metric]).with_columns(pl.col("step") * batch_size)
    bands = explore.condition_bands(curves)
    rules = pl.DataFrame(
        [{"condition": c, "metric": metric, "step": int(round(s)), "kind": "transition"} for c, s in (transitions or {}).items() if s is not None],
        schema={"condition": pl.String, "metric": pl.String, "step": pl.Int64, "kind": pl.String},
    )
    levels = pl.DataFrame({"metric": [metric], "value": [level], "label": [level_label]})
    axis = f"training sequences seen (steps × batch {batch_size})"
    return charts.curve_panels(bands, [[metric]], by="condition", domain=list(groups), axis=axis, rules=rules, levels=levels,
                               colour_title="condition")
