"""Explorer data loading on a large store: 100 runs × 200 evaluation steps × 50 metrics.

Writes a synthetic store (curves shaped like phase changes; the point is the size, not the
numbers) with the real RunWriter, then times what the app's pages do: scanning the runs,
the runs table, loading curves for all runs (3 metrics, and all 50), and the mean ± sd bands.

    python benchmarks/app_loading.py [--runs 100] [--steps 200] [--metrics 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from icl_lab import explore
from icl_lab.store import RunWriter


def make_store(root: Path, runs: int, steps: int, metrics: int) -> None:
    rng = np.random.default_rng(0)
    names = ["icl_accuracy", "iwl_accuracy", "train_loss"] + [f"measure_{i}" for i in range(metrics - 3)]
    for r in range(runs):
        record = {"task": "bursty", "preset": f"cond{r % 10}", "seed": r // 10, "interventions": []}
        writer = RunWriter.create(root / f"cond{r % 10}-seed{r // 10}", record, verb="benchmark")
        center = rng.uniform(50, 150)
        for s in range(steps):
            values = {n: float(1 / (1 + np.exp(-(s - center) / 5)) + rng.normal(0, 0.01)) for n in names}
            writer.add_metrics(s * 50, values)
        writer.flush_metrics()
        writer.write_summary({"transitions": {"icl_accuracy": {"transition_step": int(center) * 50}}})
        writer.set_status("done")
        writer.close()


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"{label:<38} {1000 * (time.perf_counter() - start):8.1f} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--metrics", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_store(root, args.runs, args.steps, args.metrics)
        print(f"store: {args.runs} runs x {args.steps} steps x {args.metrics} metrics written in {time.perf_counter() - start:.1f} s")
        infos = timed("scan runs (Runs page)", lambda: explore.scan_runs(root))
        timed("runs table", lambda: explore.runs_table(infos))
        three = timed("curves, all runs, 3 metrics", lambda: explore.load_curves(infos, ["icl_accuracy", "iwl_accuracy", "train_loss"]))
        full = timed("curves, all runs, all metrics", lambda: explore.load_curves(infos))
        timed("mean ± sd bands over seeds, 3 metrics", lambda: explore.condition_bands(three))
        print(f"rows loaded: {full.height:,} (all metrics), {three.height:,} (3 metrics)")
        # the pages themselves, through Streamlit's test runner (server side: data + chart specs)
        from streamlit.testing.v1 import AppTest

        app = Path(__file__).resolve().parent.parent / "apps" / "explore.py"
        at = AppTest.from_file(str(app), default_timeout=300)
        at.session_state["root"] = str(root)
        timed("Runs page, first draw", lambda: at.run())
        timed("Runs page, redraw", lambda: at.run())
        at.sidebar.radio(key="page").set_value("Phase changes").run()
        every = list(at.sidebar.multiselect(key="selected").options)
        timed(f"Phase changes page, {len(every)} runs, 2 panels", lambda: at.sidebar.multiselect(key="selected").set_value(every).run())
        timed("same, log x and log y", lambda: at.checkbox(key="logx").check().run() and at.checkbox(key="logy").check().run())
        timed("same, mean ± sd bands over seeds", lambda: at.checkbox(key="bands").check().run())
        for page in ("Ablations", "Attention patterns", "Grokking & RFM"):  # the synthetic runs have none: the message
            timed(f"{page} page", lambda: at.sidebar.radio(key="page").set_value(page).run())
        assert not at.exception, at.exception


if __name__ == "__main__":
    main()
