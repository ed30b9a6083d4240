"""`icl-lab ablate RUN`: ablate each component of a stored run and tabulate its measures' change."""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_lab.cli.arguments import names
from icl_lab.store import paths, read_config

OVER = ["heads", "positions", "layers"]  # also patch's

HELP = "ablate each component of a stored run and tabulate the change of its measures"
DESCRIPTION = "Evaluation-only interventions, one component at a time; the table is stored in RUN/ablations/."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--step", type=int, default=-1, help="checkpoint step (default: the last)")
    parser.add_argument("--kind", default="zero", choices=["zero", "mean", "resample"], help="what the component becomes")
    parser.add_argument("--over", default="heads", choices=OVER, help="which components")
    parser.add_argument("--metrics", type=names, default=None, help="comma-separated metrics to report (default: all the run records)")


def print_table(table, run_dir: Path) -> int:
    import polars as pl

    with pl.Config(tbl_rows=200):
        print(table)
    print(f"table stored in {paths(run_dir).ablations.resolve()}")
    return 0


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    read_config(run_dir)  # RunError: not a run, or a corrupt config.json
    from icl_lab.ablate import ablation_scan  # loads the model: imports TransformerLens

    return print_table(ablation_scan(run_dir, step=args.step, kind=args.kind, over=args.over, metrics=args.metrics), run_dir)
