"""icl-lab explorer: `streamlit run apps/explore.py`.

Reads the run store only (runs directory chosen in the sidebar; default $ICL_LAB_RUNS or
runs/). Pages: Runs, Phase changes, Ablations, Attention patterns, Grokking & RFM, Sweeps, Clamp conditions.
"""

from __future__ import annotations

import io
import sys
import traceback
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # apps/charts.py, however the app is started
import charts  # noqa: E402

from icl_lab import explore
from icl_lab import explore_tables as tables
from icl_lab.config import ConfigError
from icl_lab.store import RunError
from icl_lab.sweep import MEMBER_STATES

ALL_TASKS = "all tasks together (mixes steps and RFM iterations)"
PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns", "Grokking & RFM", "Sweeps", "Clamp conditions")
NO_Y_AXIS = "(none: one row)"
BESIDE = ("nothing", "a second checkpoint", "a second run (e.g. plain beside clamped)")
HEAD_CURVE_WIDTH = 200  # beside a heatmap in a half-width column, its legend still in view
RESCAN_SECONDS = 10  # new run directories appear within this long (the rescan button: at once)

st.set_page_config(page_title="icl-lab explorer", layout="wide")


@st.cache_data(show_spinner="Looking for runs…", ttl=RESCAN_SECONDS)
def _find(root: str) -> tuple[list[str], str | None]:
    """(run directories under root, None), or ([], why) when the bounded scan gave up."""
    try:
        return [str(p) for p in explore.find_runs(root)], None
    except RunError as err:
        return [], str(err)


@st.cache_data(show_spinner="Looking for sweeps and experiment tables…", ttl=RESCAN_SECONDS)
def _find_tables(root: str) -> tuple[dict[str, list[str]], str | None]:
    """(file name -> folders holding it, None), or ({}, why) when the bounded scan gave up."""
    try:
        return {name: [str(p) for p in folders] for name, folders in tables.find_tables(root).items()}, None
    except RunError as err:
        return {}, str(err)


@st.cache_data(show_spinner=False)
def _scan(root: str, run_dirs: tuple[str, ...], stamp: tuple[int, ...]) -> list[explore.RunInfo]:
    return [explore.read_run(Path(d), Path(root)) for d in run_dirs]


@st.cache_data(show_spinner=False)
def _eval_set_sizes(run_dir: str, stamp: tuple[int, ...]) -> dict[str, int]:
    return explore.eval_set_sizes(explore.RunInfo(path=Path(run_dir), name=run_dir))


@st.cache_data(show_spinner=False)
def _curves(_infos: list, root: str, names: tuple[str, ...], stamp: tuple[int, ...]) -> pl.DataFrame:
    return explore.load_curves(_infos)


def download(frame: pl.DataFrame, name: str, key: str) -> None:
    left, right = st.columns(2)
    left.download_button(f"{name}.csv", frame.write_csv().encode(), file_name=f"{name}.csv", mime="text/csv", key=f"csv-{key}")
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    right.download_button(f"{name}.parquet", buffer.getvalue(), file_name=f"{name}.parquet", key=f"pq-{key}")


def page_runs(infos, table: pl.DataFrame) -> None:
    st.header("Runs")
    tasks = sorted(set(table["task"].to_list()))
    states = sorted(set(table["status"].to_list()))
    c1, c2, c3 = st.columns(3)
    pick_tasks = c1.multiselect("task", tasks, default=tasks, key="filter-task")
    pick_states = c2.multiselect("status", states, default=states, key="filter-status")
    text = c3.text_input("name contains", "", key="filter-text")
    shown = table.filter(pl.col("task").is_in(pick_tasks) & pl.col("status").is_in(pick_states) & pl.col("run").str.contains(text, literal=True))
    st.caption("Pick rows (the boxes on the left) to compare those runs on the other pages.")
    event = st.dataframe(
        shown.to_pandas(), width="stretch", hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs-table",
        column_order=["run", "task", "preset", "seed", "status", "steps", "wall time (s)", "tracked", "final tracked",
                      "final metrics", "interventions", "transitions", "problems"],
        column_config={"interventions": st.column_config.TextColumn(width="large"),
                       "final metrics": st.column_config.TextColumn(width="large"),
                       "wall time (s)": st.column_config.NumberColumn(format="%.1f"),
                       "final tracked": st.column_config.NumberColumn(format="%.4g")},
    )
    picked = [shown["run"][i] for i in event.selection.rows] if event and event.selection.rows else []
    if picked:
        st.session_state["compare"] = picked
        st.success(f"Comparing {len(picked)} runs on the other pages: {', '.join(picked)}")
    download(shown, "runs", "runs")
    intervened = [i for i in infos if i.interventions and i.name in set(shown["run"].to_list())]
    with st.expander(f"interventions in full ({len(intervened)} runs)", expanded=0 < len(intervened) <= 10):
        for info in intervened:
            st.markdown(f"**{info.name}**: " + "; ".join(f"`{part}`" for part in info.interventions.split("; ")))
    for info in infos:
        if info.state == "running":
            st.info(f"{info.name} is still running: its curves show what it has written so far.")
        if info.state == "failed":
            lines = (info.error or "").strip().splitlines()
            st.warning(f"{info.name} failed: {lines[-1] if lines else 'no error text'}")
        for problem in info.problems:
            st.error(f"{info.name} is corrupt: {problem}")


