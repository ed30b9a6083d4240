"""`icl-lab`: the command line. One module per verb holds its parser and its handler.

    icl-lab train TASK [--preset P] [--steps N] [--seed S] [--device auto|cpu|cuda|cuda:N]
                       [--threads N] [--out DIR] [--set KEY=VALUE ...] [--intervention SPEC.toml ...] [--overwrite]
    icl-lab presets
    icl-lab resume RUN [--threads N]
    icl-lab rfm [--op add|sub|mul|div] [--p P] [--train-frac F | --train-fracs F,F,...] [--iters N] ...
    icl-lab ablate RUN [--step N] [--kind zero|mean|resample] [--over heads|positions|layers] [--metrics M,...]
    icl-lab patch RUN [--step N] [--over heads|positions|layers]
    icl-lab measure RUN [--measures M,...] [--steps S,... | all] [--device D]
    icl-lab sweep SPEC.toml --out DIR [--executor local|ray|batched] [--group-size M] [--workers N] [--threads N] [--retry-failed]
    icl-lab experiment singh-clamps|reddy-phases|anti-grokking|llc-stages|transience|nanda-phases [--seeds 0,1,2] [--steps N] [--out DIR] [--device D]
                       [--threads N] [--preset P] [--set KEY=VALUE ...] [--conditions C,...] [--grid KEY=V,...]
                       [--group-size M]
    icl-lab export RUN... --to tensorboard|wandb|trackio [--dest DIR] [--replace]
    icl-lab plot RUN... --metrics M,... [--out FILE.png|.svg] [--log-x] [--log-y] [--by run|condition]
    icl-lab plot RUN --figure nanda|rfm [--out FILE.png|.svg]

train, resume, rfm, sweep and experiment take `--log BACKEND[,BACKEND] [--log-dir DIR]`: each
run's metrics mirrored to trackers as they are written, offline (icl_lab.tracking).

Every argument is checked before any work starts: a bad value exits with code 2 and one line
`icl-lab VERB: error: ...` naming it and the valid choices, with nothing written. `--help`,
`presets` and the refusals answer without importing TransformerLens (seconds): a handler
imports the modules that build models only when it runs. `--threads` sets torch's CPU threads
(default: 1 for a run, the cores for an experiment's batched groups, the cores split between a
sweep's workers; see icl_lab/cli/arguments.py). A run that fails at run time (a non-finite
loss, out of memory, a clamp that never fired) exits 1 with one line naming it, its traceback
kept in its status.json; `sweep` exits with 1 when a run of its grid failed. Ctrl-C exits 130
with one line: the run's state and the command that continues it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from icl_lab.cli import ablate, experiment, export, measure, patch, plot, presets, resume, rfm, sweep, train
from icl_lab.cli.arguments import Interrupted
from icl_lab.config import ConfigError
from icl_lab.openmp import prefer_passive_openmp

# verb -> its module: HELP (one line), DESCRIPTION (optional), add_arguments(parser) and
# run(args) -> exit code
VERBS = {
    "train": train,
    "presets": presets,
    "resume": resume,
    "rfm": rfm,
    "ablate": ablate,
    "patch": patch,
    "measure": measure,
    "sweep": sweep,
    "experiment": experiment,
    "export": export,
    "plot": plot,
}


def register_verb(name: str, module) -> None:
    """Add a verb (a module with HELP, add_arguments and run). A name another module holds is
    refused, naming that module; registering the same module again is a no-op."""
    taken = VERBS.get(name)
    if taken is not None and taken is not module:
        raise ValueError(f"CLI verb {name!r} is already registered by {taken.__name__}; choose another name")
    VERBS[name] = module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icl-lab",
        description="Train small TransformerLens models on synthetic tasks and watch abilities emerge.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, verb in VERBS.items():
        verb.add_arguments(sub.add_parser(name, help=verb.HELP, description=getattr(verb, "DESCRIPTION", None)))
    return parser


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()  # where runs start, beside the thread policy (icl_lab/openmp.py)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)  # exits 2 on unknown verbs, choices, options and bad values
    try:
        return VERBS[args.command].run(args)
    except ConfigError as err:  # RunError (a bad run directory or file) is one
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        parser.exit(2, f"icl-lab {args.command}: error: {message}\n")
    except Exception as err:  # a run that failed at run time (non-finite loss, out of memory, a clamp that never fired)
        run = getattr(err, "failed_run", None)
        if run is None:
            raise
        reason = (str(err).strip().splitlines() or [""])[0]
        print(f"icl-lab {args.command}: run {run} failed: {type(err).__name__}: {reason} "
              f"(the traceback is in {run}/status.json)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C: one line and 130, never a traceback through torch
        how = str(stop) if isinstance(stop, Interrupted) else f"rerun `{shlex.join(['icl-lab', *argv])}` to go on from where it stopped"
        print(f"icl-lab {args.command}: interrupted (Ctrl-C); {how}", file=sys.stderr)
        return 130

