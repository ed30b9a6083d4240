"""Phase changes: the chosen runs' curves in panels, one colour per run (or a band per
condition over its seeds), the transitions and stage boundaries each run found drawn as rules.
While a shown run is running, the curves redraw every LIVE_SECONDS (a Streamlit fragment), and
stop once none is."""

from __future__ import annotations

from icl_lab.explore import charts
import polars as pl
import streamlit as st

from icl_lab import explore

from .context import PageContext
from .widgets import download, keep_choice, keep_valid, selected_runs

ALL_TASKS = "all tasks together (their x axes may count different things)"
LIVE_SECONDS = 3  # how often a running run's curves are redrawn


def draw(ctx: PageContext) -> None:
    st.header("Phase changes")
    chosen = selected_runs(ctx.infos)
    if not chosen:
        st.info("Select one or more runs in the sidebar, or pick rows on the Runs page.")
        return
    for info in chosen:
        if info.problems:
            st.warning(f"{info.name} is corrupt ({info.problems[0]}): what can be read of it is shown.")
    shown, group = _runs_of_one_task(chosen)
    axes = sorted({i.axis for i in shown})
    if len(axes) > 1:
        st.warning(f"This x axis mixes what the runs count ({' and '.join(axes)}), as asked.")
    curves = ctx.curves(shown)
    if curves.height == 0:
        st.info("The selected runs have no readable metrics yet.")
        return
    track = [m for i in shown for m in (*i.track, *i.declared.watched)]  # what the runs and their task are about
    panels = _metric_pickers(explore.metric_names(curves), track, group)
    c1, c2, c3 = st.columns(3)
    log_x = c1.checkbox("log x axis", key="logx")
    log_y = c2.checkbox("log y axis", key="logy")
    by_condition = c3.checkbox("mean ± sd over seeds (group runs by condition)", key="bands")
    if not panels:
        st.info("Choose measures for a panel.")
        return
    live = any(i.state == "running" for i in shown)
    # a fragment: while a run trains, only the curves are redrawn (every LIVE_SECONDS), not the page
    st.fragment(_curves_view, run_every=LIVE_SECONDS if live else None)(ctx, chosen, shown, panels, log_x, log_y, by_condition, live)


def _curves_view(ctx: PageContext, chosen: list, shown: list, panels: list[list[str]], log_x: bool, log_y: bool,
                 by_condition: bool, live: bool) -> None:
    """The panels; a live view reads the runs again first, and redraws the whole page (ending its
    timer) once no shown run is still running."""
    if live:
        shown, curves = ctx.live_runs(shown)
        running = [i for i in shown if i.state == "running"]
        if not running:
            st.rerun()  # the run ended: redraw the page without the timer
        last = curves.filter(pl.col("run").is_in([i.name for i in running]))["step"].max()
        st.caption(f"Live: {', '.join(i.name for i in running)} still running, at {shown[0].axis} {last}; "
                   f"the curves are redrawn every {LIVE_SECONDS} s until it ends.")
    else:
        curves = ctx.curves(shown)
    wanted = curves.filter(pl.col("metric").is_in([m for p in panels for m in p]))
    notes = []
    if by_condition:
        labels = explore.condition_labels(ctx.infos)
        kept, repeated = explore.one_run_per_seed(shown, labels)
        names = {i.name for i in kept}
        wanted = wanted.filter(pl.col("run").is_in(names)).with_columns(pl.col("run").replace_strict(labels, default=None).alias("condition"))
        notes += _seed_notes(kept, repeated, labels)
        domain = sorted({labels[i.name] for i in chosen})  # colours do not shift with the task shown
        data = explore.condition_bands(wanted)
        rules = explore.transition_marks([i for i in shown if i.name in names]).with_columns(
            pl.col("run").replace_strict(labels, default=None).alias("condition"))
    else:
        domain, data, rules = sorted(i.name for i in chosen), wanted, explore.transition_marks(shown)
    data, log_notes = explore.for_log_axes(data, log_x, log_y, "mean" if by_condition else "value")
    rules, _ = explore.for_log_axes(rules, log_x, False)
    chart = charts.curve_panels(data, panels, by="condition" if by_condition else "run", domain=domain,
                                axis=" / ".join(sorted({i.axis for i in shown})), log_x=log_x, log_y=log_y, rules=rules)
    st.altair_chart(chart, width="content")
    for note in notes + log_notes:
        st.caption(note)
    st.caption("Dashed rules: detected transition steps (icl_lab.phases) and, on LLC panels, stage boundaries "
               "(icl_lab.stages), in the run's colour. Bands: ± one sd over seeds, clipped to what the metric can "
               "take (a loss ≥ 0, an accuracy in [0, 1]). Hover a panel: the ruler follows in every panel.")
    download(wanted, "curves", "curves")