def _selected(infos) -> list:
    """The runs to compare: the sidebar's choice, kept (as "compare") while pages without it are shown."""
    names = [i.name for i in infos]
    if "selected" not in st.session_state:
        st.session_state["selected"] = [n for n in st.session_state.get("compare") or names[:12] if n in names]
    chosen = st.sidebar.multiselect("runs to compare", names, key="selected")
    st.session_state["compare"] = chosen
    return [i for i in infos if i.name in chosen]


def _choice(key: str, options: list, default):
    """Set a one-value widget's state to `default` when what it holds is not offered (any more)
    (a step of another run, a task no longer selected). Called before the widget is drawn."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def _step_slider(label: str, steps: list[int], key: str, default: int, container=st) -> int:
    _choice(key, steps, default)
    return int(container.select_slider(label, steps, key=key))


def _keep_valid(key: str, allowed: list, default: list) -> list:
    """A multiselect's value: what the session holds, minus what is no longer offered (a stale
    choice from another task), else the default. Set before the widget is drawn."""
    kept = [v for v in st.session_state.get(key, default) if v in allowed]
    st.session_state[key] = kept
    return kept


def _metric_pickers(names: list[str]) -> list[list[str]]:
    """Panels of metrics; options grouped by family (`induction_score.*`, `*_accuracy`, Fourier `k*`)."""
    families = explore.metric_families(names)
    c1, c2 = st.columns([1, 3])
    _choice("family", ["all", *families], "all")
    family = c1.selectbox("measure family", ["all", *families], key="family",
                          format_func=lambda f: f if f == "all" else f"{f} ({len(families[f])})")
    offered = names if family == "all" else families[family]
    count = int(c2.number_input("panels", 1, 6, value=len(explore.default_panels(names)), key="n-panels"))
    defaults = explore.default_panels(names) + [[]] * 6
    panels = []
    for i in range(count):
        kept = _keep_valid(f"panel-{i}", names, defaults[i])
        options = list(dict.fromkeys([*kept, *offered]))  # a family filter never drops a chosen metric
        panels.append(st.multiselect(f"panel {i + 1}: measures drawn together (type to search)", options, key=f"panel-{i}"))
    return [p for p in panels if p]


def page_phase_changes(infos, root: str, stamp: tuple[int, ...]) -> None:
    st.header("Phase changes")
    chosen = _selected(infos)
    if not chosen:
        st.info("Select one or more runs in the sidebar, or pick rows on the Runs page.")
        return
    for info in chosen:
        if info.problems:
            st.warning(f"{info.name} is corrupt ({info.problems[0]}): what can be read of it is shown.")
    by_task: dict[str, list] = {}
    for info in chosen:
        by_task.setdefault(info.task, []).append(info)
    options = list(by_task) + ([ALL_TASKS] if len(by_task) > 1 else [])
    _choice("phase-task", options, options[0])
    group = st.radio("runs of task (steps and RFM iterations get separate axes)", options, horizontal=True, key="phase-task")
    shown = chosen if group == ALL_TASKS else by_task[group]
    axes = sorted({i.axis for i in shown})
    axis = " / ".join(axes)
    if len(axes) > 1:
        st.warning("This x axis mixes training steps and RFM iterations, as asked.")
    curves = _curves(shown, root, tuple(i.name for i in shown), stamp)
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
    chart = charts.curve_panels(data, panels, by=by, domain=domain, axis=axis, log_x=log_x, log_y=log_y, rules=rules)
    st.altair_chart(chart, width="content")
    for note in notes:
        st.caption(note)
    st.caption("Dashed rules: detected transition steps (icl_lab.phases) and, on LLC panels, stage boundaries "
               "(icl_lab.stages), in the run's colour. "
               "Hover a panel: the ruler follows in every panel.")
    download(wanted, "curves", "curves")


def _one_run(infos, label: str, key: str, predicate=None):
    """A run picked from those fitting `predicate`; the runs picked for comparison come first."""
    options = [i for i in infos if predicate is None or predicate(i)]
    if not options:
        return None
    compare = st.session_state.get("compare") or []
    options.sort(key=lambda i: i.name not in compare)
    names = [i.name for i in options]
    name = st.selectbox(label, names, key=key)
    return options[names.index(name)]


def _example_input(info, stamp: tuple[int, ...], key: str, container=st) -> int | None:
    """An evaluation-set index bounded by the set's size; a stale value (from a bigger set) is clamped."""
    try:
        sizes = _eval_set_sizes(str(info.path), stamp)
    except ConfigError as err:
        st.error(f"No evaluation set for {info.name}: {err}")
        return None
    name, size = next(iter(sizes.items()))
    if st.session_state.get(key, 0) > size - 1:
        st.session_state[key] = size - 1
    return int(container.number_input(f"example sequence (evaluation set {name!r}, 0 to {size - 1})", 0, size - 1, 0, key=key))


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


