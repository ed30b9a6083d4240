"""`icl-lab experiment NAME`: run a paper reproduction (icl_lab/experiments/)."""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

from icl_lab.cli.arguments import THREADS_HELP, UsageError, check_output_folder, comma_list, count, cpu_threads, device, names, seed, threads
from icl_lab.cli.run_names import run_name, set_items
from icl_lab.cli.export import add_log_arguments, logging_to
from icl_lab.cli.train import parse_sets
from icl_lab.experiments import EXPERIMENTS

# experiment name -> module with run_experiment(out, seeds, steps=, progress=, overrides=, ...)
# -> table and markdown(table) -> str; imported when the experiment runs (they train models)
RUNNERS = {
    "singh-clamps": "icl_lab.experiments.singh",
    "anti-grokking": "icl_lab.experiments.antigrokking",
    "reddy-phases": "icl_lab.experiments.reddy",
    "llc-stages": "icl_lab.experiments.llc_stages",
    "transience": "icl_lab.experiments.transience",
    "nanda-phases": "icl_lab.experiments.nanda",
}
# the options beyond seeds/steps/--set each experiment takes (checked before any run), and
# its default preset
OPTIONS = {
    "singh-clamps": {"preset": "pairs/cpu", "conditions": None, "group_size": None},
    "reddy-phases": {"preset": "bursty/small", "grid": None, "group_size": None},
    "anti-grokking": {},
    "nanda-phases": {},
    "llc-stages": {"preset": "bursty/small", "conditions": None, "group_size": None, "workers": None, "llc_from": 10},
    "transience": {"preset": "bursty/transience", "conditions": None, "group_size": None, "hold_from": None},
}
FLAGS = {"preset": "--preset", "conditions": "--conditions", "grid": "--grid", "group_size": "--group-size",
         "workers": "--workers", "llc_from": "--llc-from", "hold_from": "--hold-from"}


HELP = "run a paper reproduction"
DESCRIPTION = "Run a paper reproduction. " + " ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items())


def grid_axis(text: str) -> tuple[str, list[int]]:
    """KEY=V1,V2,... (integers)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=V1,V2,... (e.g. task.num_classes=256,1024)")
    return key.strip(), comma_list(count, key.strip())(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(RUNNERS), help="which experiment")
    parser.add_argument("--seeds", type=comma_list(seed, "seeds"), default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--steps", type=count, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--out", default=None, help="directory for its runs and table (default runs/<name>, with what --preset, --steps "
                        "and --set change, e.g. runs/reddy-phases-steps=500)")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=threads, default=None, metavar="N",
                        help=THREADS_HELP.format(default="the cores (the runs train as batched groups, whose ops are M times a run's)"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--preset", default=None,
        help="singh-clamps: TASK/NAME, or NAME of a pairs preset (default pairs/cpu; bursty/small: the bursty-task "
        "conditions); reddy-phases: a bursty preset (default bursty/small); llc-stages: bursty/small (default) or pairs/cpu; "
        "transience: a bursty or pairs preset (default bursty/transience)",
    )
    parser.add_argument("--conditions", type=names, default=None, help="singh-clamps, llc-stages, transience: comma-separated conditions (default all; singh-clamps adds baselines)")
    parser.add_argument(
        "--grid", type=grid_axis, action="append", default=None, metavar="KEY=V1,V2,...",
        help="reddy-phases: replace one axis of the grid (task.num_classes, default 256,512,1024,2048,8192; "
        "task.burstiness, default 1,2,4); repeatable",
    )
    parser.add_argument(
        "--group-size", type=count, default=None, metavar="M",
        help="singh-clamps, reddy-phases, llc-stages, transience: train at most M runs of the grid together as one batched group "
        "(default: every run that shares the model's shapes; 1: one run at a time)",
    )
    parser.add_argument(
        "--workers", type=count, default=None, metavar="W",
        help="llc-stages: processes measuring the LLC side by side, one torch thread each (default: the cores)",
    )
    parser.add_argument(
        "--llc-from", dest="llc_from", type=count, default=None, metavar="STEP",
        help="llc-stages: the first checkpoint step whose LLC is estimated (default 10)",
    )
    parser.add_argument(
        "--hold-from", dest="hold_from", type=count, default=None, metavar="STEP",
        help="transience: the step from which hold_induction holds the head (default: where each seed's first ICL rise ends in its unclamped run)",
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field of every run, e.g. train.lr=1e-3 or llc.num_draws=400; repeatable",
    )
    add_log_arguments(parser)


def continue_command(args: argparse.Namespace, out: Path) -> str:
    """This experiment's command line with the options that choose its runs: running it again
    keeps the finished runs and resumes the stopped ones (their status.json names it)."""
    words = ["icl-lab", "experiment", args.name, "--out", str(out), "--seeds", ",".join(map(str, args.seeds))]
    chosen = {"--steps": args.steps, "--device": None if args.device == "auto" else args.device, "--preset": args.preset,
              "--conditions": ",".join(args.conditions) if args.conditions else None, "--group-size": args.group_size, "--llc-from": args.llc_from,
              "--hold-from": args.hold_from}
    words += [word for flag, value in chosen.items() if value is not None for word in (flag, str(value))]
    words += [word for key, values in (args.grid or []) for word in ("--grid", f"{key}={','.join(map(str, values))}")]
    words += [word for item in args.sets for word in ("--set", item)]
    return shlex.join(words)


def default_out(args: argparse.Namespace) -> str:
    """runs/<name>[-<what --preset, --steps and --set change>]: an experiment run again with
    other seeds, conditions or grid values shares its folder (the finished runs are kept), one
    whose runs differ gets its own (icl_lab/cli/run_names.py)."""
    preset = [f"preset={args.preset}"] if args.preset is not None else []
    steps = [f"train.steps={args.steps}"] if args.steps is not None else []
    return f"runs/{run_name(args.name, preset + set_items([*args.sets, *steps], skip=('seed', 'device')))}"


def run(args: argparse.Namespace) -> int:
    with logging_to(args):  # --log: checked before anything starts
        return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    out = check_output_folder("--out", Path(args.out or default_out(args)))
    overrides = {**parse_sets(args.sets), "device": args.device}
    given = {"preset": args.preset, "conditions": args.conditions, "group_size": args.group_size,
             "grid": dict(args.grid) if args.grid else None, "workers": args.workers, "llc_from": args.llc_from,
             "hold_from": args.hold_from}
    options = {}
    for option, value in given.items():
        if option in OPTIONS[args.name]:
            options[option] = value if value is not None else OPTIONS[args.name][option]
        elif value is not None:
            takers = [name for name, accepted in OPTIONS.items() if option in accepted]
            raise UsageError(f"{FLAGS[option]} applies to {', '.join(takers)}, not {args.name}")
    runner = importlib.import_module(RUNNERS[args.name])
    from icl_lab.lifecycle import continued_by

    with cpu_threads(args.threads, None), continued_by(continue_command(args, out)):
        table = runner.run_experiment(out, args.seeds, steps=args.steps, progress=not args.no_progress, overrides=overrides, **options)
    print(runner.markdown(table))
    if hasattr(runner, "report"):  # e.g. the grid's wall time
        print(runner.report(out))
    if hasattr(runner, "FIGURE_STEM"):  # its headline figure, written beside the table
        stem = (out / runner.FIGURE_STEM).resolve()
        print(f"figure: {stem}.png and {stem}.svg")
    print(f"runs and table in {out.resolve()}")
    return 0
