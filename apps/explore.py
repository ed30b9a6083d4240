"""icl-lab explorer: `streamlit run apps/explore.py`.

Reads the run store only (runs directory chosen in the sidebar; default $ICL_LAB_RUNS or
runs/). Pages: Runs, Phase changes, Ablations, Attention patterns, Grokking & RFM.
"""

from __future__ import annotations

import io
import traceback
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl
import streamlit as st

from icl_lab import explore
from icl_lab.config import ConfigError
from icl_lab.store import RunError

PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns", "Grokking & RFM")
RESCAN_SECONDS = 10  # new run directories appear within this long (the rescan button: at once)

st.set_page_config(page_title="icl-lab explorer", layout="wide")


@st.cache_data(show_spinner="Looking for runs…", ttl=RESCAN_SECONDS)
def _find(root: str) -> tuple[list[str], str | None]:
    """(run directories under root, None), or ([], why) when the bounded scan gave up."""
    try:
        return [str(p) for p in explore.find_runs(root)], None
    except RunError as err:
        return [], str(err)


@st.cache_data(show_spinner=False)
def _scan(root: str, run_dirs: tuple[str, ...], stamp: tuple[int, ...]) -> list[explore.RunInfo]:
    return [explore.read_run(Path(d), Path(root)) for d in run_dirs]


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
    st.dataframe(shown.to_pandas(), width="stretch", hide_index=True)
    download(shown, "runs", "runs")
    for info in infos:
        if info.state == "running":
            st.info(f"{info.name} is still running: its curves show what it has written so far.")
        if info.state == "failed":
            lines = (info.error or "").strip().splitlines()
            st.warning(f"{info.name} failed: {lines[-1] if lines else 'no error text'}")
        for problem in info.problems:
            st.error(f"{info.name} is corrupt: {problem}")


def _selected(infos) -> list:
    names = [i.name for i in infos]
    default = st.session_state.get("selected") or names[:12]
    chosen = st.sidebar.multiselect("runs to compare", names, default=[n for n in default if n in names], key="selected")
    return [i for i in infos if i.name in chosen]


def page_phase_changes(infos, root: str, stamp: tuple[int, ...]) -> None:
    st.header("Phase changes")
    chosen = _selected(infos)
    if not chosen:
        st.info("Select one or more runs in the sidebar.")
        return
    for info in chosen:
        if info.problems:
            st.warning(f"{info.name} is corrupt ({info.problems[0]}): what can be read of it is shown.")
    curves = _curves(chosen, root, tuple(i.name for i in chosen), stamp)
    if curves.height == 0:
        st.info("The selected runs have no readable metrics yet.")
        return
    names = explore.metric_names(curves)
    preferred = [m for m in ("icl_accuracy", "iwl_accuracy", "test_accuracy", "train_accuracy", "train_loss") if m in names]
    metrics = st.multiselect("measures", names, default=preferred[:3] or names[:2], key="metrics")
    c1, c2 = st.columns(2)
    log_x = c1.checkbox("log step axis", key="logx")
    by_condition = c2.checkbox("mean ± sd over seeds (group runs by condition)", key="bands")
    marks = explore.transition_marks(chosen)
    x = alt.X("step:Q", scale=alt.Scale(type="symlog") if log_x else alt.Scale())
    for metric in metrics:
        data = curves.filter(pl.col("metric") == metric)
        if by_condition:
            bands = explore.condition_bands(data)
            base = alt.Chart(bands.to_pandas())
            chart = base.mark_area(opacity=0.2).encode(x=x, y="low:Q", y2="high:Q", color="condition:N") + base.mark_line().encode(x=x, y=alt.Y("mean:Q", title=metric), color="condition:N")
        else:
            chart = alt.Chart(data.to_pandas()).mark_line().encode(x=x, y=alt.Y("value:Q", title=metric), color="run:N", tooltip=["run", "step", "value"])
        rules = marks.filter(pl.col("metric") == metric)
        if rules.height:
            chart = chart + alt.Chart(rules.to_pandas()).mark_rule(strokeDash=[4, 4]).encode(x="step:Q", color="run:N", tooltip=["run", "step"])
        st.subheader(metric)
        st.altair_chart(chart.properties(height=260), width="stretch")
    st.caption("Dashed rules: detected transition steps (icl_lab.phases).")
    download(curves.filter(pl.col("metric").is_in(metrics)), "curves", "curves")


def _one_run(infos, label: str, key: str, predicate=None):
    options = [i for i in infos if predicate is None or predicate(i)]
    if not options:
        return None
    names = [i.name for i in options]
    name = st.selectbox(label, names, key=key)
    return options[names.index(name)]


def _heatmap(values: np.ndarray, x_labels, y_labels, title: str, scheme: str = "blues") -> alt.Chart:
    rows = [{"key": str(x_labels[j]), "query": str(y_labels[i]), "i": i, "j": j, "value": float(values[i, j])}
            for i in range(values.shape[0]) for j in range(values.shape[1])]
    frame = pl.DataFrame(rows).to_pandas()
    return alt.Chart(frame, title=title).mark_rect().encode(
        x=alt.X("key:N", sort=list(map(str, x_labels)), title=None),
        y=alt.Y("query:N", sort=list(map(str, y_labels)), title=None),
        color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme)),
        tooltip=["query", "key", alt.Tooltip("value:Q", format=".3f")],
    )


