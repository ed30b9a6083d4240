"""The explorer's Altair charts, built from `icl_lab.explore` frames (no Streamlit here).

Conventions a W&B or TensorBoard user expects: a run (or, in mean ± sd mode, a condition) has
one colour in every panel, fixed by an explicit colour domain; several metrics share a panel,
told apart by dash; the hover ruler moves in every panel at once; deltas are drawn on a
diverging scale whose middle is zero.
"""

from __future__ import annotations

import warnings

import altair as alt
import numpy as np
import pandas as pd
import polars as pl

from icl_lab import explore

# Tableau's 20 colours, dark then light of each hue: runs beyond 20 repeat them
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
PANEL_HEIGHT = 230
PANEL_WIDTH = 680  # fixed: Streamlit cannot stretch a concatenated chart, and the legend must stay in view
CELL_PX = 22  # rows and columns of an attention heatmap: enough for every label to be drawn
MAX_TICK_LABELS = 16  # a heatmap axis with more labels than this labels every k-th only (an RFM matrix has 2p)


def colour_scale(domain: list[str]) -> alt.Scale:
    """One fixed colour per name: the same name has the same colour in every chart given this domain."""
    return alt.Scale(domain=list(domain), range=[PALETTE[i % len(PALETTE)] for i in range(len(domain))])


def _x(axis: str, log_x: bool, high: float) -> alt.X:
    if log_x:  # a real log scale with a tick per decade (step 0 is dropped by explore.for_log_axes)
        return alt.X("step:Q", title=f"{axis} (log)", scale=alt.Scale(type="log"),
                     axis=alt.Axis(values=explore.decade_ticks(high), format="~s"))
    return alt.X("step:Q", title=axis, axis=alt.Axis(format="~s", tickMinStep=1))


def _y_title(metrics: list[str]) -> str:
    """`accuracy` for train_accuracy and test_accuracy (one family), else the metrics' names."""
    families = {explore.metric_family(m) for m in metrics}
    (only,) = families if len(families) == 1 else (None,)
    return only[2:] if only and only.startswith("*_") else ", ".join(metrics)