def _show_patterns(info, step: int, example: int, heads: list[tuple[int, int]] | None = None, container=st,
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
                                   x_title="key (attended to)", y_title="query position", highlight_row=query, link=("query", "key"))
            col.altair_chart(chart.properties(height=alt.Step(charts.CELL_PX), width=alt.Step(charts.CELL_PX)), width="content")
            if curves is not None:
                _head_curves(info, curves, layer, h, step, domain or [info.name], col)


def page_ablations(infos, stamp: tuple[int, ...]) -> None:
    st.header("Ablations")
    with_tables = [i for i in infos if explore.ablation_tables(i)]
    if not with_tables:
        st.info("No ablation or patching tables yet. Make them with `icl-lab ablate RUN` or "
                "`icl-lab patch RUN`; they are stored in RUN/ablations/*.parquet.")
        return
    info = _one_run(with_tables, "run", "abl-run")
    tables = explore.ablation_tables(info)
    name = st.selectbox("table", list(tables), key="abl-table")
    try:
        table = explore.read_ablation_table(tables[name])
    except RunError as err:
        st.error(f"{info.name} is corrupt: {err}")
        return
    metrics = sorted(table["metric"].unique().to_list())
    tracked = [m for m in info.track if m in metrics]
    _choice("abl-metric", metrics, (tracked or metrics)[0])  # a new table: its tracked metric, not the first by name
    metric = st.selectbox("metric", metrics, key="abl-metric", format_func=lambda m: f"{m} (tracked)" if m in tracked else m)
    sub = table.filter(pl.col("metric") == metric)
    layers = sorted(set(sub["layer"].to_list()))
    components = list(dict.fromkeys(sub["component"].to_list()))  # in scan order
    grid = np.full((len(layers), len(components)), np.nan)
    for r in sub.iter_rows(named=True):
        grid[layers.index(r["layer"]), components.index(r["component"])] = r["delta"]
    patching = name.startswith("patch_")
    what = "patched in from the clean run" if patching else "ablated"
    baselines = sorted(set(sub["baseline"].to_list())) if "baseline" in sub.columns else []
    if baselines:
        st.metric(f"baseline {metric} ({'corrupted run, nothing patched' if patching else 'nothing ablated'})",
                  ", ".join(f"{b:.4g}" for b in baselines))
    kinds = {"H": "head", "p": "position"}  # the scan's component names: H0, H1, … or pos0, pos1, …
    column_title = kinds.get(components[0][:1], "component") if components else "component"
    chart = charts.heatmap(grid, components, [f"L{l}" for l in layers], f"Δ {metric} when the component is {what} (value − baseline)",
                           x_title=column_title, y_title="layer", diverging=True, text=True)
    st.altair_chart(chart.properties(height=alt.Step(44)), width="stretch")
    st.caption("Red: the metric falls (the component helps); blue: it rises; white: no change. "
               "The scale is symmetric about 0.")
    download(sub, name, "abl")
    heads = [f"L{l}{c}" for l in layers for c in components if c.startswith("H")]
    steps = explore.checkpoints(info)
    if heads and steps:
        c1, c2, c3 = st.columns(3)
        pick = c1.selectbox("see a head's attention pattern", heads, key="abl-head")
        step = _step_slider("checkpoint step", steps, "abl-step", steps[-1], c2)
        example = _example_input(info, stamp, "abl-example", c3)
        if example is not None:
            layer, head = int(pick[1 : pick.index("H")]), int(pick[pick.index("H") + 1 :])
            _show_patterns(info, step, example, heads=[(layer, head)])


