"""RFM train-fraction dependence (Mallinar et al. 2024): final test accuracy per fraction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from icl_lab import figures
from icl_lab.config import to_dict
from icl_lab.rfm.machine import RFMConfig, run_rfm
from icl_lab.store import load_run, read_config, run_state
from icl_lab.stored_config import check_stored_config

FIGURE_STEM = "rfm_train_fraction"  # OUT/rfm_train_fraction.png and .svg: every fraction's curves


def run_fractions(out: str | Path, fractions: list[float], base: RFMConfig, progress: bool = True) -> pl.DataFrame:
    """Run RFM at each train fraction and tabulate. A finished run is kept when its stored config
    is the one asked for, and refused (ConfigError naming it and what differs, before any work)
    when it is not; an unfinished one starts again (RFM keeps no training state to resume)."""
    out = Path(out)
    configs = {fraction: dataclasses.replace(base, train_fraction=fraction) for fraction in fractions}
    for fraction, config in configs.items():
        run_dir = out / f"frac{fraction:g}"
        if run_state(run_dir) == "done":
            check_stored_config(run_dir, read_config(run_dir).get("rfm", {}), to_dict(config),
                                doing="move or delete it, or give another --out (the table keeps only the runs it asks for)")
    rows = []
    for fraction, config in configs.items():
        run_dir = out / f"frac{fraction:g}"
        if run_state(run_dir) != "done":
            run_rfm(config, run_dir, progress=progress, overwrite=True)
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
    groups = {f"train fraction {fraction:g}": [out / f"frac{fraction:g}"] for fraction in fractions}
    figures.save_figure(figures.rfm_figure(groups), out / FIGURE_STEM)
    return table
