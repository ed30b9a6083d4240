"""The explorer app, driven by Streamlit's AppTest on a store made by tiny real runs, some of
them then damaged the ways files get damaged (truncated, overwritten, foreign)."""

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from icl_lab import explore, get_preset
from icl_lab.ablate import ablation_scan, patching_scan
from icl_lab.measures import registry
from icl_lab.rfm import RFMConfig, run_rfm
from icl_lab.store import checkpoint_steps, paths
from icl_lab.train import train
from interventions import Intervention

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "apps" / "explore.py")
PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns", "Grokking & RFM", "Sweeps", "Clamp conditions")
GOOD = {"plain-s0", "plain-s1", "clamped-s0", "clamped-s1", "grok", "rfm", "running", "failed"}
# run name -> (file named in its problem, a word of the reason); each is a copy of a good run
# with one file damaged (see `damage`)
CORRUPT = {
    "config-list": ("config.json", "list"),
    "config-garbage": ("config.json", "JSON"),
    "config-truncated": ("config.json", "JSON"),
    "config-foreign": ("config.json", "seed"),
    "status-garbage": ("status.json", "JSON"),
    "summary-string": ("summary.json", "str"),
    "metrics-truncated": ("metrics.parquet", "metrics"),
    "metrics-garbage": ("metrics.parquet", "metrics"),
}
TINY_BURSTY = {
    "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32, "model.d_model": 16,
    "train.steps": 12, "train.eval_every": 4, "train.checkpoint_every": 6, "device": "cpu",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    base = get_preset("bursty", "small").config.with_overrides(TINY_BURSTY)
    for seed in (0, 1):
        train(base.with_overrides({"seed": seed}), root / f"plain-s{seed}", progress=False)
        clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")
        train(dataclasses.replace(base.with_overrides({"seed": seed}), interventions=(clamp,)), root / f"clamped-s{seed}", progress=False)
    ablation_scan(root / "plain-s0", kind="zero", over="heads", metrics=["context_label_accuracy", "icl_accuracy"])
    patching_scan(root / "plain-s0", over="positions")
    modular = get_preset("modular", "cpu").config.with_overrides({"task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 10, "train.eval_every": 5, "train.checkpoint_every": 5, "device": "cpu"})
    train(modular, root / "grok", progress=False)
    run_rfm(RFMConfig(p=11, iters=3, device="cpu"), root / "rfm", progress=False)
    # a run still running: a real run whose status says so
    shutil.copytree(root / "plain-s1", root / "running")
    (root / "running" / "status.json").write_text(json.dumps({"state": "running", "error": None}))
    # a failed run: a real run whose measure raised mid-way
    original = registry.MEASURES["icl_accuracy"]
    calls = {"n": 0}

    def flaky(model, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("measure exploded")
        return original.fn(model, data)

    registry.MEASURES["icl_accuracy"] = dataclasses.replace(original, fn=flaky)
    try:
        with pytest.raises(RuntimeError):
            train(base, root / "failed", progress=False)
    finally:
        registry.MEASURES["icl_accuracy"] = original
    damage(root)
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage(root: Path) -> None:
    """Copies of good runs, each with one file damaged."""
    for name in [*CORRUPT, "checkpoint-truncated", "table-garbage"]:
        shutil.copytree(root / "plain-s0", root / name)
    p = {name: paths(root / name) for name in [*CORRUPT, "checkpoint-truncated", "table-garbage"]}
    p["config-list"].config.write_text("[1, 2, 3]")
    p["config-garbage"].config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff not json")
    truncate(p["config-truncated"].config)
    config = json.loads(p["config-foreign"].config.read_text())
    p["config-foreign"].config.write_text(json.dumps({**config, "seed": "zero", "interventions": "none"}))
    p["status-garbage"].status.write_text("state = done")
    p["summary-string"].summary.write_text('"finished fine"')
    truncate(p["metrics-truncated"].metrics)
    p["metrics-garbage"].metrics.write_bytes(b"not a parquet file")
    for step in (6, 12):
        truncate(p["checkpoint-truncated"].weights(step))
    for table in p["table-garbage"].ablation_tables().values():
        table.write_bytes(b"PAR1 not really")
    shutil.copytree(root / "rfm", root / "rfm-torn")
    for step in checkpoint_steps(root / "rfm-torn"):
        truncate(paths(root / "rfm-torn").weights(step))


def app(root, page=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["root"] = str(root)
    at.run()
    if page:
        at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def charts(at) -> list[str]:
    """The Vega-Lite specs of every chart on the page."""
    return [c.proto.spec for c in at.get("vega_lite_chart")]


def chart_runs(chart) -> set[str]:
    """The runs drawn in a chart, read from the data Streamlit sends with its spec."""
    frames = [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in chart.proto.datasets]
    return {run for frame in frames if "run" in frame for run in frame["run"]}


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


@pytest.mark.slow
def test_runs_page_lists_every_run_and_explains_the_odd_ones(store):
    at = app(store)
    frame = at.dataframe[0].value
    assert set(frame["run"]) == GOOD | set(CORRUPT) | {"checkpoint-truncated", "table-garbage", "rfm-torn"}
    status = dict(zip(frame["run"], frame["status"]))
    problems = dict(zip(frame["run"], frame["problems"]))
    assert status["running"] == "running" and status["failed"] == "failed"
    assert all(status[name] == "done" and problems[name] == "" for name in GOOD - {"running", "failed"})
    assert "induction" in dict(zip(frame["run"], frame["interventions"]))["clamped-s0"]
    assert "still running" in texts(at.info)
    assert "measure exploded" in texts(at.warning)
    for name, (file, word) in CORRUPT.items():  # one line naming the damaged file and what is wrong
        assert status[name] == "corrupt", (name, problems[name])
        assert problems[name].startswith(f"{file}: ") and word in problems[name], (name, problems[name])
        assert f"{name} is corrupt: {file}: " in texts(at.error)
    # the damaged run keeps what could be read: the config of a run whose summary is a string
    assert dict(zip(frame["run"], frame["task"]))["summary-string"] == "bursty"
    at.multiselect(key="filter-task").set_value(["rfm"]).run()
    assert list(at.dataframe[0].value["run"]) == ["rfm", "rfm-torn"]


def test_runs_table_has_final_metrics_steps_wall_time_and_picks_runs_to_compare(store):
    at = app(store)
    frame = at.dataframe[0].value.set_index("run")
    summary = json.loads(paths(store / "plain-s0").summary.read_text())
    row = frame.loc["plain-s0"]
    assert row["steps"] == TINY_BURSTY["train.steps"] and row["wall time (s)"] == pytest.approx(summary["wall_seconds"])
    assert row["tracked"] == "icl_accuracy" and row["final tracked"] == pytest.approx(summary["final"]["icl_accuracy"])
    assert f"train_loss={summary['final']['train_loss']:.4g}" in row["final metrics"]
    clamp = json.loads(paths(store / "clamped-s0").config.read_text())["interventions"][0]
    assert clamp["hook"] in frame.loc["clamped-s0"]["interventions"]  # the whole text, not cut off
    assert clamp["hook"] in texts(at.markdown)  # and in full in the expander
    rows = list(at.dataframe[0].value["run"])
    at.session_state["runs-table"] = {"selection": {"rows": [rows.index("clamped-s1"), rows.index("grok")], "columns": []}}
    at.run()
    assert "Comparing 2 runs" in texts(at.success)
    at.sidebar.radio(key="page").set_value("Phase changes").run()
    assert at.sidebar.multiselect(key="selected").value == ["clamped-s1", "grok"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_beside_corrupt_runs(store, page):
    """Every page draws, with no page-level failure, whichever run a damaged one sits beside."""
    at = app(store, page)  # asserts that no exception escaped
    assert at.header[0].value == page and "could not be drawn" not in texts(at.error)


def test_phase_changes_page_draws_the_readable_runs_of_a_selection(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "metrics-truncated", "metrics-garbage", "config-list", "summary-string"]).run()
    at.multiselect(key="panel-0").set_value(["icl_accuracy"]).run()
    assert not at.exception and "could not be drawn" not in texts(at.error)
    (chart,) = at.get("vega_lite_chart")
    assert chart_runs(chart) == {"plain-s0", "summary-string"}  # unreadable metrics left out
    at.radio(key="phase-task").set_value("?").run()  # a run whose config is unreadable: its own group, drawn
    assert chart_runs(at.get("vega_lite_chart")[0]) == {"config-list"}
    warned = texts(at.warning)
    assert all(f"{name} is corrupt" in warned for name in ("metrics-truncated", "metrics-garbage", "config-list", "summary-string"))


def test_a_truncated_checkpoint_gives_a_message_on_the_attention_and_ablation_pages(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("checkpoint-truncated").run()
    assert not at.exception and not charts(at)
    assert "step_12.safetensors: not a readable safetensors file" in texts(at.error)
    at.selectbox(key="att-run").set_value("plain-s0").run()  # the next run draws again
    assert not at.exception and not at.error and len(charts(at)) == 8  # four patterns, each head's scores beneath
    at = app(store, "Ablations")
    at.selectbox(key="abl-run").set_value("checkpoint-truncated").run()
    assert not at.exception and len(charts(at)) == 1  # the table's heatmap; the head's pattern is a message
    assert "step_12.safetensors: not a readable safetensors file" in texts(at.error)


def test_an_unreadable_ablation_table_gives_a_message(store):
    at = app(store, "Ablations")
    at.selectbox(key="abl-run").set_value("table-garbage").run()
    assert not at.exception and not charts(at)
    assert "table-garbage is corrupt" in texts(at.error) and "heads_zero_step12.parquet: not a readable table" in texts(at.error)


def test_a_truncated_rfm_checkpoint_gives_a_message(store):
    at = app(store, "Grokking & RFM")
    at.selectbox(key="rfm-run").set_value("rfm-torn").run()
    assert not at.exception
    assert "No feature matrix for rfm-torn" in texts(at.error) and "not a readable safetensors file" in texts(at.error)
    assert len(charts(at)) == 4  # the grokking run's three curve charts and its spectrum are still drawn


def specs_of(at) -> list[dict]:
    return [json.loads(spec) for spec in charts(at)]


def views(spec: dict) -> list[dict]:
    """Every single view (a dict with an encoding) inside a layered or concatenated spec."""
    found = [spec] if "encoding" in spec else []
    for key in ("layer", "vconcat", "hconcat", "concat"):
        for child in spec.get(key, []):
            found += views(child)
    return found


def colours(spec: dict, field: str) -> list[dict[str, str]]:
    """name -> colour, one mapping per view that colours by `field` (from its explicit scale)."""
    encodings = [v["encoding"]["color"] for v in views(spec) if v["encoding"].get("color", {}).get("field") == field]
    return [dict(zip(e["scale"]["domain"], e["scale"]["range"])) for e in encodings]


def x_titles(spec: dict) -> set[str]:
    return {v["encoding"]["x"].get("title") for v in views(spec) if "x" in v["encoding"]}


def test_phase_changes_page_overlays_metrics_runs_and_bands(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "plain-s1", "clamped-s0", "clamped-s1", "metrics-garbage"]).run()
    assert not at.exception
    # W&B's default panels: the accuracies in one, the losses in another, several metrics each
    assert at.multiselect(key="panel-0").value == ["icl_accuracy", "iwl_accuracy"]
    assert at.multiselect(key="panel-1").value == ["train_loss", "icl_loss", "iwl_loss"]
    at.multiselect(key="panel-0").set_value(["icl_accuracy", "iwl_accuracy"]).run()
    at.multiselect(key="panel-1").set_value(["induction_score.L1H0"]).run()
    (spec,) = specs_of(at)
    first, second = spec["vconcat"]
    assert first["layer"][0]["title"] == "icl_accuracy · iwl_accuracy" and first["layer"][0]["encoding"]["y"]["title"] == "accuracy"
    assert second["layer"][0]["title"] == "induction_score.L1H0"
    assert chart_runs(at.get("vega_lite_chart")[0]) == {"plain-s0", "plain-s1", "clamped-s0", "clamped-s1"}
    # one hover parameter lifted to the top, bound to a view of each panel: the ruler moves in both
    (hover,) = spec["params"]
    assert hover["name"] == "hover" and len(hover["views"]) == 2
    at.checkbox(key="bands").check().run()
    assert not at.exception
    (spec,) = specs_of(at)
    assert '"low"' in json.dumps(spec) and not colours(spec, "run")  # runs are out of the legend in band mode
    maps = colours(spec, "condition")
    plain, clamped = sorted(maps[0])  # two conditions (plain, clamped), seeds pooled; one colour each everywhere
    assert plain == "bursty/small" and clamped.startswith("bursty/small [") and "induction" in clamped
    assert len(maps) >= 4 and all(m == maps[0] for m in maps)
    assert len(at.get("download_button")) == 2


def test_a_run_keeps_its_colour_across_panels_and_tasks(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "plain-s1", "clamped-s0", "grok"]).run()
    at.multiselect(key="panel-0").set_value(["icl_accuracy"]).run()
    at.multiselect(key="panel-1").set_value(["previous_token_score.L0H1", "train_loss"]).run()
    (spec,) = specs_of(at)
    maps = colours(spec, "run")
    assert len(maps) >= 4 and all(m == maps[0] for m in maps)  # every layer of every panel: one mapping
    expected = sorted(["plain-s0", "plain-s1", "clamped-s0", "grok"])  # domain: every chosen run, by name
    assert list(maps[0]) == expected and len(set(maps[0].values())) == 4
    at.radio(key="phase-task").set_value("modular").run()  # grok alone keeps the colour it had beside the others
    (spec,) = specs_of(at)
    assert all(m["grok"] == maps[0]["grok"] for m in colours(spec, "run"))
    legends = [v["encoding"]["color"]["legend"] for v in views(spec) if v["encoding"].get("color", {}).get("field") == "run"]
    assert {json.dumps(legend["values"]) for legend in legends} == {json.dumps(["grok"])}  # the legend lists only what is drawn
    assert {legend["orient"] for legend in legends} == {"bottom"}  # below the panels: never cut off at the right


def test_transition_rules_take_the_colour_scale_but_stay_out_of_the_legend():
    import polars as pl
    from icl_lab.explore import charts as app_charts

    curves = pl.DataFrame({"step": [0, 10, 100] * 2, "metric": ["icl_accuracy"] * 6, "value": [0.1, 0.5, 0.9, 0.1, 0.2, 0.8],
                           "run": ["a"] * 3 + ["b"] * 3, "condition": ["c1"] * 3 + ["c2"] * 3})
    rules = pl.DataFrame({"run": ["b"], "condition": ["c2"], "metric": ["icl_accuracy"], "step": [10]})
    for by, data in (("run", curves), ("condition", explore.condition_bands(curves))):
        spec = app_charts.curve_panels(data, [["icl_accuracy"]], by=by, domain=["c1", "c2"] if by == "condition" else ["a", "b"], rules=rules).to_dict()
        (rule,) = [v for v in views(spec) if v["mark"]["type"] == "rule" and "strokeDash" in v["mark"]]
        assert rule["encoding"]["color"]["field"] == by and rule["encoding"]["color"]["legend"] is None
        assert all(m == colours(spec, by)[0] for m in colours(spec, by))


def test_no_page_mixes_training_steps_with_rfm_iterations_unless_asked(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "rfm"]).run()
    assert at.radio(key="phase-task").value == "bursty"
    # each run's x axis is what its task declares it counts (BurstyTask.x_axis; RFM: iterations)
    assert x_titles(specs_of(at)[0]) == {"training step"} and chart_runs(at.get("vega_lite_chart")[0]) == {"plain-s0"}
    at.radio(key="phase-task").set_value("rfm").run()
    assert x_titles(specs_of(at)[0]) == {"iteration"} and chart_runs(at.get("vega_lite_chart")[0]) == {"rfm"}
    at.radio(key="phase-task").set_value(at.radio(key="phase-task").options[-1]).run()  # asked for: both, said so
    assert "mixes what the runs count (iteration and training step)" in texts(at.warning)
    assert chart_runs(at.get("vega_lite_chart")[0]) == {"plain-s0", "rfm"}
    at = app(store, "Grokking & RFM")
    axes = [x_titles(spec) & {"training step", "iteration"} for spec in specs_of(at)]
    assert all(len(axis) <= 1 for axis in axes) and {"training step"} in axes and {"iteration"} in axes
    rfm_curves = specs_of(at)[-1]
    assert x_titles(rfm_curves) == {"iteration"} and rfm_curves["vconcat"][0]["layer"][0]["encoding"]["y"]["title"] == "accuracy"


def test_log_axes_are_real_log_scales_with_decade_ticks(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0"]).run()
    at.checkbox(key="logx").check().run()
    at.checkbox(key="logy").check().run()
    (spec,) = specs_of(at)
    line = spec["vconcat"][0]["layer"][0]["encoding"]
    assert line["x"]["scale"]["type"] == "log" and line["x"]["axis"]["values"] == [1, 10, 100]  # steps 4..12
    assert line["y"]["scale"]["type"] == "log"
    frames = [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in at.get("vega_lite_chart")[0].proto.datasets]
    assert all((frame["step"] > 0).all() for frame in frames if "step" in frame)
    assert "at step 0 are left out" in texts(at.caption)
    at.selectbox(key="family").set_value("induction_score.*").run()  # a family narrows the choices, keeps the chosen
    options = at.multiselect(key="panel-0").options
    assert options == ["icl_accuracy", "iwl_accuracy", *(f"induction_score.L{l}H{h}" for l in (0, 1) for h in (0, 1))]


def test_metric_names_are_grouped_by_family():
    names = ["test_accuracy", "induction_score.L1H0", "embedding_fourier_norm.k10", "embedding_fourier_norm.k2",
             "induction_score.L0H1", "train_accuracy", "alpha.blocks.0.attn.W_Q", "lr"]
    assert explore.metric_families(names) == {
        "*_accuracy": ["test_accuracy", "train_accuracy"], "alpha.*": ["alpha.blocks.0.attn.W_Q"],
        "embedding_fourier_norm.k*": ["embedding_fourier_norm.k2", "embedding_fourier_norm.k10"],
        "induction_score.*": ["induction_score.L0H1", "induction_score.L1H0"], "other": ["lr"]}


def test_ablations_page_shows_the_head_heatmap(store):
    at = app(store, "Ablations")
    at.selectbox(key="abl-run").set_value("plain-s0").run()
    assert at.selectbox(key="abl-table").value == "heads_zero_step12"
    assert at.selectbox(key="abl-metric").value == "icl_accuracy"
    at.selectbox(key="abl-head").set_value("L1H1").run()
    assert not at.exception and not at.error
    specs = charts(at)
    assert "ablated" in specs[0] and '"L1"' in specs[0]
    assert len(specs) == 2 and "L1H1" in specs[1]  # the heatmap, then the chosen head's pattern
    at.selectbox(key="abl-table").set_value("patch_positions_step12").run()
    assert not at.exception and "patched in" in charts(at)[0] and '"pos8"' in charts(at)[0]


@pytest.mark.slow
def test_attention_page_draws_every_head(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("clamped-s0").run()
    at.select_slider(key="att-step").set_value(6).run()
    assert not at.exception and not at.error
    specs = charts(at)
    patterns = [s for s in specs if "at step 6" in s]
    assert len(specs) == 8 and len(patterns) == 4  # each head's pattern, its scores over training beneath it
    assert all(f"L{l}H{h} at step 6" in "".join(patterns) for l in (0, 1) for h in (0, 1))
    axis = json.loads(specs[0])["layer"][0]["encoding"]["x"]["sort"]  # key positions, labelled with roles
    assert axis[0].startswith("x1 c") and axis[1].startswith("ℓ1=") and axis[-1].startswith("query c")


def test_grokking_and_rfm_page(store):
    at = app(store, "Grokking & RFM")
    assert at.selectbox(key="grok-run").value == "grok"
    at.select_slider(key="rfm-step").set_value(1).run()
    assert not at.exception and not at.error
    specs = charts(at)
    assert len(specs) == 6  # three curve charts and the spectrum (grok), the feature matrix and its curves (rfm)
    assert "embedding Fourier norm" in specs[3] and "feature matrix M at iteration 1" in specs[4]


def test_the_delta_scale_is_centred_on_zero_with_values_baseline_and_the_tracked_metric(store):
    import polars as pl

    at = app(store, "Ablations")
    at.selectbox(key="abl-run").set_value("plain-s0").run()
    # the tracked metric (config "track"), not the alphabetically first (context_label_accuracy)
    assert json.loads(paths(store / "plain-s0").config.read_text())["track"] == ["icl_accuracy"]
    assert at.selectbox(key="abl-metric").value == "icl_accuracy"
    assert "context_label_accuracy" in at.selectbox(key="abl-metric").options
    table = pl.read_parquet(paths(store / "plain-s0").ablation_table("heads_zero_step12"))
    table = table.filter(pl.col("metric") == "icl_accuracy")
    rect, text = json.loads(charts(at)[0])["layer"]
    scale = rect["encoding"]["color"]["scale"]
    reach = table["delta"].abs().max()
    assert scale["domainMid"] == 0 and scale["domain"] == [-reach, reach] and scale["scheme"] == "redblue"
    assert rect["encoding"]["color"]["title"] == "Δ icl_accuracy"  # the legend names a delta, not a "value"
    assert text["mark"]["type"] == "text" and text["encoding"]["text"]["format"] == ".3f"  # the value in each cell
    assert rect["encoding"]["x"]["title"] == "head" and rect["encoding"]["y"]["title"] == "layer"
    assert at.metric[0].value == f"{table['baseline'][0]:.4g}" and "nothing ablated" in at.metric[0].label
    # a table whose deltas are all 0 still gets a centred scale (white, not the bottom of the range)
    at.selectbox(key="abl-table").set_value("patch_positions_step12").run()
    at.selectbox(key="abl-metric").set_value("clean_answer_accuracy").run()
    scale = json.loads(charts(at)[0])["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"][0] == -scale["domain"][1] < 0


def test_a_heads_pattern_at_any_checkpoint_and_example(store):
    at = app(store, "Ablations")
    at.selectbox(key="abl-run").set_value("plain-s0").run()
    at.selectbox(key="abl-head").set_value("L0H1").run()
    at.select_slider(key="abl-step").set_value(6).run()
    at.number_input(key="abl-example").set_value(5).run()
    assert not at.exception and not at.error
    assert "L0H1 at step 6, example 5" in charts(at)[1]


@pytest.mark.slow
def test_attention_rows_are_labelled_and_the_example_index_is_bounded(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("plain-s0").run()
    box = at.number_input(key="att-example")
    assert (box.min, box.max) == (0, TINY_BURSTY["task.eval_size"] - 1)  # the widget cannot go past the set
    spec = json.loads(charts(at)[0])
    (rect,) = spec["layer"]
    rows = rect["encoding"]["y"]["sort"]
    assert len(rows) == 17 and rect["encoding"]["y"]["axis"]["labelOverlap"] is False  # no label dropped
    assert rect["encoding"]["x"]["axis"]["labelOverlap"] is False
    assert rows[-1].startswith("query") and rect["encoding"]["y"]["title"] == "query position"
    cells = convert_arrow_bytes_to_pandas_df(at.get("vega_lite_chart")[0].proto.datasets[0].data.data)
    outlined = cells[cells["outlined"]]
    assert set(outlined["y"]) == {rows[-1]} and len(outlined) == 17  # the query row, outlined
    assert rect["encoding"]["strokeWidth"]["condition"]["test"] == "datum.outlined"
    # a stale index from a bigger set (grok's 121-sequence grid) is clamped when the run changes
    at.selectbox(key="att-run").set_value("grok").run()
    at.number_input(key="att-example").set_value(100).run()
    assert not at.exception and not at.error and "example 100" in charts(at)[0]
    at.selectbox(key="att-run").set_value("plain-s0").run()
    assert not at.exception and not at.error
    assert at.number_input(key="att-example").value == 31 and "example 31" in charts(at)[0]
    assert at.select_slider(key="att-step").value == 10  # grok's last step, kept: plain-s0 has a checkpoint there too
    at.select_slider(key="att-step").set_value(12).run()
    at.radio(key="att-beside").set_value("a second checkpoint").run()  # two checkpoints side by side
    at.select_slider(key="att-step2").set_value(6).run()
    specs = charts(at)
    assert len(specs) == 16 and sum("at step 6" in s for s in specs) == 4 and sum("at step 12" in s for s in specs) == 4


def chart_frames(chart) -> list:
    """The data frames Streamlit sends with a chart."""
    return [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in chart.proto.datasets]


def score_charts(at, name: str) -> list:
    """The charts of head `name`'s (e.g. "L1H0") scores over training, in page order."""
    title = f"induction_score.{name} · previous_token_score.{name}"
    return [c for c in at.get("vega_lite_chart") if f'"title": "{title}"' in json.dumps(json.loads(c.proto.spec), ensure_ascii=False)]


def head_curves(at, name: str):
    """(step, metric, value, run) drawn in the score chart of head `name` (e.g. "L1H0"), and its rules' steps."""
    chart = score_charts(at, name)[0]
    frames = chart_frames(chart)
    lines = next(f for f in frames if {"step", "metric", "value", "run"} <= set(f))
    rules = [f for f in frames if "label" in f]
    return lines, sorted({int(s) for f in rules for s in f["step"]})


@pytest.mark.slow
def test_each_heads_scores_over_training_are_drawn_beside_its_pattern(store):
    import polars as pl

    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("plain-s0").run()
    at.select_slider(key="att-step").set_value(6).run()
    assert not at.exception and not at.error
    stored = pl.read_parquet(paths(store / "plain-s0").metrics)
    for layer, head in ((0, 0), (0, 1), (1, 0), (1, 1)):
        names = [f"induction_score.L{layer}H{head}", f"previous_token_score.L{layer}H{head}"]
        expected = stored.filter(pl.col("metric").is_in(names)).sort("metric", "step")
        assert expected.height == 2 * (TINY_BURSTY["train.steps"] // TINY_BURSTY["train.eval_every"] + 1)  # every eval step
        lines, rules = head_curves(at, f"L{layer}H{head}")
        drawn = lines.sort_values(["metric", "step"])
        assert list(drawn["metric"]) == expected["metric"].to_list() and list(drawn["step"]) == expected["step"].to_list()
        assert list(drawn["value"]) == pytest.approx(expected["value"].to_list())
        assert set(drawn["run"]) == {"plain-s0"} and rules == [6]  # the rule at the checkpoint shown
    # a run without these measures says so instead of drawing an empty chart
    at.selectbox(key="att-run").set_value("grok").run()
    assert not at.exception and not at.error
    assert "No induction_score.L0H0 or previous_token_score.L0H0 in grok's metrics." in texts(at.caption)


@pytest.mark.slow
def test_two_runs_side_by_side_plain_beside_clamped(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("plain-s0").run()
    at.select_slider(key="att-step").set_value(6).run()
    at.radio(key="att-beside").set_value("a second run (e.g. plain beside clamped)").run()
    assert not at.exception and not at.error
    second = at.selectbox(key="att-run2")
    assert second.value == "clamped-s0"  # the same seed, with the clamp
    # only runs whose evaluation sets an example index means the same in: the bursty runs that load
    assert "plain-s0" not in second.options and not {"grok", "rfm", "config-list", "config-garbage"} & set(second.options)
    assert {"plain-s1", "clamped-s1"} <= set(second.options)
    slider = at.select_slider(key="att-step-run2")
    assert list(slider.options) == [str(s) for s in checkpoint_steps(store / "clamped-s0")] and slider.value == 6
    specs = charts(at)
    assert len(specs) == 16 and sum("L1H0 at step 6" in s for s in specs) == 2
    assert [m.value for m in at.markdown if m.value.startswith("**")] == ["**plain-s0** at step 6", "**clamped-s0** at step 6"]
    lines, _ = head_curves(at, "L1H0")
    assert set(lines["run"]) == {"plain-s0"}  # the left column's chart first
    right = score_charts(at, "L1H0")[1]
    assert {r for f in chart_frames(right) if "run" in f for r in f["run"]} == {"clamped-s0"}
    # the clamp writes the induction target into L1H0's query row: the two runs' patterns differ there
    patterns = [c for c in at.get("vega_lite_chart") if "L1H0 at step 6" in c.proto.spec]
    plain, clamped = (chart_frames(c)[0] for c in patterns)
    assert not (plain["value"].round(6) == clamped["value"].round(6)).all()
    at.select_slider(key="att-step-run2").set_value(12).run()
    assert "**clamped-s0** at step 12" in [m.value for m in at.markdown]


def test_hovering_a_pattern_cell_names_its_query_and_key_roles(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("plain-s0").run()
    at.select_slider(key="att-step").set_value(12).run()
    chart = at.get("vega_lite_chart")[0]
    spec = json.loads(chart.proto.spec)
    (rect,) = spec["layer"]
    tooltip = rect["encoding"]["tooltip"]
    assert tooltip[0]["field"] == "link" and tooltip[0]["title"] == "query → key"
    cells = chart_frames(chart)[0]
    labels = rect["encoding"]["y"]["sort"]
    patterns, _ = explore.attention_patterns(explore.read_run(store / "plain-s0", store), 12, 0)
    query, first = cells[(cells["y"] == labels[-1]) & (cells["x"] == labels[0])].iloc[0], patterns[0][0][-1, 0]
    assert query["link"] == f"query {labels[-1]} → key {labels[0]}: {first:.3f}" and labels[0].startswith("x1 c")
    # hovering a cell: its query row and its key column stay opaque, the rest fade
    params = {p["name"]: p["select"] for p in spec.get("params", []) + rect.get("params", [])}
    assert params["hover_row"]["fields"] == ["y"] and params["hover_column"]["fields"] == ["x"]
    assert params["hover_row"]["on"] == "pointerover"
    assert rect["encoding"]["opacity"]["condition"]["test"] == {"or": [{"param": "hover_row"}, {"param": "hover_column"}]}


def test_grokking_panel_after_nanda(store, tmp_path):
    import numpy as np

    shutil.copytree(store / "grok", tmp_path / "grok")
    shutil.copytree(store / "rfm", tmp_path / "rfm")
    summary = json.loads(paths(tmp_path / "grok").summary.read_text())
    summary["first_steps"] = {"train_accuracy>=1": 5, "test_accuracy>=0.95": 10}  # as if it had grokked
    paths(tmp_path / "grok").summary.write_text(json.dumps(summary))
    at = app(tmp_path, "Grokking & RFM")
    specs = specs_of(at)
    drawn = json.dumps(specs)
    for metric in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "restricted_loss", "excluded_loss",
                   "gini_embedding", "gini_neuron_logit", "weight_norm"):
        assert f"{metric}" in drawn, metric
    assert specs[1]["vconcat"][0]["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"  # the losses
    marks = [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in at.get("vega_lite_chart")[0].proto.datasets]
    marks = next(frame for frame in marks if "label" in frame)
    assert dict(zip(marks["label"].str[:2], marks["step"])) == {"s₁": 5, "s₂": 10}
    frequencies = specs[3]["encoding"]["y"]["axis"]
    assert frequencies["values"] == [1, 2, 3, 4, 5] and frequencies["labelOverlap"] is False  # p = 11: k = 1..5
    heat = specs[4]["layer"][0]["encoding"]
    M = explore.feature_matrix(explore.read_run(tmp_path / "rfm", tmp_path), 2)
    off = M[~np.eye(M.shape[0], dtype=bool)]
    def expected_scale(entries):  # signed entries: a diverging scale symmetric about 0; else the percentile range
        low, high = np.percentile(entries, [1, 99])
        return ([-max(-low, high), max(-low, high)], "redblue") if low < 0 < high else ([low, high], "viridis")

    assert heat["color"]["condition"]["test"] == "datum.diagonal"  # the diagonal masked
    domain, scheme = expected_scale(off)
    assert np.allclose(heat["color"]["scale"]["domain"], domain) and heat["color"]["scale"]["scheme"] == scheme
    assert heat["x"]["title"] == "input feature"
    at.checkbox(key="rfm-mask").uncheck().run()
    heat = json.loads(charts(at)[4])["layer"][0]["encoding"]
    domain, scheme = expected_scale(M.reshape(-1))
    assert "condition" not in heat["color"] and np.allclose(heat["color"]["scale"]["domain"], domain)
    assert heat["color"]["scale"]["scheme"] == scheme


def test_a_run_of_a_task_no_longer_registered_still_displays(store, tmp_path):
    """An old run directory whose task is not registered: listed, its curves drawn against
    training steps, no milestones; not offered where the task's code is needed (attention)."""
    shutil.copytree(store / "plain-s0", tmp_path / "plain-s0")
    shutil.copytree(store / "plain-s0", tmp_path / "retired")
    config = json.loads(paths(tmp_path / "retired").config.read_text())
    paths(tmp_path / "retired").config.write_text(json.dumps({**config, "task": "retired_task"}))
    info = explore.read_run(tmp_path / "retired", tmp_path)
    assert (info.task, info.problems, info.axis, info.declared.milestones) == ("retired_task", [], "training step", ())
    at = app(tmp_path)
    frame = at.dataframe[0].value.set_index("run")
    assert frame.loc["retired"]["task"] == "retired_task" and frame.loc["retired"]["status"] == "done"
    at.sidebar.radio(key="page").set_value("Phase changes").run()
    at.sidebar.multiselect(key="selected").set_value(["retired"]).run()
    assert not at.exception and "could not be drawn" not in texts(at.error)
    assert x_titles(specs_of(at)[0]) == {"training step"} and chart_runs(at.get("vega_lite_chart")[0]) == {"retired"}
    at.sidebar.radio(key="page").set_value("Attention patterns").run()
    assert not at.exception and at.selectbox(key="att-run").options == ["plain-s0"]


def test_milestone_marks_are_the_milestones_the_task_declares():
    from icl_lab.tasks import Milestone

    half = Milestone("icl_accuracy", 0.5, "half way")
    info = explore.RunInfo(path=Path("nowhere"), name="r", first_steps={"icl_accuracy>=0.5": 7, "train_accuracy>=1": 3},
                           declared=explore.Declarations(milestones=(half, Milestone("iwl_accuracy", 0.9, "never"))))
    marks = explore.milestone_marks(info)
    assert marks.to_dicts() == [{"step": 7, "label": "half way"}]  # reached and declared; others are not marked
    assert explore.milestone_marks(explore.RunInfo(path=Path("nowhere"), name="r", first_steps={"train_accuracy>=1": 3})).height == 0


def test_empty_and_missing_directories_get_a_message(tmp_path):
    at = app(tmp_path)
    assert "No runs" in texts(at.info)
    at = app(tmp_path / "nowhere")
    assert "does not exist" in texts(at.warning)


def test_the_scan_stops_in_a_huge_tree_with_a_message(tmp_path):
    """Pointing the runs box at / once walked the whole disk; the scan now gives up, quickly."""
    width = int(explore.SCAN_MAX_DIRS ** 0.5) + 2  # width² > the directory budget
    for i in range(width):
        for j in range(width):
            os.makedirs(tmp_path / f"d{i}" / f"d{j}")
    start = time.perf_counter()
    at = app(tmp_path)
    assert time.perf_counter() - start < 60
    assert f"gave up scanning {tmp_path} for runs after {explore.SCAN_MAX_DIRS} directories" in texts(at.error)
    assert not at.dataframe


def test_the_scan_finds_runs_down_to_its_depth_limit(store, tmp_path):
    shallow = tmp_path.joinpath(*["deep"] * (explore.SCAN_MAX_DEPTH - 1), "shallow-run")
    too_deep = tmp_path.joinpath(*["deep"] * (explore.SCAN_MAX_DEPTH + 3), "too-deep-run")
    for where in (shallow, too_deep):
        shutil.copytree(store / "plain-s1", where)
    at = app(tmp_path)
    assert list(at.dataframe[0].value["run"]) == [str(shallow.relative_to(tmp_path))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(port: int, *args: str, cwd: Path, runs: Path):
    """`streamlit run apps/explore.py` on `port` with the runs directory `runs`, up (its health
    answers on 127.0.0.1) for the `with` block, stopped after it."""
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", *args],
        env={**os.environ, "ICL_LAB_RUNS": str(runs)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not come up on 127.0.0.1 within 60 s")
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_app_listens_on_localhost_unless_told_otherwise(tmp_path):
    """The checked-in .streamlit/config.toml binds the server to this machine only."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outward interface
            outward = s.getsockname()[0]
        except OSError:
            outward = "127.0.0.1"  # no route out
    port = free_port()
    with streamlit_server(port, cwd=ROOT, runs=tmp_path):  # started the documented way: no --server.address
        if outward.startswith("127."):
            pytest.skip("this machine has no address but loopback to check from")
        with pytest.raises(ConnectionRefusedError):  # nothing listens on the outward address
            socket.create_connection((outward, port), timeout=5).close()


# -- sweeps and the clamp-condition table ---------------------------------------------------
SWEEP_AXES = {"condition": ["none", "induction"], "num_classes": ["64", "128"], "seed": ["0", "1", "2"]}
NOT_DONE = {"condition=none-num_classes=128-seed=2": "pending", "condition=none-num_classes=64-seed=2": "stopped",
            "condition=induction-num_classes=128-seed=2": "failed"}


@pytest.fixture(scope="module")
def sweeps(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    write_tables(root, [store / "plain-s0", store / "plain-s1"], [store / "clamped-s0", store / "clamped-s1"])
    return root


def write_tables(root: Path, plain: list[Path], clamped: list[Path], damaged: bool = True) -> None:
    """A sweep table written the way icl_lab.sweep writes it (member runs: copies of plain[0], a
    tiny real run; none for the pending member) and a clamp-condition table beside its runs
    (seed s: copies of plain[s] and clamped[s]); damaged: a corrupt and a foreign sweep table and a
    corrupt condition table too."""
    import itertools

    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    rows = []
    for values in itertools.product(*SWEEP_AXES.values()):
        axes = dict(zip(SWEEP_AXES, values))
        name = "-".join(f"{k}={v}" for k, v in axes.items())
        status = NOT_DONE.get(name, "done")
        done = status == "done"
        rows.append({"run": name, **{f"axis.{k}": v for k, v in axes.items()}, "status": status,
                     "error": "RuntimeError: measure exploded" if status == "failed" else "",
                     "final.icl_accuracy": float(rng.uniform()) if done else None,
                     "final.iwl_accuracy": float(rng.uniform()) if done else None,
                     "final.train_loss": float(rng.uniform(0, 3)) if done else None,
                     "transition.icl_accuracy": int(rng.integers(10, 100)) if done else None})
        if status != "pending":
            shutil.copytree(plain[0], root / "grid" / "runs" / name, ignore=shutil.ignore_patterns("checkpoints", "ablations"))
    pl.DataFrame(rows).write_parquet(root / "grid" / "sweep.parquet")
    for condition, seed in itertools.product(("none", "induction"), range(len(plain))):
        source = plain[seed] if condition == "none" else clamped[seed]
        shutil.copytree(source, root / "clamps" / f"{condition}-seed{seed}", ignore=shutil.ignore_patterns("checkpoints", "ablations"))
    pl.DataFrame({  # singh.tabulate's columns, induction listed first (the page puts the baseline first)
        "condition": ["induction", "none"], "baseline": ["none", ""], "seeds": [2, 2],
        "transition_steps": [[40, 60], [100, -1]], "transition_steps_mean": [50.0, 100.0],
        "transition_sequences_mean": [400.0, 800.0], "transition_sequences_sd": [113.1, None],
        "ratio_to_baseline": [0.5, None], "plateau_seeds": [2, 1], "final_icl_accuracy_mean": [0.9, 0.6],
    }).write_parquet(root / "clamps" / "singh_clamps.parquet")
    if damaged:
        for folder, table in (("broken", "sweep.parquet"), ("clamps-torn", "singh_clamps.parquet")):
            (root / folder).mkdir()
            (root / folder / table).write_bytes(b"PAR1 torn")
        (root / "foreign").mkdir()
        pl.DataFrame({"name": ["x"]}).write_parquet(root / "foreign" / "sweep.parquet")


def heatmap_cells(chart):
    """x, y, value, seeds, sd of every cell of a sweep heatmap, from the data sent with the chart."""
    frames = [convert_arrow_bytes_to_pandas_df(ds.data.data) for ds in chart.proto.datasets]
    return next(frame for frame in frames if {"x", "y", "value", "seeds", "sd"} <= set(frame))


def test_the_sweep_heatmap_is_the_mean_over_seeds_of_the_finished_members(sweeps):
    import polars as pl

    at = app(sweeps, "Sweeps")
    at.selectbox(key="sweep").set_value("grid").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="sweep-x").options == list(SWEEP_AXES)  # exactly the swept axes
    assert at.selectbox(key="sweep-x").value == "condition" and at.selectbox(key="sweep-y").value == "num_classes"
    assert at.multiselect(key="sweep-metrics").value == ["final.icl_accuracy", "final.iwl_accuracy"]
    counts = {m.label: int(m.value) for m in at.metric}
    assert counts == {"done": 9, "failed": 1, "locked": 0, "stopped": 1, "running": 0, "pending": 1}
    assert "condition=induction-num_classes=128-seed=2 failed: RuntimeError: measure exploded" in texts(at.warning)
    table = pl.read_parquet(sweeps / "grid" / "sweep.parquet").filter(pl.col("status") == "done")
    for chart, metric in zip(at.get("vega_lite_chart"), ("final.icl_accuracy", "final.iwl_accuracy")):
        expected = table.group_by("axis.condition", "axis.num_classes").agg(
            pl.col(metric).mean().alias("mean"), pl.col(metric).std().alias("sd"), pl.len().alias("seeds"))
        drawn = heatmap_cells(chart).set_index(["x", "y"])
        assert len(drawn) == 4 and expected.height == 4
        for condition, classes, mean, sd, seeds in expected.iter_rows():
            cell = drawn.loc[(condition, classes)]
            assert cell["value"] == pytest.approx(mean) and cell["sd"] == pytest.approx(sd) and cell["seeds"] == seeds
        spec = json.loads(chart.proto.spec)
        rect, text = spec["layer"]
        assert text["encoding"]["text"]["format"] == ".3f"  # cell values printed
        assert {t["field"] for t in rect["encoding"]["tooltip"]} >= {"seeds", "sd"}
    # another pair of axes: the mean is then over condition and seed
    at.selectbox(key="sweep-x").set_value("seed").run()
    at.selectbox(key="sweep-y").set_value("num_classes").run()
    drawn = heatmap_cells(at.get("vega_lite_chart")[0]).set_index(["x", "y"])
    expected = table.group_by("axis.seed", "axis.num_classes").agg(pl.col("final.icl_accuracy").mean())
    assert len(drawn) == 6 and expected.height == 5  # (seed 2, 128 classes): no finished member
    for seed, classes, mean in expected.iter_rows():
        assert drawn.loc[(seed, classes)]["value"] == pytest.approx(mean)
    assert drawn.loc[("2", "128")]["seeds"] == 0


def test_a_cell_of_the_sweep_heatmap_puts_its_runs_in_the_comparison(sweeps):
    at = app(sweeps, "Sweeps")
    at.selectbox(key="sweep").set_value("grid").run()
    at.selectbox(key="sweep-cell").set_value("condition=induction, num_classes=128").run()
    members = [f"condition=induction-num_classes=128-seed={s}" for s in range(3)]
    assert list(at.dataframe[0].value["run"]) == members
    at.button(key="sweep-compare").click().run()
    runs = [f"grid/runs/{m}" for m in members]  # the run directories, as the run scan names them
    assert at.session_state["compare"] == runs
    at.sidebar.radio(key="page").set_value("Phase changes").run()
    assert at.sidebar.multiselect(key="selected").value == runs
    # clicking a cell of the heatmap: the chart's selection, as the browser sends it
    at = app(sweeps, "Sweeps")
    at.selectbox(key="sweep").set_value("grid").run()
    at.session_state["sweep-heat-final.icl_accuracy"] = {"selection": {"cell": [{"x": "none", "y": "64"}]}}
    at.run()
    assert not at.exception
    assert at.selectbox(key="sweep-cell").value == "condition=none, num_classes=64"
    assert at.session_state["compare"] == [f"grid/runs/condition=none-num_classes=64-seed={s}" for s in range(3)]


def test_the_clamp_condition_table_puts_the_baseline_first_with_the_ratio(sweeps):
    at = app(sweeps, "Clamp conditions")
    assert at.selectbox(key="clamp-table").value == "clamps" and not at.error
    frame = at.dataframe[0].value
    assert list(frame["condition"]) == ["none", "induction"]  # the baseline first
    assert list(frame["transition (steps)"]) == ["100", "50 ± 14"]  # sd over the seeds that had one: stdev(40, 60)
    assert list(frame["transition (sequences)"]) == ["800", "400 ± 110"]  # sd 113.1 to two figures, not "1.1e+02"
    assert frame["ratio to baseline"].isna().tolist() == [True, False] and frame["ratio to baseline"][1] == pytest.approx(0.5)
    assert list(frame["plateau"]) == ["1/2 seeds", "2/2 seeds"]
    at.multiselect(key="clamp-pick").set_value(["induction"]).run()
    at.button(key="clamp-overlay").click().run()
    assert at.session_state["compare"] == ["clamps/induction-seed0", "clamps/induction-seed1"]
    at.sidebar.radio(key="page").set_value("Phase changes").run()
    assert at.sidebar.multiselect(key="selected").value == ["clamps/induction-seed0", "clamps/induction-seed1"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_beside_a_corrupt_sweep_table(sweeps, page):
    at = app(sweeps, page)  # the first sweep and experiment offered are the corrupt ones
    assert at.header[0].value == page and "could not be drawn" not in texts(at.error)
    if page == "Sweeps":
        assert at.selectbox(key="sweep").value == "broken"
        assert "This sweep cannot be shown" in texts(at.error) and "broken/sweep.parquet: not a readable table" in texts(at.error)
        at.selectbox(key="sweep").set_value("foreign").run()
        assert "foreign/sweep.parquet: not a sweep table (no column run, status; it has name)" in texts(at.error)
    if page == "Clamp conditions":
        at.selectbox(key="clamp-table").set_value("clamps-torn").run()
        assert "clamps-torn/singh_clamps.parquet: not a readable table" in texts(at.error)
