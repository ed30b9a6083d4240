"""`icl-lab plot RUN... --metrics M,...`: any runs' curves to PNG and SVG, drawn with the
explorer's own charts; `--figure nanda|rfm`: one run in its paper's layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_lab.cli.arguments import UsageError, check_output_folder, names
from icl_lab.config import did_you_mean

HELP = "draw runs' curves (or a paper's figure of a run) to PNG and SVG"
DESCRIPTION = (
    "Draw the curves of METRICS for every RUN with the explorer's charts (one panel per metric family: train_loss and "
    "test_loss share one), writing OUT's .png and .svg. --figure nanda: a modular run as Nanda et al. (2023) Fig. 7 "
    "(train/test, restricted and excluded loss on a log scale, s1 and s2); --figure rfm: an RFM run's accuracy and "
    "circulant deviation against iteration (Mallinar et al. 2024)."
)
FIGURES = {"nanda": "modular_arithmetic", "rfm": "feature_matrix"}  # figure -> the capability its run declares
SUFFIXES = (".png", ".svg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--metrics", type=names, default=None, help="comma-separated metrics to draw (required without --figure)")
    parser.add_argument("--figure", choices=sorted(FIGURES), default=None, help="draw one run as its paper's figure")
    parser.add_argument("--out", default=None, metavar="FILE.png|FILE.svg",
                        help="where to write (both .png and .svg are written; default plot.png here, or RUN_<figure>.png "
                        "beside the run with --figure)")
    parser.add_argument("--log-x", action="store_true", help="log step axis (step 0 left out)")
    parser.add_argument("--log-y", action="store_true", help="log value axis (values <= 0 left out)")
    parser.add_argument("--by", choices=["run", "condition"], default="run",
                        help="a curve per run (default), or mean ± sd over the seeds of each condition")


def check_runs(runs: list[str]) -> list[Path]:
    """Every RUN is a run folder this lab wrote, with readable metrics (RunError names the file)."""
    from icl_lab.store import is_run_dir, load_metrics

    paths = [Path(r) for r in runs]
    for path in paths:
        if not is_run_dir(path):
            what = "does not exist" if not path.exists() else "is not a run folder (no icl-lab config.json and status.json)"
            raise UsageError(f"RUN {path} {what}")
        load_metrics(path)
    return paths


def check_metrics(paths: list[Path], wanted: list[str]) -> None:
    """Each metric is recorded by at least one of the runs; else the runs' metrics are named."""
    from icl_lab.store import load_metrics

    recorded = sorted({m for p in paths for m in load_metrics(p)["metric"].unique().to_list()})
    for metric in wanted:
        if metric not in recorded:
            where = paths[0] if len(paths) == 1 else f"{len(paths)} runs"
            raise UsageError(f"--metrics: {metric!r} is not a metric of {where}.{did_you_mean(metric, recorded)} "
                             f"Their metrics: {', '.join(recorded) or 'none recorded yet'}")


def output_stem(out: str | None, default: Path) -> Path:
    """OUT without its suffix (.png or .svg, or none); its folder must be writable."""
    path = Path(out) if out is not None else default
    if path.suffix and path.suffix not in SUFFIXES:
        raise UsageError(f"--out {path}: a figure is written as {' and '.join(SUFFIXES)}, not {path.suffix!r}")
    check_output_folder("--out", path.parent)
    return path.with_suffix("") if path.suffix else path


def check_figure(figure: str, paths: list[Path]) -> None:
    """--figure draws one run whose maker declares what the figure needs."""
    from icl_lab.explore import declarations_of
    from icl_lab.store import read_config

    if len(paths) != 1:
        raise UsageError(f"--figure {figure} draws one run, got {len(paths)}")
    declared = declarations_of(read_config(paths[0]))
    if FIGURES[figure] not in declared.capabilities:
        kind = {"nanda": "a modular-arithmetic transformer run (icl-lab train modular)", "rfm": "an RFM run (icl-lab rfm)"}[figure]
        raise UsageError(f"--figure {figure} needs {kind}; {paths[0]} is not one")


def run(args: argparse.Namespace) -> int:
    paths = check_runs(args.runs)
    if args.figure is not None:
        if args.metrics or args.log_x or args.log_y or args.by != "run":
            raise UsageError(f"--figure {args.figure} draws its paper's layout: leave out --metrics, --log-x, --log-y and --by")
        check_figure(args.figure, paths)
        stem = output_stem(args.out, paths[0].parent / f"{paths[0].name}_{args.figure}")
    else:
        if not args.metrics:
            raise UsageError("give --metrics M1,M2,... (or --figure nanda|rfm)")
        check_metrics(paths, args.metrics)
        stem = output_stem(args.out, Path("plot"))
    from icl_lab import figures

    notes = []
    if args.figure == "nanda":
        chart = figures.nanda_figure(paths[0])
    elif args.figure == "rfm":
        chart = figures.rfm_figure({paths[0].name: paths})
    else:
        chart, notes = figures.runs_figure(paths, args.metrics, by=args.by, log_x=args.log_x, log_y=args.log_y)
    png, svg = figures.save_figure(chart, stem)
    for note in notes:
        print(note)
    print(f"figure written: {png.resolve()} and {svg.resolve()}")
    return 0