def _same_examples(info, other, stamp: tuple[int, ...]) -> bool:
    """Whether two runs have the same task and evaluation sets, so one example index means the same in both."""
    try:
        return other.task == info.task and _eval_set_sizes(str(other.path), stamp) == _eval_set_sizes(str(info.path), stamp)
    except ConfigError:
        return False


def _beside(info, step: int, steps: list[int], infos, stamp: tuple[int, ...]) -> list[tuple]:
    """(run, step) of each pattern to draw: the one chosen, and a second checkpoint or a second run beside it."""
    mode = st.radio("beside it", BESIDE, horizontal=True, key="att-beside")
    if mode == BESIDE[1]:
        return [(info, step), (info, _step_slider("second checkpoint step", steps, "att-step2", steps[0]))]
    if mode == BESIDE[2]:
        # the same seed with other interventions first: plain beside clamped
        ranked = sorted(infos, key=lambda i: (i.seed != info.seed, i.interventions == info.interventions))
        fits = lambda i: i.name != info.name and explore.checkpoints(i) and _same_examples(info, i, stamp)  # noqa: E731
        c1, c2 = st.columns(2)
        with c1:
            twin = _one_run(ranked, "second run (same task and evaluation sets)", "att-run2", fits)
        if twin is None:
            st.info(f"No other run of task {info.task} with checkpoints and the same evaluation sets as {info.name}.")
            return [(info, step)]
        twin_steps = explore.checkpoints(twin)
        other = _step_slider(f"{twin.name}'s checkpoint step", twin_steps, "att-step-run2", step if step in twin_steps else twin_steps[-1], c2)
        return [(info, step), (twin, other)]
    return [(info, step)]


def page_attention(infos, root: str, stamp: tuple[int, ...]) -> None:
    st.header("Attention patterns")
    info = _one_run(infos, "run", "att-run", lambda i: i.task not in ("rfm", "digits", "?") and explore.checkpoints(i))
    if info is None:
        st.info("No transformer run with checkpoints in this directory.")
        return
    steps = explore.checkpoints(info)
    c1, c2 = st.columns(2)
    step = _step_slider("checkpoint step", steps, "att-step", steps[-1], c1)
    example = _example_input(info, stamp, "att-example", c2)
    if example is None:
        return
    sides = _beside(info, step, steps, infos, stamp)
    runs = list({run.name: run for run, _ in sides}.values())
    curves = _curves(runs, root, tuple(r.name for r in runs), stamp)
    domain = [r.name for r in runs]
    columns = st.columns(len(sides)) if len(sides) > 1 else [st]
    for col, (run, at_step) in zip(columns, sides):
        if len(sides) > 1:
            col.markdown(f"**{run.name}** at step {at_step}")
        _show_patterns(run, at_step, example, container=col, curves=curves, domain=domain)
    st.caption("Rows: query positions; columns: key positions, each named by its role in the task "
               "(x: item and its class c, ℓ: its label, query); the query row is outlined. Hover a cell: its "
               "query row and key column stand out. Beneath each head: its induction and previous-token "
               "scores over training, the dotted rule at the checkpoint shown.")


