"""Ablations: a run's ablation or patching table as a layer × component heatmap of the change
in a metric, and the attention pattern of a head picked from it."""

from __future__ import annotations

import altair as alt
from icl_lab.explore import charts
import numpy as np
import polars as pl
import streamlit as st

from icl_lab import explore
from icl_lab import RunError

from .context import PageContext
from .patterns import example_input, show_patterns
from .widgets import download, keep_choice, one_run, step_slider

COMPONENT_KINDS = {"H": "head", "p": "position"}  # the scan's component names: H0, H1, … or pos0, pos1, …


def draw(ctx: PageContext) -> None:
    st.header("Ablations")
    with_tables = [i for i in ctx.infos if explore.tables.ablation_tables(i)]
    if not with_tables:
        st.info("No ablation or patching tables yet. Make them with `icl-lab ablate RUN` or "
                "`icl-lab patch RUN`; they are stored in RUN/ablations/*.parquet.")
        return
    info = one_run(with_tables, "run", "abl-run")
    files = explore.tables.ablation_tables(info)
    name = st.selectbox("table", list(files), key="abl-table")
    try:
        table = explore.tables.read_ablation_table(files[name])
    except RunError as err:
        st.error(f"{info.name} is corrupt: {err}")
        return
    metrics = sorted(table["metric"].unique().to_list())
    tracked = [m for m in info.track if m in metrics]
    keep_choice("abl-metric", metrics, (tracked or metrics)[0])  # a new table: its tracked metric, not the first by name
    metric = st.selectbox("metric", metrics, key="abl-metric", format_func=lambda m: f"{m} (tracked)" if m in tracked else m)
    sub = table.filter(pl.col("metric") == metric)
    layers, components = _delta_heatmap(sub, metric, patching=name.startswith("patch_"))
    download(sub, name, "abl")
    heads = [f"L{l}{c}" for l in layers for c in components if c.startswith("H")]
    steps = explore.checkpoints(info)
    if heads and steps:
        c1, c2, c3 = st.columns(3)
        pick = c1.selectbox("see a head's attention pattern", heads, key="abl-head")
        step = step_slider("checkpoint step", steps, "abl-step", steps[-1], c2)
        example = example_input(ctx, info, "abl-example", c3)
        if example is not None:
            layer, head = int(pick[1 : pick.index("H")]), int(pick[pick.index("H") + 1 :])
            show_patterns(info, step, example, heads=[(layer, head)])


def _delta_heatmap(sub: pl.DataFrame, metric: str, patching: bool) -> tuple[list[int], list[str]]:
    """Draw one metric's deltas as a layer × component heatmap, its baseline above; (layers, components)."""
    layers = sorted(set(sub["layer"].to_list()))
    components = list(dict.fromkeys(sub["component"].to_list()))  # in scan order
    grid = np.full((len(layers), len(components)), np.nan)
    for r in sub.iter_rows(named=True):
        grid[layers.index(r["layer"]), components.index(r["component"])] = r["delta"]
    what = "patched in from the clean run" if patching else "ablated"
    baselines = sorted(set(sub["baseline"].to_list())) if "baseline" in sub.columns else []
    if baselines:
        st.metric(f"baseline {metric} ({'corrupted run, nothing patched' if patching else 'nothing ablated'})",
                  ", ".join(f"{b:.4g}" for b in baselines))
    column_title = COMPONENT_KINDS.get(components[0][:1], "component") if components else "component"
    chart = charts.heatmap(grid, components, [f"L{l}" for l in layers], f"Δ {metric} when the component is {what} ({'patched' if patching else 'ablated'} − baseline)",
                           x_title=column_title, y_title="layer", diverging=True, text=True,
                           value_title=f"Δ {metric}")
    st.altair_chart(chart.properties(height=alt.Step(44)), width="stretch")
    st.caption("Red: the metric falls (the component helps); blue: it rises; white: no change. "
               "The scale is symmetric about 0.")
    return layers, components
