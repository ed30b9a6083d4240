"""RFM train-fraction dependence (Mallinar et al. 2024): final test accuracy per fraction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from icl_lab.rfm.machine import RFMConfig, run_rfm
from icl_lab.store import load_run, run_state


def run_fractions(out: str | Path, fractions: list[float], base: RFMConfig, progress: bool = True) -> pl.DataFrame:
    out = Path(out)
    rows = []
    for fraction in fractions:
        run_dir = out / f"frac{fraction:g}"
        if run_state(run_dir) != "done":
            run_rfm(dataclasses.replace(base, train_fraction=fraction), run_dir, progress=progress, overwrite=True)
        run = load_run(run_dir)
        curve = run.curve("test_accuracy")
        rows.append({
            "train_fraction": fraction,
            "final_test_accuracy": curve["value"].to_list()[-1],
            "first_iteration_0.99": run.summary.get("first_iteration_test_accuracy_0.99"),
            "transition_iteration": run.summary["transitions"]["test_accuracy"]["transition_step"],
            "wall_seconds": run.summary["wall_seconds"],
        })
    table = pl.DataFrame(rows)
    table.write_parquet(out / "rfm_train_fraction.parquet")
    return table
