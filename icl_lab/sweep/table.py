"""The sweep's layout and its table: OUT/sweep.toml, OUT/runs/<name>, and OUT/sweep.parquet with
one row per member (axis values, status, the last line of its error, final metrics and
transition steps of the finished ones), with its one-line verdict."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from icl_lab.grid_policy import live_writer
from icl_lab.store import MEMBER_STATES, RunError, atomic_write, load_run, read_status
from icl_lab.sweep.spec import SweepRun



class SweepPaths:
    """OUT/sweep.toml, OUT/sweep.parquet and OUT/runs/<name>; inside a run the store decides."""

    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.spec, self.table, self.runs = self.dir / "sweep.toml", self.dir / "sweep.parquet", self.dir / "runs"

    def run(self, name: str) -> Path:
        return self.runs / name


def write_sweep_table(runs: list[SweepRun], layout: SweepPaths) -> pl.DataFrame:
    table = summarize_sweep(runs, layout)
    atomic_write(layout.table, lambda tmp: table.write_parquet(tmp))
    return table


def summarize_sweep(runs: list[SweepRun], layout: SweepPaths) -> pl.DataFrame:
    """One row per member: axis values, status (MEMBER_STATES), the last line of its error,
    final metrics and transition steps of the done ones."""
    rows = []
    for run in runs:
        folder = layout.run(run.name)
        row: dict[str, Any] = {"run": run.name}
        row.update({f"axis.{k}": str(v) for k, v in run.axes.items()})
        try:
            status = read_status(folder)
        except RunError as err:
            status = {"state": "failed", "error": str(err)}
        error = (status.get("error") or "").strip()
        holder = live_writer(folder)
        row["status"] = "locked" if holder else "pending" if status["state"] == "unknown" else status["state"]
        row["error"] = f"being written by {holder}" if holder else error.splitlines()[-1] if error else ""
        if row["status"] == "done":
            r = load_run(folder)
            for metric, value in sorted(r.summary.get("final", {}).items()):
                row[f"final.{metric}"] = float(value)
            for metric, t in r.summary.get("transitions", {}).items():
                row[f"transition.{metric}"] = t.get("transition_step")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def sweep_outcome(table: pl.DataFrame, shown: int = 3) -> tuple[int, str]:
    """(exit code, one line) for a sweep table: 0 when every member is done, else 1; the line
    counts members by status and names each one not done with the last line of its error,
    e.g. "3 done, 1 failed: seed=2: RuntimeError: ...". """
    line = status_counts(table)
    bad = table.filter(pl.col("status") != "done")
    details = [f"{name}: {error or status}" for name, status, error in bad.select("run", "status", "error").iter_rows()]
    if len(details) > shown:
        details = details[:shown] + [f"and {len(details) - shown} more (see sweep.parquet)"]
    return (1 if bad.height else 0), line + (": " + "; ".join(details) if details else "")


def status_counts(table: pl.DataFrame) -> str:
    """"3 done, 1 failed": members by status, in MEMBER_STATES order."""
    counts = Counter(table["status"].to_list())
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (MEMBER_STATES + (s,)).index(s)))
