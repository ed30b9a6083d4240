"""`icl-lab export RUN... --to tensorboard|wandb|trackio [--dest DIR] [--replace]`: runs' metrics into a
tracker, offline; and `--log` (`add_log_arguments`, `logging_to`), the same trackers
mirrored live by the verbs that train."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from icl_lab.tracking.backends import BACKENDS

HELP = "export runs' metrics to TensorBoard, W&B (offline) or trackio; the runs are not changed"
DESCRIPTION = ("Copy each run's metrics.parquet into a tracker, offline: TensorBoard event files, a W&B offline run, "
               "trackio's local store. Every run is checked first (a running or corrupt run is refused, naming it) and "
               "nothing is written unless all of them export. Default --dest: runs/tracking/<backend>.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--to", required=True, metavar="BACKEND", help=f"the tracker: {', '.join(BACKENDS)}")
    parser.add_argument("--dest", default=None, help="where the export goes (default runs/tracking/<backend>)")
    parser.add_argument("--replace", action="store_true", help="replace the runs' earlier exports in --dest (else refused)")


def run(args: argparse.Namespace) -> int:
    from icl_lab.tracking import default_destination, export_runs, parse_backends

    backend = parse_backends([args.to])[0]  # the name and the extra, before the runs are read
    dest = args.dest if args.dest is not None else default_destination(backend)
    placed = export_runs(args.runs, backend, dest, replace=args.replace)
    for run_dir, where in zip(args.runs, placed):
        print(f"{run_dir} -> {where}")
    print(f"exported {len(args.runs)} run(s) to {backend} in {dest} (offline)")
    return 0


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """--log BACKEND[,BACKEND] and --log-dir DIR, for the verbs that train."""
    parser.add_argument("--log", default=None, metavar="BACKEND[,BACKEND]",
                        help=f"mirror each run's metrics, as they are written, to trackers ({', '.join(BACKENDS)}), offline")
    parser.add_argument("--log-dir", default=None, metavar="DIR", help="where --log writes (default runs/tracking/<backend>)")


@contextlib.contextmanager
def logging_to(args: argparse.Namespace) -> Iterator[None]:
    """The block's runs mirror their metrics as `--log` asks; an unknown backend or a missing
    extra is refused (with the install command) before anything starts."""
    if getattr(args, "log", None) is None:
        if getattr(args, "log_dir", None) is not None:
            from icl_lab.cli.arguments import UsageError

            raise UsageError("--log-dir needs --log BACKEND")
        yield
        return
    from icl_lab.tracking import mirror_metrics

    with mirror_metrics(args.log, args.log_dir):
        yield
