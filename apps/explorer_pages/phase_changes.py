"""Phase changes: the chosen runs' curves in panels, one colour per run (or a band per
condition), the transitions and stage boundaries each run found drawn as rules."""

from __future__ import annotations

from icl_lab.explore import charts
import polars as pl
import streamlit as st

from icl_lab import explore

from .context import PageContext
from .widgets import download, keep_choice, keep_valid, selected_runs

ALL_TASKS = "all tasks together (their x axes may count different things)"


def draw(ctx: PageContext) -> None:
    st.header("Phase changes")
    chosen = selected_runs(ctx.infos)
    if not chosen:
        st.info("Select one or more runs in the sidebar, or pick rows on the Runs page.")
        return
    for info in chosen:
        if info.problems:
            st.warning(f"{info.name} is corrupt ({info.problems[0]}): what can be read of it is shown.")
    shown = _runs_of_one_task(chosen)
    axes = sorted({i.axis for i in shown})
    if len(axes) > 1:
        st.warning(f"This x axis mixes what the runs count ({' and '.join(axes)}), as asked.")
    curves = ctx.curves(shown)
    if curves.height == 0:
        st.info("The selected runs have no readable metrics yet.")
        return
    panels = _metric_pickers(explore.metric_names(curves))
    c1, c2, c3 = st.columns(3)
    log_x = c1.checkbox("log x axis", key="logx")
    log_y = c2.checkbox("log y axis", key="logy")
    by_condition = c3.checkbox("mean ± sd over seeds (group runs by condition)", key="bands")
    if not panels:
        st.info("Choose measures for a panel.")
        return
    wanted = curves.filter(pl.col("metric").is_in([m for p in panels for m in p]))
    by = "condition" if by_condition else "run"
    domain = sorted({i.condition if by_condition else i.name for i in chosen})  # colours do not shift with the task shown
    data = explore.condition_bands(wanted) if by_condition else wanted
    data, notes = explore.for_log_axes(data, log_x, log_y, "mean" if by_condition else "value")
    rules, _ = explore.for_log_axes(explore.transition_marks(shown), log_x, False)
    chart = charts.curve_panels(data, panels, by=by, domain=domain, axis=" / ".join(axes), log_x=log_x, log_y=log_y, rules=rules)
    st.altair_chart(chart, width="content")
    for note in notes:
        st.caption(note)
    st.caption("Dashed rules: detected transition steps (icl_lab.phases) and, on LLC panels, stage boundaries "
               "(icl_lab.stages), in the run's colour. "
               "Hover a panel: the ruler follows in every panel.")
    download(wanted, "curves", "curves")


def _runs_of_one_task(chosen: list) -> list:
    """The chosen runs of the task picked here (tasks may count different x axes), or all of them when asked."""
    by_task: dict[str, list] = {}
    for info in chosen:
        by_task.setdefault(info.task, []).append(info)
    options = list(by_task) + ([ALL_TASKS] if len(by_task) > 1 else [])
    keep_choice("phase-task", options, options[0])
    group = st.radio("runs of task (each on the x axis its task declares)", options, horizontal=True, key="phase-task")
    return chosen if group == ALL_TASKS else by_task[group]


def _metric_pickers(names: list[str]) -> list[list[str]]:
    """Panels of metrics; options grouped by family (`induction_score.*`, `*_accuracy`, Fourier `k*`)."""
    families = explore.metric_families(names)
    c1, c2 = st.columns([1, 3])
    keep_choice("family", ["all", *families], "all")
    family = c1.selectbox("measure family", ["all", *families], key="family",
                          format_func=lambda f: f if f == "all" else f"{f} ({len(families[f])})")
    offered = names if family == "all" else families[family]
    count = int(c2.number_input("panels", 1, 6, value=len(explore.default_panels(names)), key="n-panels"))
    defaults = explore.default_panels(names) + [[]] * 6
    panels = []
    for i in range(count):
        kept = keep_valid(f"panel-{i}", names, defaults[i])
        options = list(dict.fromkeys([*kept, *offered]))  # a family filter never drops a chosen metric
        panels.append(st.multiselect(f"panel {i + 1}: measures drawn together (type to search)", options, key=f"panel-{i}"))
    return [p for p in panels if p]
