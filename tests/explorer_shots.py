"""Real-browser screenshots of every explorer page over a store (tests/mixed_store.py's, by
default), to look at: `streamlit run apps/explore.py` on localhost, headless Chromium.

    python tests/explorer_shots.py /tmp/explorer-store /tmp/explorer-shots
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import free_port, streamlit_server  # noqa: E402
from test_app_browser import PAGES, chromium  # noqa: E402


CLICKS = {"Phase changes": [("mean ± sd over seeds", "phase-changes-bands.png")],
          "Grokking & RFM": [("mask the diagonal", "grokking-rfm-unmasked.png")]}  # page -> (label clicked, shot)


def shoot(store: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    port, shots = free_port(), []
    with tempfile.TemporaryDirectory() as scratch, streamlit_server(port, "--server.address", "127.0.0.1", cwd=Path(scratch), runs=store):
        with chromium(Path(scratch) / "chrome") as browser:
            for page, testid in PAGES.items():
                shot = out / f"{page.lower().replace(' & ', '-').replace(' ', '-')}.png"
                dom = browser.load(f"http://127.0.0.1:{port}/?page={urllib.parse.quote(page)}", shot, testid)
                problems = [w for w in ("stException", "Traceback", "could not be drawn") if w in dom]
                print(f"{shot}: {'PROBLEM ' + ', '.join(problems) if problems else 'drawn'}")
                shots.append(shot)
                for label, name in CLICKS.get(page, ()):  # a view one click away, e.g. the bands over seeds
                    found = browser.call("Runtime.evaluate", returnByValue=True, expression=(
                        f"(() => {{ const l = [...document.querySelectorAll('label')].find(l => l.innerText.includes({label!r}));"
                        " if (!l) return false; (l.querySelector('input') || l).click(); return true; })()"))
                    assert found["result"]["value"], f"no {label!r} on {page}"
                    time.sleep(3)  # the rerun starts
                    shots.append(out / name)
                    browser.settle(out / name, testid)
                    print(f"{out / name}: after clicking {label!r}")
    return shots


if __name__ == "__main__":
    shoot(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/explorer-store"), Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/explorer-shots"))
