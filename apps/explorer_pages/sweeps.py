"""Sweeps: a sweep's members by status and its phase diagrams (a final metric's mean over seeds
on two swept axes); a clicked cell's runs go to the comparison."""

from __future__ import annotations

from pathlib import Path

import altair as alt
from icl_lab.explore import charts
import polars as pl
import streamlit as st

from icl_lab.explore import tables

from .context import PageContext
from .widgets import compare, download, keep_choice, keep_valid, pick_table

NO_Y_AXIS = "(none: one row)"


def draw(ctx: PageContext) -> None:
    st.header("Sweeps")
    picked = pick_table(ctx.root, tables.SWEEP_TABLE, "sweep", "sweep", tables.read_sweep_table,
                        f"Run one with `icl-lab sweep SPEC.toml --out {ctx.root}/NAME`.")
    if picked is None:
        return
    folder, table = picked
    counts = dict(table.group_by("status").len().iter_rows())
    for col, state in zip(st.columns(len(tables.MEMBER_STATES)), tables.MEMBER_STATES):
        col.metric(state, counts.get(state, 0))
    for run, error in tables.failed_members(table):
        st.warning(f"{run} failed: {error}")
    axes, metrics = tables.sweep_axes(table), tables.sweep_metrics(table)
    if not axes or not metrics:
        st.info("Nothing to draw yet: " + ("the sweep has no axes." if not axes else "no member has finished (no final.* or transition.* column)."))
        return
    swept = [a for a in axes if a != "seed"] or axes
    c1, c2, c3 = st.columns([1, 1, 2])
    keep_choice("sweep-x", axes, swept[0])
    x_axis = c1.selectbox("x axis", axes, key="sweep-x")
    y_options = [a for a in axes if a != x_axis] + [NO_Y_AXIS]
    keep_choice("sweep-y", y_options, next((a for a in swept if a != x_axis), NO_Y_AXIS))
    y_axis = c2.selectbox("y axis", y_options, key="sweep-y")
    y_axis = None if y_axis == NO_Y_AXIS else y_axis
    keep_valid("sweep-metrics", metrics, [m for m in ("final.icl_accuracy", "final.iwl_accuracy") if m in metrics] or metrics[:1])
    shown = c3.multiselect("values to colour by (one heatmap each): final metrics, transition steps, …", metrics,
                           key="sweep-metrics", format_func=tables.value_title)
    cells, clicked = _phase_diagrams(table, shown, axes, x_axis, y_axis)
    if cells is None:
        st.info("Choose a value to draw.")
        return
    st.caption("Each cell: the mean over the members that finished (seeds and sd in the tooltip). "
               "Click a cell to compare its runs, or pick it below.")
    _cell_members(ctx, folder, table, cells, clicked, shown, x_axis, y_axis)
    download(table, "sweep", "sweep")


def _phase_diagrams(table: pl.DataFrame, metrics: list[str], axes: list[str], x_axis: str, y_axis: str | None):
    """One heatmap per metric, side by side, two to a row: (the cells, as tables.phase_diagram
    gives them, and the (x, y) of each cell clicked in any of them); (None, []) for no metric."""
    rest = [a for a in axes if a not in (x_axis, y_axis)]
    ys, xs = tables.axis_values(table, y_axis) if y_axis else ["all"], tables.axis_values(table, x_axis)
    cells, clicked = None, []
    columns = st.columns(2) if len(metrics) > 1 else [st]
    for i, metric in enumerate(metrics):
        cells = tables.phase_diagram(table, metric, x_axis, y_axis)
        grid = lambda column: cells[column].cast(pl.Float64).to_numpy().reshape(len(ys), len(xs))  # noqa: E731, B023  (used in this iteration only)
        chart = charts.heatmap(grid("mean"), xs, ys, f"{tables.value_title(metric)}, mean over {', '.join(rest) or 'nothing'}",
                               x_title=x_axis, y_title=y_axis or "", scheme="blues",
                               domain=[0.0, 1.0] if metric.startswith("final.") and metric.endswith("accuracy") else None,
                               text=True, details={"seeds": grid("seeds"), "sd": grid("sd")}, select="cell", value_title=tables.value_title(metric))
        event = columns[i % len(columns)].altair_chart(chart.properties(height=alt.Step(40)), width="stretch",
                                                       on_select="rerun", key=f"sweep-heat-{metric}")
        clicked += [(str(c.get("x")), str(c.get("y"))) for c in (event or {}).get("selection", {}).get("cell") or []]
    return cells, clicked


def _cell_members(ctx: PageContext, folder: Path, table: pl.DataFrame, cells: pl.DataFrame, clicked: list,
                  shown: list[str], x_axis: str, y_axis: str | None) -> None:
    """The members of the cell clicked (or picked), and a button comparing their runs; a newly
    clicked cell's runs are compared at once."""
    keys = list(cells.select("x", "y").iter_rows())
    labels = [f"{x_axis}={x}" + (f", {y_axis}={y}" if y_axis else "") for x, y in keys]
    click = next((labels[keys.index(k)] for k in clicked if k in keys), None)
    fresh_click = click is not None and click != st.session_state.get("sweep-clicked")
    st.session_state["sweep-clicked"] = click
    if fresh_click:  # a newly clicked cell is chosen below, and its runs compared at once
        st.session_state["sweep-cell"] = click
    keep_choice("sweep-cell", labels, labels[0])
    cell = cells.row(labels.index(st.selectbox("cell", labels, key="sweep-cell")), named=True)
    members = table.filter(pl.col("run").is_in(cell["runs"] or []))
    run_names = {i.name for i in ctx.infos}
    dirs = [str(d.relative_to(ctx.root)) for d in tables.sweep_member_dirs(folder, members["run"].to_list())]
    members = members.with_columns(pl.Series("run directory", dirs))
    st.dataframe(members.select("run", "status", *shown, "run directory").to_pandas(), hide_index=True, key="sweep-members")
    found = [d for d in dirs if d in run_names]
    if st.button(f"compare these {len(found)} runs on Phase changes", key="sweep-compare", disabled=not found) or (fresh_click and found):
        compare(found, st.session_state["sweep-cell"])
