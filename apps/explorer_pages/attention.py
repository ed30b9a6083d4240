"""Attention patterns: every head of a transformer run at a checkpoint on one example, beside
a second checkpoint or a second run (plain beside clamped) when asked."""

from __future__ import annotations

import streamlit as st

from icl_lab import explore
from icl_lab import ConfigError

from .context import PageContext
from .patterns import example_input, show_patterns
from .widgets import one_run, step_slider

BESIDE = ("nothing", "a second checkpoint", "a second run (e.g. plain beside clamped)")
TRANSFORMER = "transformer"  # the capability of a task whose model has attention (icl_lab.tasks.CAPABILITIES)


def has_attention(info) -> bool:
    """Whether the run's model has attention patterns to draw, and checkpoints to draw them from."""
    return TRANSFORMER in info.declared.capabilities and bool(explore.checkpoints(info))


def draw(ctx: PageContext) -> None:
    st.header("Attention patterns")
    info = one_run(ctx.infos, "run", "att-run", has_attention)
    if info is None:
        st.info("No transformer run with checkpoints in this directory.")
        return
    steps = explore.checkpoints(info)
    c1, c2 = st.columns(2)
    step = step_slider("checkpoint step", steps, "att-step", steps[-1], c1)
    example = example_input(ctx, info, "att-example", c2)
    if example is None:
        return
    sides = _beside(ctx, info, step, steps)
    runs = list({run.name: run for run, _ in sides}.values())
    curves = ctx.curves(runs)
    domain = [r.name for r in runs]
    columns = st.columns(len(sides)) if len(sides) > 1 else [st]
    for col, (run, at_step) in zip(columns, sides):
        if len(sides) > 1:
            col.markdown(f"**{run.name}** at step {at_step}")
        show_patterns(run, at_step, example, container=col, curves=curves, domain=domain)
    st.caption("Rows: query positions; columns: key positions, each named by its role in the task "
               "(x: item and its class c, ℓ: its label, query); the query row is outlined. Hover a cell: its "
               "query row and key column stand out. Beneath each head: its induction and previous-token "
               "scores over training, the dotted rule at the checkpoint shown.")


def _same_examples(ctx: PageContext, info, other) -> bool:
    """Whether two runs have the same task and evaluation sets, so one example index means the same in both."""
    try:
        return other.task == info.task and ctx.eval_set_sizes(other) == ctx.eval_set_sizes(info)
    except ConfigError:
        return False


def _beside(ctx: PageContext, info, step: int, steps: list[int]) -> list[tuple]:
    """(run, step) of each pattern to draw: the one chosen, and a second checkpoint or a second run beside it."""
    mode = st.radio("beside it", BESIDE, horizontal=True, key="att-beside")
    if mode == BESIDE[1]:
        return [(info, step), (info, step_slider("second checkpoint step", steps, "att-step2", steps[0]))]
    if mode == BESIDE[2]:
        # the same seed with other interventions first: plain beside clamped
        ranked = sorted(ctx.infos, key=lambda i: (i.seed != info.seed, i.interventions == info.interventions))
        fits = lambda i: i.name != info.name and explore.checkpoints(i) and _same_examples(ctx, info, i)  # noqa: E731
        c1, c2 = st.columns(2)
        with c1:
            twin = one_run(ranked, "second run (same task and evaluation sets)", "att-run2", fits)
        if twin is None:
            st.info(f"No other run of task {info.task} with checkpoints and the same evaluation sets as {info.name}.")
            return [(info, step)]
        twin_steps = explore.checkpoints(twin)
        other = step_slider(f"{twin.name}'s checkpoint step", twin_steps, "att-step-run2", step if step in twin_steps else twin_steps[-1], c2)
        return [(info, step), (twin, other)]
    return [(info, step)]
