"""The explorer app, driven by Streamlit's AppTest on a store made by tiny real runs."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from icl_lab import get_preset, train
from icl_lab.ablate import head_ablation_scan, patching_scan
from icl_lab.measures import registry
from icl_lab.rfm import RFMConfig, run_rfm
from interventions import Intervention

APP = str(Path(__file__).resolve().parent.parent / "apps" / "explore.py")
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
    head_ablation_scan(root / "plain-s0", kind="zero", metrics=["icl_accuracy"])
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

    registry.MEASURES["icl_accuracy"] = registry.Measure("icl_accuracy", flaky, ("bursty",))
    try:
        with pytest.raises(RuntimeError):
            train(base, root / "failed", progress=False)
    finally:
        registry.MEASURES["icl_accuracy"] = original
    # a corrupt file: a real run whose metrics file was damaged
    shutil.copytree(root / "plain-s0", root / "corrupt")
    (root / "corrupt" / "metrics.parquet").write_bytes(b"not a parquet file")
    return root


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


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def test_runs_page_lists_every_run_and_explains_the_odd_ones(store):
    at = app(store)
    frame = at.dataframe[0].value
    assert set(frame["run"]) == {"plain-s0", "plain-s1", "clamped-s0", "clamped-s1", "grok", "rfm", "running", "failed", "corrupt"}
    status = dict(zip(frame["run"], frame["status"]))
    assert status["running"] == "running" and status["failed"] == "failed" and status["corrupt"] == "corrupt"
    assert "induction" in dict(zip(frame["run"], frame["interventions"]))["clamped-s0"]
    assert "still running" in texts(at.info)
    assert "measure exploded" in texts(at.warning)
    assert "metrics.parquet is unreadable" in texts(at.error)
    at.multiselect(key="filter-task").set_value(["rfm"]).run()
    assert list(at.dataframe[0].value["run"]) == ["rfm"]


def test_phase_changes_page_overlays_runs_and_bands(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "plain-s1", "clamped-s0", "clamped-s1", "corrupt"]).run()
    assert not at.exception
    at.multiselect(key="metrics").set_value(["icl_accuracy", "induction_score.L1H0"]).run()
    assert [s.value for s in at.subheader] == ["icl_accuracy", "induction_score.L1H0"]
    assert len(charts(at)) == 2 and all('"run"' in spec for spec in charts(at))
    at.checkbox(key="bands").check().run()
    at.checkbox(key="logx").check().run()
    assert not at.exception
    specs = charts(at)
    assert len(specs) == 2 and all('"low"' in spec and '"symlog"' in spec for spec in specs)
    assert len(at.get("download_button")) == 2


def test_ablations_page_shows_the_head_heatmap(store):
    at = app(store, "Ablations")
    assert at.selectbox(key="abl-table").value == "heads_zero_step12"
    assert at.selectbox(key="abl-metric").value == "icl_accuracy"
    at.selectbox(key="abl-head").set_value("L1H1").run()
    assert not at.exception and not at.error
    specs = charts(at)
    assert "ablated" in specs[0] and '"L1"' in specs[0]
    assert len(specs) == 2 and "L1H1" in specs[1]  # the heatmap, then the chosen head's pattern
    at.selectbox(key="abl-table").set_value("patch_positions_step12").run()
    assert not at.exception and "patched in" in charts(at)[0] and '"pos8"' in charts(at)[0]


def test_attention_page_draws_every_head(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("clamped-s0").run()
    at.select_slider(key="att-step").set_value(6).run()
    assert not at.exception and not at.error
    specs = charts(at)
    assert len(specs) == 4 and all(f"L{l}H{h}" in "".join(specs) for l in (0, 1) for h in (0, 1))
    axis = json.loads(specs[0])["encoding"]["x"]["sort"]  # key positions, labelled with roles
    assert axis[0].startswith("x1 c") and axis[1].startswith("ℓ1=") and axis[-1].startswith("query c")


def test_grokking_and_rfm_page(store):
    at = app(store, "Grokking & RFM")
    assert at.selectbox(key="grok-run").value == "grok"
    at.select_slider(key="rfm-step").set_value(1).run()
    assert not at.exception and not at.error
    specs = charts(at)
    assert len(specs) == 3
    assert "embedding Fourier norm" in specs[0] and "feature matrix M at iteration 1" in specs[1]


def test_empty_and_missing_directories_get_a_message(tmp_path):
    at = app(tmp_path)
    assert "No runs" in texts(at.info)
    at = app(tmp_path / "nowhere")
    assert "does not exist" in texts(at.warning)
