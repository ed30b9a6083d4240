"""Attention patterns as the Attention and Ablations pages draw them: an example index bounded
by the evaluation set, each head's pattern as a heatmap, its scores over training beneath it."""

from __future__ import annotations

import altair as alt
from icl_lab.explore import charts
import polars as pl
import streamlit as st

from icl_lab import explore
from icl_lab import ConfigError

from .context import PageContext

HEAD_CURVE_WIDTH = 200  # beside a heatmap in a half-width column, its legend still in view


def example_input(ctx: PageContext, info, key: str, container=st) -> int | None:
    """An evaluation-set index bounded by the set's size; a stale value (from a bigger set) is clamped."""
    try:
        sizes = ctx.eval_set_sizes(info)
    except ConfigError as err:
        st.error(f"No evaluation set for {info.name}: {err}")
        return None
    name, size = next(iter(sizes.items()))
    if st.session_state.get(key, 0) > size - 1:
        st.session_state[key] = size - 1
    return int(container.number_input(f"example sequence (evaluation set {name!r}, 0 to {size - 1})", 0, size - 1, 0, key=key))


def show_patterns(info, step: int, example: int, heads: list[tuple[int, int]] | None = None, container=st,
                  curves: pl.DataFrame | None = None, domain: list[str] | None = None) -> None:
    """Each head's pattern (or those in `heads`), its scores over training beneath it when `curves` holds them."""
    try:
        patterns, labels = explore.attention_patterns(info, step, example)
    except ConfigError as err:  # RunError included: a corrupt config or checkpoint of this run
        container.error(f"No attention patterns for {info.name} at step {step}: {err}")
        return
    query = len(labels) - 1 if labels and labels[-1].startswith("query") else None
    for layer, pattern in patterns.items():
        shown = [h for h in range(pattern.shape[0]) if heads is None or (layer, h) in heads]
        cols = container.columns(len(shown)) if len(shown) > 1 else [container]
        for col, h in zip(cols, shown):
            chart = charts.heatmap(pattern[h], labels, labels, f"L{layer}H{h} at step {step}, example {example}",
                                   x_title="key (attended to)", y_title="query position", highlight_row=query, link=("query", "key"),
                                   value_title="weight", max_labels=len(labels))  # a cell per label: every role stays named
            col.altair_chart(chart.properties(height=alt.Step(charts.CELL_PX), width=alt.Step(charts.CELL_PX)), width="content")
            if curves is not None:
                _head_curves(info, curves, layer, h, step, domain or [info.name], col)


def _head_curves(info, curves: pl.DataFrame, layer: int, head: int, step: int, domain: list[str], container) -> None:
    """The head's induction and previous-token scores over training, a rule at the checkpoint shown."""
    names = explore.head_scores(layer, head)
    mine = curves.filter((pl.col("run") == info.name) & pl.col("metric").is_in(names))
    drawn = [m for m in names if m in set(mine["metric"].to_list())]
    if not drawn:
        container.caption(f"No {' or '.join(names)} in {info.name}'s metrics.")
        return
    shown = pl.DataFrame({"step": [step], "label": [f"step {step}"]})
    chart = charts.curve_panels(mine, [drawn], by="run", domain=domain, axis=info.axis, marks=shown, width=HEAD_CURVE_WIDTH)
    container.altair_chart(chart, width="content")
