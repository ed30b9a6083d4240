"""One real-browser test: `streamlit run apps/explore.py` on localhost, loaded in headless
Chromium (Debian's `chromium`, installed by .ci/run). The screenshot is kept in
tests/artifacts/explore-runs.png."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_app import free_port, streamlit_server

from icl_lab import get_preset
from icl_lab.train import train

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("chromium is not installed; .ci/run installs Debian's chromium for this test", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def test_app_renders_the_runs_table_in_a_real_browser(tmp_path):
    store = tmp_path / "runs"
    config = get_preset("bursty", "small").config.with_overrides({
        "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32, "model.d_model": 16,
        "train.steps": 8, "train.eval_every": 4, "device": "cpu",
    })
    train(config, store / "browser-demo", progress=False)
    port = free_port()
    with streamlit_server(port, "--server.address", "127.0.0.1", cwd=tmp_path, runs=store):
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "explore-runs.png"
        flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900", "--virtual-time-budget=20000"]
        url = f"http://127.0.0.1:{port}/"
        # The first session imports torch and the lab (seconds); later sessions reuse them.
        # Chromium's virtual time does not wait for the websocket, so load until it has rendered.
        dom = ""
        for _ in range(6):
            dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
            if 'data-testid="stDataFrame"' in dom:
                break
            time.sleep(3)
        for _ in range(6):  # the same for the screenshot: a blank page is a few KB, a drawn one tens
            subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
            if shot.exists() and shot.stat().st_size > 20_000:
                break
            time.sleep(3)
        assert 'data-testid="stDataFrame"' in dom, dom[-2000:]
        assert "stException" not in dom and "Traceback" not in dom
        assert "icl-lab explorer" in dom and "Runs" in dom
        assert shot.exists() and shot.stat().st_size > 20_000
