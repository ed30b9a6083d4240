"""`icl-lab sweep SPEC.toml --out DIR`: a grid of runs from a TOML file, in parallel, resumable.

Exit code 0 when every run of the grid is done, else 1, with a line naming the runs not done;
130 after Ctrl-C, with how to continue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icl_lab.cli.arguments import UsageError, check_output_folder, count, threads
from icl_lab.cli.export import add_log_arguments, logging_to


HELP = "run a grid of runs from a TOML file, in parallel, resumable"
DESCRIPTION = ("Expand a sweep file (base run, axes, conditions, ablations) to a grid of runs; finished runs are kept, stopped ones "
               "resumed, failures recorded; a file whose runs differ from those already in --out is refused; results in "
               "OUT/sweep.parquet. Exit code 1 when a run failed.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="the sweep TOML file")
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--executor", default="local", choices=["local", "ray", "batched"],
                        help="local processes (default), Ray tasks, or batched: compatible runs trained together in one process")
    parser.add_argument("--workers", type=count, default=1, help="runs (or groups) at a time (default 1)")
    parser.add_argument("--group-size", type=count, default=None, metavar="M",
                        help="runs per batched group (--executor batched: default 64; --executor ray: ship groups of M as tasks)")
    parser.add_argument("--threads", type=threads, default=None, metavar="N",
                        help="torch CPU threads of each run or group (1..cores); default: the cores split between the "
                        "workers (OMP_NUM_THREADS, when set, in place of the cores). Recorded in each run's config.json")
    parser.add_argument("--retry-failed", action="store_true", help="continue the runs recorded as failed (from their newest intact checkpoint, else from the start)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with logging_to(args):  # --log: checked before anything starts
        return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    import polars as pl

    from icl_lab.sweep import SweepInterrupted, load_sweep, run_sweep, sweep_outcome

    if args.group_size is not None and args.executor == "local":
        raise UsageError(f"--group-size {args.group_size} needs --executor batched or ray; "
                         "--executor local trains one run per worker")
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
                          retry_failed=args.retry_failed, progress=not args.no_progress, loaded=loaded, threads=args.threads,
                          group_size=args.group_size)
    except SweepInterrupted as stop:  # Ctrl-C: how to continue, without a traceback
        print(f"icl-lab sweep: {stop}", file=sys.stderr)
        return 130
    with pl.Config(tbl_rows=100, tbl_cols=12):
        print(table.select([c for c in table.columns if not c.startswith("final.") or "accuracy" in c]))
    code, line = sweep_outcome(table)
    print(line)
    return code
