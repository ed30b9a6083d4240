"""Runs: every run under the directory, filtered; rows picked here are compared on the other pages."""

from __future__ import annotations

import polars as pl
import streamlit as st

from .context import PageContext
from .widgets import download

# what tells runs apart first (a clamped run from a plain one, a transition found, the settings
# that vary), then what they are and how far they got; the varying settings follow "transitions"
FIRST_COLUMNS = ["run", "interventions", "transitions"]
LATER_COLUMNS = ["seed", "status", "task", "preset", "steps", "tracked", "final tracked", "final metrics", "wall time (s)", "problems"]
ROW_PX, MAX_ROWS_SHOWN = 35, 25  # Streamlit's row height; the table shows this many rows before it scrolls


def draw(ctx: PageContext) -> None:
    st.header("Runs")
    table = ctx.runs_table
    tasks = sorted(set(table["task"].to_list()))
    states = sorted(set(table["status"].to_list()))
    c1, c2, c3 = st.columns(3)
    pick_tasks = c1.multiselect("task", tasks, default=tasks, key="filter-task")
    pick_states = c2.multiselect("status", states, default=states, key="filter-status")
    text = c3.text_input("name contains", "", key="filter-text")
    shown = table.filter(pl.col("task").is_in(pick_tasks) & pl.col("status").is_in(pick_states) & pl.col("run").str.contains(text, literal=True))
    st.caption(f"{shown.height} of {table.height} runs. Pick rows (the boxes on the left) to compare those runs on the other pages.")
    varying = [c for c in shown.columns if c not in FIRST_COLUMNS + LATER_COLUMNS]  # explore.varying_settings
    event = st.dataframe(
        shown.with_columns(pl.col("interventions").replace("", "none")).to_pandas(), width="stretch", hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs-table",
        column_order=[*FIRST_COLUMNS, *varying, *LATER_COLUMNS], height=ROW_PX * (min(shown.height, MAX_ROWS_SHOWN) + 1) + 3,
        column_config={"run": st.column_config.TextColumn(pinned=True),
                       "interventions": st.column_config.TextColumn(width="large"),
                       "transitions": st.column_config.TextColumn(width="medium"),
                       "final metrics": st.column_config.TextColumn(width="large"),
                       "wall time (s)": st.column_config.NumberColumn(format="%.1f"),
                       "final tracked": st.column_config.NumberColumn(format="%.4g")},
    )
    picked = [shown["run"][i] for i in event.selection.rows] if event and event.selection.rows else []
    if picked:
        st.session_state["compare"] = picked
        st.success(f"Comparing {len(picked)} runs on the other pages: {', '.join(picked)}")
    download(shown, "runs", "runs")
    _interventions_in_full(ctx.infos, set(shown["run"].to_list()))
    _explain_odd_runs(ctx.infos)


def _interventions_in_full(infos, shown: set[str]) -> None:
    """Each shown run's intervention specs, one code span each (the table cell cuts them off)."""
    intervened = [i for i in infos if i.interventions and i.name in shown]
    with st.expander(f"interventions in full ({len(intervened)} runs)", expanded=0 < len(intervened) <= 10):
        for info in intervened:
            st.markdown(f"**{info.name}**: " + "; ".join(f"`{part}`" for part in info.interventions.split("; ")))


def _explain_odd_runs(infos) -> None:
    """A line for each run still running, failed (its error's last line) or corrupt (each problem)."""
    for info in infos:
        if info.state == "running":
            st.info(f"{info.name} is still running: its curves show what it has written so far.")
        if info.state == "failed":
            lines = (info.error or "").strip().splitlines()
            st.warning(f"{info.name} failed: {lines[-1] if lines else 'no error text'}")
        for problem in info.problems:
            st.error(f"{info.name} is corrupt: {problem}")