def curve_panels(curves: pl.DataFrame, panels: list[list[str]], *, by: str, domain: list[str], axis: str = "step",
                 log_x: bool = False, log_y: bool = False, rules: pl.DataFrame | None = None,
                 marks: pl.DataFrame | None = None, width: int = PANEL_WIDTH, levels: pl.DataFrame | None = None,
                 colour_title: str | None = None, y_title: str | None = None) -> alt.VConcatChart:
    """One panel per list of metrics, stacked, sharing the x axis and a hover ruler.

    curves: step, metric, value, run, condition (by="run"), or explore.condition_bands's frame
    (by="condition"). rules: run, condition, metric, step, kind of detected transitions and LLC
    stage boundaries (explore.transition_marks), drawn dashed in
    the run's colour and left out of the legend. The legend lists the names drawn; the colours
    come from the whole `domain`, so a name keeps its colour whatever else is shown. marks: step, label rules drawn in every panel
    (grokking's s₁, s₂). levels: metric, value, label horizontal reference rules, each drawn
    in the panels showing its metric (Singh et al.'s ln 2 plateau). colour_title: the
    legend's title (default `by`; a figure that colours by metric names it "measure"). y_title:
    every panel's y title (default: the metrics' family, e.g. "accuracy")."""
    y = "value" if by == "run" else "mean"
    high = float(curves["step"].max()) if curves.height else 10.0
    x = _x(axis, log_x, high)
    present = set(curves[by].unique().to_list()) if curves.height else set(domain)  # once: 1000 runs made this quadratic
    drawn = [name for name in domain if name in present]
    # below the panels, in columns: long run names stay readable and the page never scrolls sideways
    colour = alt.Color(f"{by}:N", scale=colour_scale(domain), title=colour_title or by,
                       legend=alt.Legend(values=drawn, orient="bottom", columns=2, labelLimit=420,
                                         symbolOpacity=1))  # a band's faint fill must not fade the legend
    hover = alt.selection_point(name="hover", fields=["step"], nearest=True, on="pointerover", clear="pointerout", empty=False)
    charts = []
    for metrics in panels:
        data = curves.filter(pl.col("metric").is_in(metrics)).to_pandas()
        base = alt.Chart(data, title=" · ".join(metrics)).encode(x=x)
        # a panel of one metric names it in its title: no dash legend to repeat it
        dash = alt.StrokeDash("metric:N", scale=alt.Scale(domain=metrics), title="metric", legend=None if len(metrics) == 1 else alt.Legend())
        y_scale = alt.Scale(type="log" if log_y else "linear", zero=False)
        tooltip = [by, "metric", alt.Tooltip("step:Q", title=axis), alt.Tooltip(f"{y}:Q", format=".4g")]
        layers = []
        if by == "condition":
            layers.append(base.mark_area(opacity=0.15).encode(y=alt.Y("low:Q", scale=y_scale), y2="high:Q", color=colour, detail="metric:N"))
        line = base.mark_line().encode(y=alt.Y(f"{y}:Q", title=y_title or _y_title(metrics), scale=y_scale), color=colour, strokeDash=dash, detail=f"{by}:N")
        points = base.mark_point(size=30, filled=True).encode(
            y=f"{y}:Q", color=colour, opacity=alt.condition(hover, alt.value(1), alt.value(0)), tooltip=tooltip).add_params(hover)
        ruler = base.mark_rule(color="#888").transform_filter(hover)
        layers += [line, points, ruler]
        if rules is not None and rules.height:
            mine = rules.filter(pl.col("metric").is_in(metrics)).to_pandas()
            if len(mine):
                layers.append(alt.Chart(mine).mark_rule(strokeDash=[4, 4], strokeWidth=1.5).encode(
                    x=x, color=alt.Color(f"{by}:N", scale=colour_scale(domain), legend=None),
                    tooltip=[by, "metric", *(["kind"] if "kind" in mine.columns else []), alt.Tooltip("step:Q", title=axis)]))
        if marks is not None and marks.height:
            frame = marks.to_pandas()
            layers.append(alt.Chart(frame).mark_rule(color="black", strokeDash=[2, 2]).encode(x=x, tooltip=["label", "step"]))
            layers.append(alt.Chart(frame).mark_text(align="left", dx=3, dy=-4, baseline="top").encode(x=x, y=alt.value(0), text="label"))
        if levels is not None and levels.height:
            mine = levels.filter(pl.col("metric").is_in(metrics)).to_pandas()
            if len(mine):
                level = alt.Chart(mine).encode(y=alt.Y("value:Q", scale=y_scale))
                layers.append(level.mark_rule(color="#555", strokeDash=[6, 3]).encode(tooltip=["label", "value"]))
                layers.append(level.mark_text(align="right", dy=-5, color="#555").encode(x=alt.value(width), text="label"))
        charts.append(alt.layer(*layers).properties(height=PANEL_HEIGHT, width=width))
    with warnings.catch_warnings():  # one hover parameter shared by every panel is the point here
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return alt.vconcat(*charts).resolve_scale(color="shared", strokeDash="independent")