def _show_patterns(info, step: int, example: int, heads: list[tuple[int, int]] | None = None) -> None:
    try:
        patterns, labels = explore.attention_patterns(info, step, example)
    except ConfigError as err:  # RunError included: a corrupt config or checkpoint of this run
        st.error(f"No attention patterns for {info.name} at step {step}: {err}")
        return
    for layer, pattern in patterns.items():
        cols = st.columns(pattern.shape[0])
        for h in range(pattern.shape[0]):
            if heads is not None and (layer, h) not in heads:
                continue
            cols[h].altair_chart(_heatmap(pattern[h], labels, labels, f"L{layer}H{h}").properties(height=320), width="stretch")


def page_ablations(infos) -> None:
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
    metric = st.selectbox("metric", sorted(table["metric"].unique().to_list()), key="abl-metric")
    sub = table.filter(pl.col("metric") == metric)
    layers = sorted(set(sub["layer"].to_list()))
    components = list(dict.fromkeys(sub["component"].to_list()))  # in scan order
    grid = np.zeros((len(layers), len(components)))
    for r in sub.iter_rows(named=True):
        grid[layers.index(r["layer"]), components.index(r["component"])] = r["delta"]
    what = "patched in from the clean run" if name.startswith("patch_") else "ablated"
    st.altair_chart(_heatmap(grid, components, [f"L{l}" for l in layers], f"Δ {metric} when the component is {what}", "redblue").properties(height=80 * len(layers)), width="stretch")
    download(sub, name, "abl")
    heads = [f"L{l}{c}" for l in layers for c in components if c.startswith("H")]
    steps = explore.checkpoints(info)
    if heads and steps:
        pick = st.selectbox("see a head's attention pattern", heads, key="abl-head")
        layer, head = int(pick[1 : pick.index("H")]), int(pick[pick.index("H") + 1 :])
        _show_patterns(info, steps[-1], 0, heads=[(layer, head)])


def page_attention(infos) -> None:
    st.header("Attention patterns")
    info = _one_run(infos, "run", "att-run", lambda i: i.task not in ("rfm", "digits", "?") and explore.checkpoints(i))
    if info is None:
        st.info("No transformer run with checkpoints in this directory.")
        return
    steps = explore.checkpoints(info)
    step = st.select_slider("checkpoint step", steps, value=steps[-1], key="att-step")
    example = st.number_input("example sequence (evaluation set index)", 0, 10_000, 0, key="att-example")
    _show_patterns(info, int(step), int(example))
    st.caption("Rows: query positions; columns: key positions, labelled with the task's roles.")


def page_grokking(infos) -> None:
    st.header("Grokking & RFM")
    grok = [i for i in infos if i.task == "modular"]
    rfm = [i for i in infos if i.task == "rfm"]
    if not grok and not rfm:
        st.info("No modular-arithmetic or RFM runs in this directory.")
        return
    if grok:
        info = _one_run(grok, "transformer run", "grok-run")
        spectrum = explore.fourier_spectrum(info)
        if spectrum.height:
            chart = alt.Chart(spectrum.to_pandas(), title="embedding Fourier norm per frequency").mark_rect().encode(
                x="step:O", y="frequency:O", color=alt.Color("norm:Q", scale=alt.Scale(scheme="viridis")), tooltip=["step", "frequency", "norm"])
            st.altair_chart(chart.properties(height=360), width="stretch")
            download(spectrum, "fourier_spectrum", "fourier")
    if rfm:
        info = _one_run(rfm, "RFM run", "rfm-run")
        steps = explore.checkpoints(info)
        if steps:
            step = st.select_slider("iteration", steps, value=steps[-1], key="rfm-step")
            try:
                M = explore.feature_matrix(info, int(step))
            except RunError as err:
                st.error(f"No feature matrix for {info.name} at iteration {step}: {err}")
                return
            left, right = st.columns(2)
            p = M.shape[0] // 2  # inputs are one-hot a then one-hot b
            labels = [f"a{i}" for i in range(p)] + [f"b{i}" for i in range(p)] if M.shape[0] == 2 * p else list(range(M.shape[0]))
            left.altair_chart(_heatmap(M, labels, labels, f"feature matrix M at iteration {step}", "viridis").properties(height=420), width="stretch")
            acc = explore.load_curves([info], ["test_accuracy", "train_accuracy", "circulant_deviation"])
            right.altair_chart(alt.Chart(acc.to_pandas()).mark_line(point=True).encode(x="step:Q", y="value:Q", color="metric:N").properties(height=420), width="stretch")


def main() -> None:
    st.sidebar.title("icl-lab explorer")
    root = st.sidebar.text_input("runs directory", explore.default_root(), key="root")
    asked = st.query_params.get("page", PAGES[0])  # pages are linkable: ?page=Phase+changes
    page = st.sidebar.radio("page", PAGES, index=PAGES.index(asked) if asked in PAGES else 0, key="page")
    if st.sidebar.button("rescan for runs", key="rescan"):
        _find.clear()
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
            page_ablations(infos)
        elif page == "Attention patterns":
            page_attention(infos)
        else:
            page_grokking(infos)
    except Exception as err:  # a page must explain, not crash: the message here, the traceback in the console
        traceback.print_exc()
        st.error(f"This page could not be drawn from {root}: {type(err).__name__}: {err}")


main()
