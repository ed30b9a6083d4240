"""`icl-lab resume RUN [--steps N]`: continue a stopped run from its newest intact checkpoint,
or train a run (finished or not) on to N steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_lab.checkpoints import run_config_of
from icl_lab.cli.arguments import SINGLE_RUN_DEFAULT, SINGLE_RUN_THREADS, THREADS_HELP, cpu_threads, stops_resumably, threads
from icl_lab.cli.export import add_log_arguments, logging_to
from icl_lab.store import check_run, intact_state_steps, read_status


HELP = "continue a stopped run (killed, failed or interrupted) from its latest checkpoint, or train a run on to --steps N"
DESCRIPTION = (
    "Restore weights, optimizer, schedule and data stream from the run's newest intact checkpoint and train to its "
    "configured length; the result equals an uninterrupted run. With --steps N, train the run (finished or not) on to "
    "N steps: with a constant schedule the result equals a run configured with N steps (config.json's train.steps "
    "becomes N; its `extended` list records the part)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--threads", type=threads, default=None, metavar="N",
                        help=THREADS_HELP.format(default=SINGLE_RUN_DEFAULT).replace("Recorded in", "The first part's count is in"))
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="train on to N steps, more than the run's configured length (constant schedules only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with logging_to(args):  # --log: checked before anything starts
        return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    config = run_config_of(run_dir)  # RunError: not a run, or a corrupt config.json
    check_run(run_dir)  # every file of the run readable, or one line naming the bad one
    if args.steps is not None:
        from icl_lab.train import check_extension

        check_extension(config, args.steps)  # ConfigError before anything is built or written
    elif read_status(run_dir)["state"] == "done":
        print(f"{run_dir} is done; nothing to resume (--steps N trains it on to N steps)")
        return 0
    steps, _ = intact_state_steps(run_dir)  # none: train refuses, naming the run
    if steps:
        print(f"resuming {run_dir} from step {steps[-1]} to {args.steps or config.train.steps}")
    from icl_lab.train import extend, train  # builds the model: imports TransformerLens

    with stops_resumably(run_dir), cpu_threads(args.threads, SINGLE_RUN_THREADS):
        if args.steps is not None:
            result = extend(run_dir, args.steps, progress=not args.no_progress)
        else:
            result = train(config, run_dir, progress=not args.no_progress, resume=True)
    print(f"done in {result.summary['wall_seconds']:.1f} s (this part); run stored in {run_dir.resolve()}")
    return 0
