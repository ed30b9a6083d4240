"""The explorer's first view over a store of many runs, and its readings: the default task and
panels, bands over seeds (not over repeated runs of one seed) clipped to a metric's range, the
Runs table's leading columns, thinned matrix ticks, sweep cells coloured by transition steps,
and a running run's curves redrawn while it trains. The runs are written with the store's
RunWriter (no training), so every test here is fast."""

import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import streamlit as st
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.store import RunWriter, paths

APP = str(Path(__file__).resolve().parent.parent / "apps" / "explore.py")
CLAMP = [{"hook": "blocks.1.attn.hook_pattern", "heads": [0], "target": "induction"}]


def write_run(root: Path, name: str, task: str, seed: int, curves: dict[str, list[float]], *, lr: float = 1e-3,
              interventions=(), track=("icl_accuracy",), state: str = "done", every: int = 10) -> Path:
    """A run as train() leaves it: config, metrics (curves[metric][i] at step i * every), summary, status."""
    record = {"task": task, "preset": "small", "seed": seed, "interventions": list(interventions), "track": list(track),
              "train": {"lr": lr, "steps": every * (len(next(iter(curves.values()))) - 1)}}
    writer = RunWriter.create(root / name, record, verb="test")
    for i in range(len(next(iter(curves.values())))):
        writer.add_metrics(i * every, {m: v[i] for m, v in curves.items()})
    writer.flush_metrics()
    writer.write_summary({"final": {m: v[-1] for m, v in curves.items()}, "transitions": {}})
    if state != "running":
        writer.set_status(state)
    writer.close()
    return root / name