def _curves_of(info, root: str, stamp: tuple[int, ...], panels: list[list[str]], *, log_y: bool = False, marks=None,
               width: int = charts.PANEL_WIDTH) -> None:
    """One run's panels, in the run's colour, with the axis its task counts in."""
    curves = _curves([info], root, (info.name,), stamp)
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


def page_grokking(infos, root: str, stamp: tuple[int, ...]) -> None:
    st.header("Grokking & RFM")
    grok = [i for i in infos if i.task == "modular"]
    rfm = [i for i in infos if i.task == "rfm"]
    if not grok and not rfm:
        st.info("No modular-arithmetic or RFM runs in this directory.")
        return
    if grok:
        info = _one_run(grok, "transformer run", "grok-run")
        marks = explore.grokking_marks(info)
        st.subheader("Progress measures (Nanda et al. 2023)")
        if not marks.height:
            st.caption("Neither s₁ (train accuracy 1) nor s₂ (test accuracy ≥ 0.95) was reached.")
        _curves_of(info, root, stamp, [["train_accuracy", "test_accuracy"]], marks=marks)
        _curves_of(info, root, stamp, [["train_loss", "test_loss", "restricted_loss", "excluded_loss"]], log_y=True, marks=marks)
        _curves_of(info, root, stamp, [["gini_embedding", "gini_neuron_logit"], ["weight_norm"]], marks=marks)
        spectrum = explore.fourier_spectrum(info)
        if spectrum.height:
            frequencies = sorted(set(spectrum["frequency"].to_list()))
            chart = alt.Chart(spectrum.to_pandas(), title="embedding Fourier norm per frequency").mark_rect().encode(
                x=alt.X("step:O", title="step"),
                y=alt.Y("frequency:O", title="frequency k", sort=frequencies, axis=alt.Axis(labelOverlap=False, values=frequencies)),
                color=alt.Color("norm:Q", scale=alt.Scale(scheme="viridis")), tooltip=["step", "frequency", "norm"])
            st.altair_chart(chart.properties(height=alt.Step(16)), width="stretch")
            download(spectrum, "fourier_spectrum", "fourier")
    if rfm:
        st.subheader("Recursive feature machine")
        info = _one_run(rfm, "RFM run", "rfm-run")
        steps = explore.checkpoints(info)
        if steps:
            c1, c2 = st.columns(2)
            step = _step_slider("iteration", steps, "rfm-step", steps[-1], c1)
            mask = c2.checkbox("mask the diagonal (its large entries otherwise take the colour range)", value=True, key="rfm-mask")
            try:
                M = explore.feature_matrix(info, step)
            except RunError as err:
                st.error(f"No feature matrix for {info.name} at iteration {step}: {err}")
                return
            left, right = st.columns(2)
            p = M.shape[0] // 2  # inputs are one-hot a then one-hot b
            labels = [f"a{i}" for i in range(p)] + [f"b{i}" for i in range(p)] if M.shape[0] == 2 * p else list(range(M.shape[0]))
            low, high = explore.robust_range(M, mask)
            heat = charts.heatmap(M, labels, labels, f"feature matrix M at iteration {step}", x_title="input feature",
                                  y_title="input feature", scheme="viridis", domain=[low, high], mask_diagonal=mask)
            left.altair_chart(heat.properties(height=420), width="stretch")
            left.caption(f"Colour range: 1st to 99th percentile {'off the diagonal' if mask else 'of all entries'} ({low:.3g} to {high:.3g}).")
            with right:
                _curves_of(info, root, stamp, [["train_accuracy", "test_accuracy"], ["circulant_deviation", "agop_alignment"]], width=300)


def _compare(names: list[str], what: str) -> None:
    """Put these runs in the comparison the other pages draw (Phase changes starts from it)."""
    st.session_state["compare"] = names
    st.success(f"Comparing {len(names)} runs ({what}) on Phase changes: {', '.join(names)}")


def _pick_table(root: str, file: str, label: str, key: str, read, hint: str) -> tuple[Path, pl.DataFrame] | None:
    """(folder, read(folder)) for a folder under root holding `file`, picked by the user; None,
    with a message, when there is none or its table cannot be read."""
    found, gave_up = _find_tables(root)
    if gave_up:
        st.error(gave_up)
        return None
    folders = {str(Path(f).relative_to(root)): Path(f) for f in found.get(file, [])}
    if not folders:
        st.info(f"No {label} under {root} (a folder holding {file}). {hint}")
        return None
    folder = folders[st.selectbox(label, list(folders), key=key)]
    try:
        return folder, read(folder)
    except RunError as err:
        st.error(f"This {label} cannot be shown: {err}")
        return None


