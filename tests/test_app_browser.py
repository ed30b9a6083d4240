"""One real-browser test: `streamlit run apps/explore.py` on localhost, loaded in headless
Chromium (Debian's `chromium`, installed by .ci/run), every page in turn. The screenshots are
kept in tests/artifacts/explore-<page>.png."""

import dataclasses
import html
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from test_app import free_port, streamlit_server

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
         "Attention patterns": "stVegaLiteChart", "Grokking & RFM": "stVegaLiteChart"}  # page -> what it must draw
TINY = {"task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32, "model.d_model": 16,
        "train.steps": 8, "train.eval_every": 2, "train.checkpoint_every": 4, "device": "cpu"}


def make_store(store: Path) -> None:
    """A bursty run (ablated) and a clamped one, a modular-arithmetic run and an RFM run: something on every page."""
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


def load(flags: list[str], url: str, shot: Path, testid: str) -> str:
    """The page's DOM once it has drawn `testid`, and its screenshot. Chromium's virtual time does
    not wait for the websocket (and the first session imports torch), so load until it has drawn."""
    dom = ""
    for _ in range(6):
        dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        if f'data-testid="{testid}"' in dom:
            break
        time.sleep(3)
    for _ in range(6):  # a blank page is a few KB, a drawn one tens
        subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
        if shot.exists() and shot.stat().st_size > 20_000:
            break
        time.sleep(3)
    return dom


def test_every_page_renders_in_a_real_browser(tmp_path):
    store = tmp_path / "runs"
    make_store(store)
    port = free_port()
    with streamlit_server(port, "--server.address", "127.0.0.1", cwd=tmp_path, runs=store):
        ARTIFACTS.mkdir(exist_ok=True)
        flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,3400", "--virtual-time-budget=25000"]
        for page, testid in PAGES.items():
            shot = ARTIFACTS / f"explore-{page.lower().replace(' & ', '-').replace(' ', '-')}.png"
            shot.unlink(missing_ok=True)
            dom = load(flags, f"http://127.0.0.1:{port}/?page={urllib.parse.quote(page)}", shot, testid)
            assert f'data-testid="{testid}"' in dom, (page, dom[-2000:])
            assert "stException" not in dom and "Traceback" not in dom and "could not be drawn" not in dom, page
            assert "icl-lab explorer" in dom and html.escape(page) in dom
            assert shot.exists() and shot.stat().st_size > 20_000, page
