"""Grokking & RFM: a modular-arithmetic transformer's progress measures (Nanda et al. 2023) with
its milestones and embedding Fourier spectrum; an RFM run's feature matrix and its measures
(Mallinar et al. 2024). Runs are picked by what their task declares, not by its name."""

from __future__ import annotations

import altair as alt
from icl_lab.explore import charts
import polars as pl
import streamlit as st

from icl_lab import explore
from icl_lab import RunError

from .context import PageContext
from .widgets import download, one_run, step_slider

MODULAR = "modular_arithmetic"  # a task's declared capability (icl_lab.tasks.CAPABILITIES)
FEATURE_MATRIX = "feature_matrix"  # an RFM run's capability (icl_lab.rfm.CAPABILITIES)


def draw(ctx: PageContext) -> None:
    st.header("Grokking & RFM")
    grok = [i for i in ctx.infos if MODULAR in i.declared.capabilities]
    rfm = [i for i in ctx.infos if FEATURE_MATRIX in i.declared.capabilities]
    if not grok and not rfm:
        st.info("No modular-arithmetic or RFM runs in this directory.")
        return
    if grok:
        _progress_measures(ctx, one_run(grok, "transformer run", "grok-run"))
    if rfm:
        st.subheader("Recursive feature machine")
        _feature_machine(ctx, one_run(rfm, "RFM run", "rfm-run"))


def _progress_measures(ctx: PageContext, info) -> None:
    marks = explore.milestone_marks(info)
    st.subheader("Progress measures (Nanda et al. 2023)")
    if not marks.height and info.declared.milestones:
        st.caption(f"None of its milestones was reached: {', '.join(m.label for m in info.declared.milestones)}.")
    _curves_of(ctx, info, [["train_accuracy", "test_accuracy"]], marks=marks)
    _curves_of(ctx, info, [["train_loss", "test_loss", "restricted_loss", "excluded_loss"]], log_y=True, marks=marks)
    _curves_of(ctx, info, [["gini_embedding", "gini_neuron_logit"], ["weight_norm"]], marks=marks)
    spectrum = explore.fourier_spectrum(info)
    if spectrum.height:
        frequencies = sorted(set(spectrum["frequency"].to_list()))
        chart = alt.Chart(spectrum.to_pandas(), title="embedding Fourier norm per frequency").mark_rect().encode(
            x=alt.X("step:O", title=info.axis),
            y=alt.Y("frequency:O", title="frequency k", sort=frequencies, axis=alt.Axis(labelOverlap=False, values=frequencies)),
            color=alt.Color("norm:Q", scale=alt.Scale(scheme="viridis")), tooltip=["step", "frequency", "norm"])
        st.altair_chart(chart.properties(height=alt.Step(16)), width="stretch")
        download(spectrum, "fourier_spectrum", "fourier")


def _feature_machine(ctx: PageContext, info) -> None:
    steps = explore.checkpoints(info)
    if not steps:
        return
    c1, c2 = st.columns(2)
    step = step_slider(info.axis, steps, "rfm-step", steps[-1], c1)
    mask = c2.checkbox("mask the diagonal (its large entries otherwise take the colour range)", value=True, key="rfm-mask")
    try:
        M = explore.feature_matrix(info, step)
    except RunError as err:
        st.error(f"No feature matrix for {info.name} at {info.axis} {step}: {err}")
        return
    left, right = st.columns(2)
    labels = explore.feature_labels(M.shape[0])
    low, high = explore.robust_range(M, mask)
    signed = low < 0 < high  # signed entries: a diverging scale, white at 0, so a sign reads at a glance
    reach = max(-low, high)
    heat = charts.heatmap(M, labels, labels, f"feature matrix M at {info.axis} {step}", x_title="input feature",
                          y_title="input feature", scheme="viridis", diverging=signed, domain=[-reach, reach] if signed else [low, high],
                          mask_diagonal=mask, value_title="M entry")
    left.altair_chart(heat.properties(height=420), width="stretch")
    left.caption(f"Colour range: 1st to 99th percentile {'off the diagonal' if mask else 'of all entries'} ({low:.3g} to {high:.3g})"
                 + (", drawn symmetric about 0: red negative, blue positive, white 0." if signed else ".")
                 + (f" One feature in {every} is labelled; hover a cell for its pair." if (every := -(-len(labels) // charts.MAX_TICK_LABELS)) > 1 else ""))
    with right:
        _curves_of(ctx, info, [["train_accuracy", "test_accuracy"], ["circulant_deviation", "agop_alignment"]], width=300)


def _curves_of(ctx: PageContext, info, panels: list[list[str]], *, log_y: bool = False, marks=None,
               width: int = charts.PANEL_WIDTH) -> None:
    """One run's panels, in the run's colour, with the axis its task counts in."""
    curves = ctx.curves([info])
    names = set(explore.metric_names(curves))
    panels = [[m for m in p if m in names] for p in panels]
    panels = [p for p in panels if p]
    if not panels:
        return
    data, notes = explore.for_log_axes(curves.filter(pl.col("metric").is_in([m for p in panels for m in p])), False, log_y)
    chart = charts.curve_panels(data, panels, by="run", domain=[info.name], axis=info.axis, log_y=log_y, marks=marks, width=width)
    st.altair_chart(chart, width="content")
    for note in notes:
        st.caption(note)