def _phase_diagrams(table: pl.DataFrame, metrics: list[str], axes: list[str], x_axis: str, y_axis: str | None):
    """One heatmap per metric, side by side, two to a row: (the cells, as tables.phase_diagram
    gives them, and the (x, y) of each cell clicked in any of them); (None, []) for no metric."""
    rest = [a for a in axes if a not in (x_axis, y_axis)]
    ys, xs = tables.axis_values(table, y_axis) if y_axis else ["all"], tables.axis_values(table, x_axis)
    cells, clicked = None, []
    columns = st.columns(2) if len(metrics) > 1 else [st]
    for i, metric in enumerate(metrics):
        cells = tables.phase_diagram(table, metric, x_axis, y_axis)
        grid = lambda column: cells[column].cast(pl.Float64).to_numpy().reshape(len(ys), len(xs))  # noqa: E731
        chart = charts.heatmap(grid("mean"), xs, ys, f"{metric.removeprefix('final.')}, mean over {', '.join(rest) or 'nothing'}",
                               x_title=x_axis, y_title=y_axis or "", scheme="blues", domain=[0.0, 1.0] if metric.endswith("accuracy") else None,
                               text=True, details={"seeds": grid("seeds"), "sd": grid("sd")}, select="cell")
        event = columns[i % len(columns)].altair_chart(chart.properties(height=alt.Step(40)), width="stretch",
                                                       on_select="rerun", key=f"sweep-heat-{metric}")
        clicked += [(str(c.get("x")), str(c.get("y"))) for c in (event or {}).get("selection", {}).get("cell") or []]
    return cells, clicked


def page_sweeps(infos, root: str) -> None:
    st.header("Sweeps")
    picked = _pick_table(root, tables.SWEEP_TABLE, "sweep", "sweep", tables.read_sweep_table,
                         f"Run one with `icl-lab sweep SPEC.toml --out {root}/NAME`.")
    if picked is None:
        return
    folder, table = picked
    counts = dict(table.group_by("status").len().iter_rows())
    for col, state in zip(st.columns(len(MEMBER_STATES)), MEMBER_STATES):
        col.metric(state, counts.get(state, 0))
    for run, error in tables.failed_members(table):
        st.warning(f"{run} failed: {error}")
    axes, metrics = tables.sweep_axes(table), tables.sweep_metrics(table)
    if not axes or not metrics:
        st.info("Nothing to draw yet: " + ("the sweep has no axes." if not axes else "no member has finished (no final.* column)."))
        return
    swept = [a for a in axes if a != "seed"] or axes
    c1, c2, c3 = st.columns([1, 1, 2])
    _choice("sweep-x", axes, swept[0])
    x_axis = c1.selectbox("x axis", axes, key="sweep-x")
    y_options = [a for a in axes if a != x_axis] + [NO_Y_AXIS]
    _choice("sweep-y", y_options, next((a for a in swept if a != x_axis), NO_Y_AXIS))
    y_axis = c2.selectbox("y axis", y_options, key="sweep-y")
    y_axis = None if y_axis == NO_Y_AXIS else y_axis
    _keep_valid("sweep-metrics", metrics, [m for m in ("final.icl_accuracy", "final.iwl_accuracy") if m in metrics] or metrics[:1])
    shown = c3.multiselect("final metrics (one heatmap each)", metrics, key="sweep-metrics")
    cells, clicked = _phase_diagrams(table, shown, axes, x_axis, y_axis)
    if cells is None:
        st.info("Choose a final metric to draw.")
        return
    st.caption("Each cell: the mean over the members that finished (seeds and sd in the tooltip). "
               "Click a cell to compare its runs, or pick it below.")
    keys = list(cells.select("x", "y").iter_rows())
    labels = [f"{x_axis}={x}" + (f", {y_axis}={y}" if y_axis else "") for x, y in keys]
    click = next((labels[keys.index(k)] for k in clicked if k in keys), None)
    fresh_click = click is not None and click != st.session_state.get("sweep-clicked")
    st.session_state["sweep-clicked"] = click
    if fresh_click:  # a newly clicked cell is chosen below, and its runs compared at once
        st.session_state["sweep-cell"] = click
    _choice("sweep-cell", labels, labels[0])
    cell = cells.row(labels.index(st.selectbox("cell", labels, key="sweep-cell")), named=True)
    members = table.filter(pl.col("run").is_in(cell["runs"] or []))
    run_names = {i.name for i in infos}
    dirs = [str(d.relative_to(root)) for d in tables.sweep_member_dirs(folder, members["run"].to_list())]
    members = members.with_columns(pl.Series("run directory", dirs))
    st.dataframe(members.select("run", "status", *shown, "run directory").to_pandas(), hide_index=True, key="sweep-members")
    found = [d for d in dirs if d in run_names]
    if st.button(f"compare these {len(found)} runs on Phase changes", key="sweep-compare", disabled=not found) or (fresh_click and found):
        _compare(found, st.session_state["sweep-cell"])
    download(table, "sweep", "sweep")


