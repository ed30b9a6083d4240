"""Clamp conditions: a clamp experiment's conditions (transition, ratio to its baseline), and
the runs of chosen conditions overlaid on Phase changes."""

from __future__ import annotations

import streamlit as st

from icl_lab.explore import tables

from .context import PageContext
from .widgets import compare, download, pick_table


def draw(ctx: PageContext) -> None:
    st.header("Clamp conditions")
    hint = f"Make one with `icl-lab experiment singh-clamps --out {ctx.root}/NAME`."
    if (found := pick_table(ctx.root, tables.CLAMP_TABLE, "experiment", "clamp-table", tables.read_clamp_table, hint)) is None:
        return
    folder, table = found[0], tables.clamp_summary(found[1])
    st.dataframe(table.to_pandas(), hide_index=True, key="clamp-conditions",
                 column_config={"ratio to baseline": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Transition: mean ± sd over the seeds where one was found. Ratio: this condition's mean "
               "transition (in training sequences) over its baseline's; the baselines come first.")
    download(table, "clamp_conditions", "clamps")
    conditions = table["condition"].to_list()
    picked = st.multiselect("conditions to overlay on Phase changes", conditions, key="clamp-pick")
    run_dirs = [i.path for i in ctx.infos]
    runs = [str(d.relative_to(ctx.root)) for c in picked for d in tables.condition_runs(folder, c, run_dirs)]
    if st.button(f"overlay these {len(runs)} runs on Phase changes", key="clamp-overlay", disabled=not runs):
        compare(runs, ", ".join(picked))
        st.caption("Tick “mean ± sd over seeds” there to draw one band per condition.")
