"""`icl-lab sweep SPEC.toml --out DIR`: a grid of runs from a TOML file, in parallel, resumable.

Exit code 0 when every run of the grid is done, else 1, with a line naming the runs not done;
130 after Ctrl-C, with how to continue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icl_lab.cli.arguments import UsageError, check_output_folder, count


HELP = "run a grid of runs from a TOML file, in parallel, resumable"
DESCRIPTION = "Expand a sweep file (base run, axes, conditions, ablations) to a grid of runs; finished runs are kept, failures recorded; results in OUT/sweep.parquet. Exit code 1 when a run failed."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the sweep TOML file")
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes (default) or Ray tasks")
    parser.add_argument("--workers", type=count, default=1, help="runs at a time (default 1)")
    parser.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from icl_lab.sweep import SweepInterrupted, load_sweep, run_sweep, sweep_outcome

    loaded = load_sweep(args.spec)  # everything checked before any run starts
    runs = loaded[0]
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    out = check_output_folder("--out", Path(args.out))
    print(f"sweep of {len(runs)} runs -> {out.resolve()}")
    try:
        table = run_sweep(args.spec, out, executor=args.executor, workers=args.workers,
                          retry_failed=args.retry_failed, progress=not args.no_progress, loaded=loaded)
    except SweepInterrupted as stop:  # Ctrl-C: how to continue, without a traceback
        print(f"icl-lab sweep: {stop}", file=sys.stderr)
        return 130
    with pl.Config(tbl_rows=100, tbl_cols=12):
        print(table.select([c for c in table.columns if not c.startswith("final.") or "accuracy" in c]))
    code, line = sweep_outcome(table)
    print(line)
    return code