def page_clamps(infos, root: str) -> None:
    st.header("Clamp conditions")
    hint = f"Make one with `icl-lab experiment singh-clamps --out {root}/NAME`."
    if (found := _pick_table(root, tables.CLAMP_TABLE, "experiment", "clamp-table", tables.read_clamp_table, hint)) is None:
        return
    folder, table = found[0], tables.clamp_summary(found[1])
    st.dataframe(table.to_pandas(), hide_index=True, key="clamp-conditions",
                 column_config={"ratio to baseline": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Transition: mean ± sd over the seeds where one was found. Ratio: this condition's mean "
               "transition (in training sequences) over its baseline's; the baselines come first.")
    download(table, "clamp_conditions", "clamps")
    conditions = table["condition"].to_list()
    picked = st.multiselect("conditions to overlay on Phase changes", conditions, key="clamp-pick")
    run_dirs = [i.path for i in infos]
    runs = [str(d.relative_to(root)) for c in picked for d in tables.condition_runs(folder, c, run_dirs)]
    if st.button(f"overlay these {len(runs)} runs on Phase changes", key="clamp-overlay", disabled=not runs):
        _compare(runs, ", ".join(picked))
        st.caption("Tick “mean ± sd over seeds” there to draw one band per condition.")


def main() -> None:
    st.sidebar.title("icl-lab explorer")
    root = st.sidebar.text_input("runs directory", explore.default_root(), key="root")
    asked = st.query_params.get("page", PAGES[0])  # pages are linkable: ?page=Phase+changes
    page = st.sidebar.radio("page", PAGES, index=PAGES.index(asked) if asked in PAGES else 0, key="page")
    if st.sidebar.button("rescan for runs", key="rescan"):
        _find.clear()
        _find_tables.clear()
    st.sidebar.caption(f"Runs are looked for at most {explore.SCAN_MAX_DEPTH} folders below this directory.")
    if not Path(root).exists():
        st.warning(f"The runs directory {root} does not exist. Train a run (`icl-lab train bursty`) or choose another directory.")
        return
    run_dirs, gave_up = _find(root)
    if gave_up:
        st.error(gave_up)
        return
    stamp = explore.run_stamp([Path(d) for d in run_dirs])
    infos = _scan(root, tuple(run_dirs), stamp)
    if not infos:
        st.info(f"No runs in {root} yet. Train one with `icl-lab train bursty --out {root}/first`.")
        return
    table = explore.runs_table(infos)
    try:
        if page == "Runs":
            page_runs(infos, table)
        elif page == "Phase changes":
            page_phase_changes(infos, root, stamp)
        elif page == "Ablations":
            page_ablations(infos, stamp)
        elif page == "Attention patterns":
            page_attention(infos, root, stamp)
        elif page == "Grokking & RFM":
            page_grokking(infos, root, stamp)
        elif page == "Sweeps":
            page_sweeps(infos, root)
        else:
            page_clamps(infos, root)
    except Exception as err:  # a page must explain, not crash: the message here, the traceback in the console
        traceback.print_exc()
        st.error(f"This page could not be drawn from {root}: {type(err).__name__}: {err}")


main()
