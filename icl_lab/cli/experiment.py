"""`icl-lab experiment NAME`: run a paper reproduction (icl_lab/experiments/)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from icl_lab.cli.arguments import UsageError, check_output_folder, comma_list, count, device, names, seed
from icl_lab.cli.train import parse_sets
from icl_lab.experiments import EXPERIMENTS

# experiment name -> module with run_experiment(out, seeds, steps=, progress=, overrides=) -> table
# and markdown(table) -> str; imported when the experiment runs (they train models)
RUNNERS = {
    "singh-clamps": "icl_lab.experiments.singh",
    "anti-grokking": "icl_lab.experiments.antigrokking",
}
# experiments whose runner also takes preset= and conditions= (checked before any run)
WITH_CONDITIONS = {"singh-clamps": "pairs/cpu"}


HELP = "run a paper reproduction"
DESCRIPTION = "Run a paper reproduction. " + " ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(RUNNERS), help="which experiment")
    parser.add_argument("--seeds", type=comma_list(seed, "seeds"), default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=count, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--out", default=None, help="directory for its runs and table (default runs/<name>)")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--preset", default=None,
        help="singh-clamps: TASK/NAME, or NAME of a pairs preset (default pairs/cpu; bursty/small: the bursty-task conditions)",
    )
    parser.add_argument("--conditions", type=names, default=None, help="singh-clamps: comma-separated conditions (default all; baselines are added)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field of every run, e.g. train.lr=1e-3; repeatable",
    )


def run(args: argparse.Namespace) -> int:
    out = check_output_folder("--out", Path(args.out or f"runs/{args.name}"))
    overrides = {**parse_sets(args.sets), "device": args.device}
    runner = importlib.import_module(RUNNERS[args.name])
    options = {}
    if args.name in WITH_CONDITIONS:
        options = {"preset": args.preset or WITH_CONDITIONS[args.name], "conditions": args.conditions}
    elif args.preset or args.conditions:
        raise UsageError(f"--preset and --conditions apply to {', '.join(WITH_CONDITIONS)}, not {args.name}")
    table = runner.run_experiment(out, args.seeds, steps=args.steps, progress=not args.no_progress, overrides=overrides, **options)
    print(runner.markdown(table))
    print(f"runs and table in {out.resolve()}")
    return 0