def thinned_labels(labels: list[str], most: int) -> list[str]:
    """Every k-th label, k the smallest step leaving at most `most` of them (all when they fit)."""
    step = max(1, -(-len(labels) // most))
    return list(labels[::step])


def heatmap(values: np.ndarray, x_labels, y_labels, title: str, *, x_title: str, y_title: str,
            diverging: bool = False, domain: list[float] | None = None, scheme: str = "blues",
            text: bool = False, highlight_row: int | None = None, mask_diagonal: bool = False,
            details: dict[str, np.ndarray] | None = None, select: str | None = None,
            link: tuple[str, str] | None = None, value_title: str = "value",
            max_labels: int = MAX_TICK_LABELS) -> alt.LayerChart:
    """A labelled heatmap. diverging: a red-blue scale whose middle (white) is 0, symmetric about
    it. text: the value printed in each cell. highlight_row: that row outlined (the query).
    mask_diagonal: diagonal cells left grey (their value stays in the tooltip). details: more
    per-cell values (same shape as `values`) shown in the tooltip. select: the name of a point
    selection of one cell (fields x, y), for `st.altair_chart(on_select=...)`. link: (row word,
    column word), e.g. ("query", "key"): the tooltip says "query <row> → key <column>: value" and
    hovering a cell highlights its row and its column (destination and source, as in CircuitsVis).
    value_title: what a cell holds, for the legend and tooltip ("Δ icl_accuracy"). max_labels:
    an axis with more labels shows every k-th (thinned_labels), so none overprint."""
    x_labels, y_labels = [str(v) for v in x_labels], [str(v) for v in y_labels]
    n_rows, n_cols = values.shape
    frame = pd.DataFrame({
        "x": np.tile(x_labels, n_rows), "y": np.repeat(y_labels, n_cols), "value": values.reshape(-1).astype(float),
        "diagonal": (np.arange(n_rows)[:, None] == np.arange(n_cols)[None, :]).reshape(-1),
    })
    for name, column in (details or {}).items():
        frame[name] = np.asarray(column).reshape(-1)
    if highlight_row is not None:
        frame["outlined"] = frame["y"] == y_labels[highlight_row]
    if diverging:
        scale = alt.Scale(scheme="redblue", domain=domain or explore.delta_domain(values), domainMid=0, clamp=True)
    else:
        scale = alt.Scale(scheme=scheme, domain=domain, clamp=True) if domain else alt.Scale(scheme=scheme)
    x = alt.X("x:N", sort=x_labels, title=x_title, axis=alt.Axis(labelOverlap=False, labelAngle=-45, labelLimit=160,
                                                                 values=thinned_labels(x_labels, max_labels)))
    y = alt.Y("y:N", sort=y_labels, title=y_title, axis=alt.Axis(labelOverlap=False, labelLimit=160, values=thinned_labels(y_labels, max_labels)))
    tooltip = [alt.Tooltip("y:N", title=y_title), alt.Tooltip("x:N", title=x_title), alt.Tooltip("value:Q", title=value_title, format=".4g"),
               *(alt.Tooltip(f"{name}:Q", format=".4g") for name in details or {})]
    if link:
        row_word, column_word = link
        frame["link"] = [f"{row_word} {y} → {column_word} {x}: {v:.3f}" for x, y, v in zip(frame["x"], frame["y"], frame["value"])]
        tooltip.insert(0, alt.Tooltip("link:N", title=f"{row_word} → {column_word}"))
    base = alt.Chart(frame, title=title).encode(x=x, y=y)
    fill = alt.Color("value:Q", scale=scale, title=value_title)
    if mask_diagonal:
        fill = alt.condition("datum.diagonal", alt.value("#d0d0d0"), fill)
    cells = base.mark_rect().encode(color=fill, tooltip=tooltip)
    if select:
        cell = alt.selection_point(name=select, fields=["x", "y"], on="click", empty=False)
        cells = cells.add_params(cell).encode(strokeWidth=alt.condition(cell, alt.value(3), alt.value(0)), stroke=alt.value("black"))
    elif highlight_row is not None:  # drawn by the cells themselves: a layer above them would take the hover
        cells = cells.encode(stroke=alt.value("#e4572e"), strokeWidth=alt.condition("datum.outlined", alt.value(2), alt.value(0)))
    if link:
        hovered_row = alt.selection_point(name="hover_row", fields=["y"], on="pointerover", clear="pointerout")
        hovered_column = alt.selection_point(name="hover_column", fields=["x"], on="pointerover", clear="pointerout")
        cells = cells.add_params(hovered_row, hovered_column).encode(
            opacity=alt.condition(hovered_row | hovered_column, alt.value(1.0), alt.value(0.3)))
    layers = [cells]
    if text:
        reach = max(abs(v) for v in (domain or explore.delta_domain(values)))
        layers.append(base.mark_text(fontSize=11).transform_filter("isValid(datum.value) && isFinite(datum.value)").encode(
            text=alt.Text("value:Q", format=".3f"),
            color=alt.condition(f"abs(datum.value) > {0.6 * reach}", alt.value("white"), alt.value("black"))))
    return alt.layer(*layers)