def _seed_notes(kept: list, repeated: list, labels: dict[str, str]) -> list[str]:
    """A line per condition: how many seeds its band is over; a line naming the repeated runs left out."""
    seeds: dict[str, list] = {}
    for info in kept:
        seeds.setdefault(labels[info.name], []).append(info.seed)
    notes = ["Bands over seeds: " + "; ".join(
        f"{condition}: {len(found)} seed{'s' if len(found) != 1 else ''} ({', '.join(str(s) for s in sorted(found, key=lambda s: (s is None, s or 0)))})"
        for condition, found in sorted(seeds.items())) + "."]
    if repeated:
        notes.append(f"{len(repeated)} repeated run{'s' if len(repeated) != 1 else ''} of a seed already counted "
                     f"left out (the newest of each seed is kept): {', '.join(i.name for i in repeated)}.")
    return notes


def _runs_of_one_task(chosen: list) -> tuple[list, str]:
    """The chosen runs of the task picked here (tasks may count different x axes), or all of them
    when asked; the task with the most chosen runs first, and picked at first."""
    by_task: dict[str, list] = {}
    for info in chosen:
        by_task.setdefault(info.task, []).append(info)
    options = sorted(by_task, key=lambda t: (-len(by_task[t]), t)) + ([ALL_TASKS] if len(by_task) > 1 else [])
    keep_choice("phase-task", options, options[0])
    group = st.radio("runs of task (each on the x axis its task declares)", options, horizontal=True, key="phase-task",
                     format_func=lambda t: t if t == ALL_TASKS else f"{t} ({len(by_task[t])})")
    return (chosen if group == ALL_TASKS else by_task[group]), group


def _metric_pickers(names: list[str], track: list[str], group: str) -> list[list[str]]:
    """Panels of metrics; options grouped by family (`induction_score.*`, `*_accuracy`, Fourier `k*`).
    A task newly picked opens on its own default panels (explore.default_panels: its tracked metrics)."""
    families = explore.metric_families(names)
    defaults = explore.default_panels(names, track)
    if st.session_state.get("panels-for") != group:  # another task: its panels, not the last task's leftovers
        st.session_state["panels-for"] = group
        st.session_state["n-panels"] = len(defaults)
        for i in range(6):
            st.session_state[f"panel-{i}"] = (defaults + [[]] * 6)[i]
    c1, c2 = st.columns([1, 3])
    keep_choice("family", ["all", *families], "all")
    family = c1.selectbox("measure family", ["all", *families], key="family",
                          format_func=lambda f: f if f == "all" else f"{f} ({len(families[f])})")
    offered = names if family == "all" else families[family]
    count = int(c2.number_input("panels", 1, 6, key="n-panels"))
    panels = []
    for i in range(count):
        kept = keep_valid(f"panel-{i}", names, (defaults + [[]] * 6)[i])
        options = list(dict.fromkeys([*kept, *offered]))  # a family filter never drops a chosen metric
        panels.append(st.multiselect(f"panel {i + 1}: measures drawn together (type to search)", options, key=f"panel-{i}"))
    return [p for p in panels if p]