def open_page(root: Path, page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["root"] = str(root)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def chart_data(at, index: int = 0, column: str = "value"):
    """The rows a chart draws (every panel's), those holding `column`."""
    import pandas as pd

    frames = [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in at.get("vega_lite_chart")[index].proto.datasets]
    return pd.concat([f for f in frames if column in f and "kind" not in f], ignore_index=True)


@pytest.fixture
def mixed(tmp_path):
    """2 digits runs (alphabetically first), 5 bursty: seeds 0 (twice: a repeated run), 1, 2 plain, and 2 clamped."""
    digits = {"train_accuracy": [0.1, 0.5, 0.9], "test_accuracy": [0.1, 0.4, 0.8], "train_loss": [2.0, 1.0, 0.5]}
    for seed in (0, 1):
        write_run(tmp_path, f"a-digits-s{seed}", "digits", seed, digits, track=("test_accuracy",))
    write_run(tmp_path, "bursty-s0-old", "bursty", 0, {"icl_accuracy": [0.0, 0.0, 0.0], "train_loss": [3.0, 3.0, 3.0]})
    time.sleep(0.02)
    write_run(tmp_path, "bursty-s0-new", "bursty", 0, {"icl_accuracy": [0.1, 0.6, 0.9], "train_loss": [3.0, 0.2, 0.01]})
    write_run(tmp_path, "bursty-s1", "bursty", 1, {"icl_accuracy": [0.1, 0.2, 0.7], "train_loss": [3.0, 2.0, 0.05]})
    old = paths(tmp_path / "bursty-s0-old")
    os.utime(old.metrics, (1, 1))  # written long before: the older of the two seed-0 runs
    os.utime(old.status, (1, 1))
    for seed in (0, 1):
        write_run(tmp_path, f"bursty-clamped-s{seed}", "bursty", seed, {"icl_accuracy": [0.1, 0.9, 1.0], "train_loss": [3.0, 0.1, 0.0]},
                  interventions=CLAMP, lr=2e-3)
    return tmp_path


def test_the_first_view_opens_on_the_task_with_most_runs_and_its_tracked_metric(mixed):
    at = open_page(mixed, "Phase changes")
    selected = at.sidebar.multiselect(key="selected").value
    assert selected and {n.split("-")[0] for n in selected} == {"bursty"}  # 5 bursty runs against 2 digits ones
    assert {"bursty-s1", "bursty-clamped-s1"} <= set(selected)  # plain and clamped alike
    assert at.radio(key="phase-task").value == "bursty"
    assert at.multiselect(key="panel-0").value == ["icl_accuracy"]  # bursty's tracked metric, panel 1


def test_switching_task_opens_the_tasks_own_panels_never_an_empty_one(mixed):
    everything = sorted(p.name for p in mixed.iterdir())
    at = open_page(mixed, "Phase changes", selected=everything)
    assert at.radio(key="phase-task").value == "bursty"  # 5 runs of 7, though "digits" sorts first
    at.radio(key="phase-task").set_value("digits").run()
    assert at.multiselect(key="panel-0").value == ["test_accuracy", "train_accuracy"]  # its tracked metric first
    assert at.multiselect(key="panel-1").value == ["train_loss"]
    at.radio(key="phase-task").set_value("bursty").run()
    assert at.multiselect(key="panel-0").value == ["icl_accuracy"] and len(at.get("vega_lite_chart")) == 1


def test_bands_are_over_seeds_newest_run_of_a_seed_kept_and_clipped_to_the_metrics_range(mixed):
    at = open_page(mixed, "Phase changes", selected=["bursty-s0-old", "bursty-s0-new", "bursty-s1"])
    at.multiselect(key="panel-0").set_value(["icl_accuracy"])
    at.multiselect(key="panel-1").set_value(["train_loss"])
    at.checkbox(key="bands").check().run()
    bands = chart_data(at, column="mean")
    loss = bands[bands["metric"] == "train_loss"].sort_values("step")
    new, seed1 = np.array([3.0, 0.2, 0.01]), np.array([3.0, 2.0, 0.05])  # seed 0's newer run and seed 1; the old run left out
    assert list(loss["mean"]) == pytest.approx((new + seed1) / 2)
    sd = np.std([new, seed1], axis=0, ddof=1)
    assert list(loss["low"]) == pytest.approx(np.maximum((new + seed1) / 2 - sd, 0.0))  # a loss band never dips below 0
    assert ((new + seed1) / 2 - sd)[1] < 0 and loss["low"].min() >= 0  # it would have, unclipped
    accuracy = bands[bands["metric"] == "icl_accuracy"]
    assert accuracy["high"].max() <= 1.0 and accuracy["low"].min() >= 0.0
    notes = " ".join(c.value for c in at.caption)
    assert "2 seeds (0, 1)" in notes and "bursty-s0-old" in notes and "1 repeated run" in notes


def test_runs_table_leads_with_what_tells_runs_apart(mixed):
    at = open_page(mixed, "Runs")
    frame = at.dataframe[0]
    order = list(frame.proto.column_order)
    assert order[:4] == ["run", "interventions", "transitions", "train.lr"]  # lr varies among the bursty runs
    # (its height, 25 rows before it scrolls, is not in what AppTest exposes: the browser screenshots show it)
    shown = frame.value.set_index("run")
    assert shown.loc["bursty-s1", "interventions"] == "none" and "induction" in shown.loc["bursty-clamped-s0", "interventions"]


def test_a_large_matrix_labels_a_readable_number_of_ticks():
    labels = [f"f{i}" for i in range(122)]  # an RFM matrix on p = 61: 2p input features
    kept = charts.thinned_labels(labels, charts.MAX_TICK_LABELS)
    assert len(kept) <= charts.MAX_TICK_LABELS and kept[0] == "f0" and kept == labels[:: -(-122 // charts.MAX_TICK_LABELS)]
    chart = charts.heatmap(np.zeros((2, 122)), labels, ["a", "b"], "M", x_title="x", y_title="y").to_dict()
    assert chart["layer"][0]["encoding"]["x"]["axis"]["values"] == kept
    small = labels[: charts.MAX_TICK_LABELS]
    assert charts.thinned_labels(small, charts.MAX_TICK_LABELS) == small  # a small one keeps every label


def test_sweep_cells_can_be_coloured_by_transition_steps(tmp_path):
    rows = [{"run": f"c={c}-seed={s}", "axis.c": c, "axis.seed": str(s), "status": "done", "error": "",
             "final.icl_accuracy": 0.5, "transition.icl_accuracy": step}
            for c, steps in (("none", (100, 140)), ("clamp", (40, 60))) for s, step in enumerate(steps)]
    (tmp_path / "grid").mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / "grid" / "sweep.parquet")
    write_run(tmp_path, "a-run", "bursty", 0, {"icl_accuracy": [0.1, 0.2]})  # the app needs a run to open
    at = open_page(tmp_path, "Sweeps")
    assert "icl_accuracy transition step" in at.multiselect(key="sweep-metrics").options
    at.multiselect(key="sweep-metrics").set_value(["transition.icl_accuracy"]).run()
    cells = chart_data(at).set_index("x")
    assert cells.loc["none", "value"] == pytest.approx(120) and cells.loc["clamp", "value"] == pytest.approx(50)
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["layer"][0]["encoding"]["color"]["title"] == "icl_accuracy transition step"


def test_a_running_runs_curves_are_redrawn_while_it_trains_and_stop_when_it_ends(tmp_path, monkeypatch):
    asked = []
    fragment = st.fragment

    def recording(func=None, *, run_every=None, **kwargs):  # what the page asks Streamlit for, then Streamlit's own
        asked.append(run_every)
        return fragment(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(st, "fragment", recording)
    run = write_run(tmp_path, "live", "bursty", 0, {"icl_accuracy": [0.1, 0.2, 0.3]}, state="running")
    at = open_page(tmp_path, "Phase changes")
    assert chart_data(at)["step"].max() == 20 and asked[-1] == 3  # refreshed every 3 s
    assert "Live: live still running, at training step 20" in " ".join(c.value for c in at.caption)
    # the run writes two more evaluations, as train() flushes them; the open page is run again (no new session)
    metrics = pl.read_parquet(paths(run).metrics)
    more = pl.DataFrame({"step": [30, 40], "metric": ["icl_accuracy"] * 2, "value": [0.6, 0.9]}, schema=metrics.schema)
    pl.concat([metrics, more]).write_parquet(paths(run).metrics)
    at.run()
    drawn = chart_data(at)
    assert list(drawn.sort_values("step")["value"]) == pytest.approx([0.1, 0.2, 0.3, 0.6, 0.9]) and asked[-1] == 3
    paths(run).status.write_text(json.dumps({"state": "done", "error": None}))
    at.run()
    assert asked[-1] is None and "Live:" not in " ".join(c.value for c in at.caption)  # ended: no more redraws


def test_a_tasks_default_panels_follow_what_it_declares():
    from icl_lab.tasks import TASKS

    pairs = explore.declarations_of({"task": "pairs"})
    assert pairs.watched == tuple(TASKS["pairs"].task_class.transition_readings)  # its transition readings: train_loss, icl_accuracy
    modular = explore.declarations_of({"task": "modular"})
    assert set(modular.watched) == {m.metric for m in TASKS["modular"].task_class.milestones}  # s₁, s₂: train and test accuracy
    names = ["eval_loss", "icl_accuracy", "iwl_accuracy", "lr", "train_loss", "weight_norm"]
    assert explore.default_panels(names, pairs.watched) == [["icl_accuracy", "iwl_accuracy"], ["train_loss"]]
    assert explore.default_panels(names, ("weight_norm",)) == [["weight_norm"], ["icl_accuracy", "iwl_accuracy"], ["train_loss"]]
    assert explore.default_panels(["lr", "weight_norm"]) == [["lr", "weight_norm"]]  # no headline metric: the first two


def test_a_rise_that_falls_back_is_marked_in_the_curves_and_the_runs_table(tmp_path):
    from icl_lab import find_transience

    icl = [0.03, 0.2, 0.5, 0.5, 0.5, 0.45, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2]
    run = write_run(tmp_path, "bursty-transient", "bursty", 0, {"icl_accuracy": icl})
    steady = write_run(tmp_path, "bursty-steady", "bursty", 1, {"icl_accuracy": [0.03, 0.2, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]})
    for path in (run, steady):
        summary = json.loads(paths(path).summary.read_text())
        values = icl if path == run else [0.03, 0.2, 0.5] + [0.9] * 9
        summary["transience"] = {"icl_accuracy": find_transience([10 * i for i in range(len(values))], values).to_dict()}
        paths(path).summary.write_text(json.dumps(summary))
    infos = [explore.read_run(p, tmp_path) for p in (run, steady)]
    # peak at step 20 (0.5); the running median (window 3) is 0.45, 0.3, 0.2 at steps 50, 60, 70:
    # first below 0.5 − ½·0.47 = 0.265 at step 70
    assert infos[0].transience == {"icl_accuracy": (20, 70)}
    assert infos[1].transience == {} and not infos[1].problems
    marks = explore.transition_marks(infos)
    assert marks.select("run", "step", "kind").rows() == [
        ("bursty-transient", 20, "transience: peak"), ("bursty-transient", 70, "transience: half the gain lost")]
    table = explore.runs_table(infos)
    assert table.filter(pl.col("run") == "bursty-transient")["transitions"][0] == "icl_accuracy fell@70"
