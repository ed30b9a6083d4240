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
PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns", "Grokking & RFM")
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
    ablation_scan(root / "plain-s0", kind="zero", over="heads", metrics=["icl_accuracy"])
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


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_beside_corrupt_runs(store, page):
    """Every page draws, with no page-level failure, whichever run a damaged one sits beside."""
    at = app(store, page)  # asserts that no exception escaped
    assert at.header[0].value == page and "could not be drawn" not in texts(at.error)


def test_phase_changes_page_draws_the_readable_runs_of_a_selection(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "metrics-truncated", "metrics-garbage", "config-list", "summary-string"]).run()
    at.multiselect(key="metrics").set_value(["icl_accuracy"]).run()
    assert not at.exception and "could not be drawn" not in texts(at.error)
    (chart,) = at.get("vega_lite_chart")
    assert chart_runs(chart) == {"plain-s0", "config-list", "summary-string"}  # unreadable metrics left out
    warned = texts(at.warning)
    assert all(f"{name} is corrupt" in warned for name in ("metrics-truncated", "metrics-garbage", "config-list", "summary-string"))


def test_a_truncated_checkpoint_gives_a_message_on_the_attention_and_ablation_pages(store):
    at = app(store, "Attention patterns")
    at.selectbox(key="att-run").set_value("checkpoint-truncated").run()
    assert not at.exception and not charts(at)
    assert "step_12.safetensors: not a readable safetensors file" in texts(at.error)
    at.selectbox(key="att-run").set_value("plain-s0").run()  # the next run draws again
    assert not at.exception and not at.error and len(charts(at)) == 4
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
    assert len(charts(at)) == 1  # the grokking run's spectrum is still drawn


def test_phase_changes_page_overlays_runs_and_bands(store):
    at = app(store, "Phase changes")
    at.sidebar.multiselect(key="selected").set_value(["plain-s0", "plain-s1", "clamped-s0", "clamped-s1", "metrics-garbage"]).run()
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
