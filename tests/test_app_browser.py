"""One real-browser test: `streamlit run apps/explore.py` on localhost, loaded in headless
Chromium (Debian's `chromium`, installed by .ci/run), every page in turn. The screenshots are
kept in tests/artifacts/explore-<page>.png."""

import base64
import contextlib
import dataclasses
import html
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import websockets.sync.client
from test_app import free_port, streamlit_server, write_tables

from icl_lab import get_preset
from icl_lab.train import train
from interventions import Intervention

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("chromium is not installed; .ci/run installs Debian's chromium for this test", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


PAGES = {"Runs": "stDataFrame", "Phase changes": "stVegaLiteChart", "Ablations": "stVegaLiteChart",
         "Attention patterns": "stVegaLiteChart", "Grokking & RFM": "stVegaLiteChart", "Sweeps": "stVegaLiteChart",
         "Clamp conditions": "stDataFrame"}  # page -> what it must draw
TINY = {"task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32, "model.d_model": 16,
        "train.steps": 8, "train.eval_every": 2, "train.checkpoint_every": 4, "device": "cpu"}


def make_store(store: Path) -> None:
    """A bursty run (ablated) and a clamped one, a modular-arithmetic run, an RFM run, a sweep and a
    clamp experiment's table: something on every page."""
    from icl_lab.ablate import ablation_scan
    from icl_lab.rfm import RFMConfig, run_rfm

    config = get_preset("bursty", "small").config.with_overrides(TINY)
    train(config, store / "bursty-s0", progress=False)
    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")
    train(dataclasses.replace(config, interventions=(clamp,)), store / "bursty-clamped-s0", progress=False)
    ablation_scan(store / "bursty-s0", kind="zero", over="heads")
    modular = get_preset("modular", "cpu").config.with_overrides({
        "task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 20, "train.eval_every": 2,
        "train.checkpoint_every": 10, "device": "cpu"})
    train(modular, store / "grok", progress=False)
    run_rfm(RFMConfig(p=11, iters=4, device="cpu"), store / "rfm", progress=False)
    write_tables(store, [store / "bursty-s0"], [store / "bursty-clamped-s0"], damaged=False)


@contextlib.contextmanager
def chromium(profile: Path):
    """Headless Chromium, driven over the DevTools protocol (see `Page`)."""
    process = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,3400",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes its port here once it listens
        for _ in range(300):
            if active.exists() and active.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        port = active.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        target = next(t for t in targets if t["type"] == "page")
        with websockets.sync.client.connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
            yield Page(socket)
    finally:
        process.terminate()
        process.wait(timeout=30)


class Page:
    """A page is shot only once Streamlit has drawn it (the wanted element present, no skeleton,
    the DOM unchanged for a while), which the one-shot `--screenshot` flag cannot wait for (its
    virtual time ignores the websocket)."""

    def __init__(self, socket):
        self.socket = socket
        self.calls = 0

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == self.calls:
                return message.get("result", {})

    def dom(self) -> str:
        return self.call("Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True)["result"]["value"]

    def load(self, url: str, shot: Path, testid: str, patience: float = 120.0) -> str:
        """The page's DOM once it has drawn `testid` and settled; its screenshot in `shot`."""
        self.call("Page.navigate", url=url)
        return self.settle(shot, testid, patience)

    def settle(self, shot: Path, testid: str, patience: float = 120.0) -> str:
        """The DOM once the page shows `testid` and has stopped changing (after a click, say); its screenshot in `shot`."""
        deadline, last, steady = time.monotonic() + patience, "", 0
        while time.monotonic() < deadline and steady < 4:  # 4 looks, 0.5 s apart, at an unchanged DOM
            time.sleep(0.5)
            dom = self.dom()
            drawn = f'data-testid="{testid}"' in dom and 'data-testid="stSkeleton"' not in dom
            steady = steady + 1 if drawn and dom == last else 0
            last = dom
        shot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return last


@pytest.mark.slow
def test_every_page_renders_in_a_real_browser(tmp_path):
    store = tmp_path / "runs"
    make_store(store)
    port = free_port()
    with streamlit_server(port, "--server.address", "127.0.0.1", cwd=tmp_path, runs=store):
        ARTIFACTS.mkdir(exist_ok=True)
        with chromium(tmp_path / "chrome") as browser:
            for page, testid in PAGES.items():
                shot = ARTIFACTS / f"explore-{page.lower().replace(' & ', '-').replace(' ', '-')}.png"
                shot.unlink(missing_ok=True)
                dom = browser.load(f"http://127.0.0.1:{port}/?page={urllib.parse.quote(page)}", shot, testid)
                assert f'data-testid="{testid}"' in dom, (page, dom[-2000:])
                assert "stException" not in dom and "Traceback" not in dom and "could not be drawn" not in dom, page
                assert "icl-lab explorer" in dom and html.escape(page) in dom
                assert 'data-testid="stSkeleton"' not in dom and shot.stat().st_size > 20_000, page


@pytest.mark.slow
def test_a_running_runs_curves_move_in_the_browser_without_a_reload(tmp_path):
    """The open page redraws a running run's curves by itself (st.fragment's run_every), and stops
    once the run is done: no click, no reload between the looks."""
    import polars as pl
    from test_app_first_view import write_run

    from icl_lab.store import paths

    store = tmp_path / "runs"
    run = write_run(store, "live", "bursty", 0, {"icl_accuracy": [0.1, 0.2, 0.3]}, state="running")
    port = free_port()
    with streamlit_server(port, "--server.address", "127.0.0.1", cwd=tmp_path, runs=store):
        with chromium(tmp_path / "chrome") as browser:
            ARTIFACTS.mkdir(exist_ok=True)
            dom = browser.load(f"http://127.0.0.1:{port}/?page=Phase+changes", ARTIFACTS / "explore-live-before.png", "stVegaLiteChart")
            assert "still running, at training step 20" in dom, dom[-2000:]
            metrics = pl.read_parquet(paths(run).metrics)
            more = pl.DataFrame({"step": [30, 40], "metric": ["icl_accuracy"] * 2, "value": [0.6, 0.9]}, schema=metrics.schema)
            pl.concat([metrics, more]).write_parquet(paths(run).metrics)

            def soon(condition, patience: float = 30.0) -> str:  # the DOM once `condition` holds of it, looked at every 0.5 s
                deadline = time.monotonic() + patience
                while time.monotonic() < deadline:
                    if condition(dom := browser.dom()):
                        return dom
                    time.sleep(0.5)
                pytest.fail(f"the page did not change by itself within {patience} s")

            soon(lambda d: "still running, at training step 40" in d)
            paths(run).status.write_text(json.dumps({"state": "done", "error": None}))
            soon(lambda d: "still running" not in d and 'data-testid="stVegaLiteChart"' in d)
            shot = ARTIFACTS / "explore-live-after.png"
            shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
