"""Explorer data loading and page draws on large stores: N runs × 200 evaluation steps × 50 metrics.

Writes a synthetic store per size (curves shaped like phase changes; the point is the size, not
the numbers) with the real RunWriter, laid out as a sweep: OUT/runs/cond<c>-seed<s>, the sweep
table OUT/sweep.parquet (axes condition and seed, final metrics) and a clamp-condition table
OUT/runs/singh_clamps.parquet over the same runs. Then times what the app does: scanning the
runs, the runs table, loading curves, the mean ± sd bands, and each page's draw through
Streamlit's test runner (server side: data and chart specs, no browser).

    python benchmarks/app_loading.py [--runs 100 1000] [--steps 200] [--metrics 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from icl_lab import explore
from icl_lab.store import RunWriter

CONDITIONS = 10  # runs are cond<r % 10>-seed<r // 10>
PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns", "Grokking & RFM", "Sweeps", "Clamp conditions")


def make_store(root: Path, runs: int, steps: int, metrics: int) -> None:
    rng = np.random.default_rng(0)
    names = ["icl_accuracy", "iwl_accuracy", "train_loss"] + [f"measure_{i}" for i in range(metrics - 3)]
    members, centres = [], {}
    for r in range(runs):
        condition, seed = f"cond{r % CONDITIONS}", r // CONDITIONS
        record = {"task": "bursty", "preset": condition, "seed": seed, "interventions": []}
        name = f"{condition}-seed{seed}"
        writer = RunWriter.create(root / "runs" / name, record, verb="benchmark")
        center = rng.uniform(50, 150)
        for s in range(steps):
            values = {n: float(1 / (1 + np.exp(-(s - center) / 5)) + rng.normal(0, 0.01)) for n in names}
            writer.add_metrics(s * 50, values)
        writer.flush_metrics()
        final = {n: values[n] for n in names[:3]}
        writer.write_summary({"transitions": {"icl_accuracy": {"transition_step": int(center) * 50}}, "final": final})
        writer.set_status("done")
        writer.close()
        members.append({"run": name, "axis.condition": condition, "axis.seed": str(seed), "status": "done", "error": "",
                        **{f"final.{n}": v for n, v in final.items()}, "transition.icl_accuracy": int(center) * 50})
        centres.setdefault(condition, []).append(int(center) * 50)
    pl.DataFrame(members).write_parquet(root / "sweep.parquet")
    rows = []
    for condition, found in centres.items():
        mean = float(np.mean(found))
        rows.append({"condition": condition, "baseline": "" if condition == "cond0" else "cond0", "seeds": len(found),
                     "transition_steps": found, "transition_steps_mean": mean, "transition_sequences_mean": 8 * mean,
                     "transition_sequences_sd": float(8 * np.std(found, ddof=1)) if len(found) > 1 else None,
                     "ratio_to_baseline": mean / float(np.mean(centres["cond0"])), "plateau_seeds": len(found)})
    pl.DataFrame(rows).write_parquet(root / "runs" / "singh_clamps.parquet")


def timed(label: str, fn, times: dict | None = None):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"  {label:<44} {1000 * seconds:9.1f} ms", flush=True)
    if times is not None:
        times[label] = seconds
    return out


def time_pages(root: Path) -> dict[str, float]:
    """Each page's draw through Streamlit's AppTest (with the runs scanned and cached by the first draw)."""
    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parent.parent / "apps" / "explore.py"
    at = AppTest.from_file(str(app), default_timeout=900)
    at.session_state["root"] = str(root)
    times: dict[str, float] = {}
    timed("Runs page, first draw (scans every run)", lambda: at.run(), times)
    timed("Runs", lambda: at.run(), times)
    timed("Phase changes (12 runs, the default)", lambda: at.sidebar.radio(key="page").set_value("Phase changes").run(), times)
    every = list(at.sidebar.multiselect(key="selected").options)
    timed("Phase changes, every run", lambda: at.sidebar.multiselect(key="selected").set_value(every).run(), times)
    timed("  same, mean ± sd bands over seeds", lambda: at.checkbox(key="bands").check().run(), times)
    for page in PAGES[2:]:
        timed(page, lambda: at.sidebar.radio(key="page").set_value(page).run(), times)  # noqa: B023  (called at once)
        assert not at.exception and not at.error, (page, at.exception, [e.value for e in at.error])
    timed("  Sweeps, another cell compared", lambda: at.sidebar.radio(key="page").set_value("Sweeps").run()
          and at.selectbox(key="sweep-cell").set_value(at.selectbox(key="sweep-cell").options[-1]).run()
          and at.button(key="sweep-compare").click().run(), times)
    assert not at.exception, at.exception
    return times


def bench(runs: int, steps: int, metrics: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_store(root, runs, steps, metrics)
        print(f"store: {runs} runs x {steps} steps x {metrics} metrics written in {time.perf_counter() - start:.1f} s", flush=True)
        infos = timed("scan runs", lambda: explore.scan_runs(root))
        timed("runs table", lambda: explore.runs_table(infos))
        three = timed("curves, all runs, 3 metrics", lambda: explore.load_curves(infos, ["icl_accuracy", "iwl_accuracy", "train_loss"]))
        full = timed("curves, all runs, all metrics", lambda: explore.load_curves(infos))
        timed("mean ± sd bands over seeds, 3 metrics", lambda: explore.condition_bands(three))
        timed("find sweep and experiment tables", lambda: explore.tables.find_tables(root))
        print(f"  rows loaded: {full.height:,} (all metrics), {three.height:,} (3 metrics)")
        return time_pages(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[100], help="store sizes to time, e.g. --runs 100 1000")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--metrics", type=int, default=50)
    args = parser.parse_args()
    results = {runs: bench(runs, args.steps, args.metrics) for runs in args.runs}
    print("\npage draw (s)".ljust(46) + "".join(f"{f'{runs} runs':>12}" for runs in results))
    for label in next(iter(results.values())):
        print(f"{label:<45}" + "".join(f"{times[label]:12.2f}" for times in results.values()))


if __name__ == "__main__":
    main()
