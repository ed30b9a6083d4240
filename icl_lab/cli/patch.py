"""`icl-lab patch RUN`: clean → corrupted activation patching per component of a stored run."""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_lab.cli.ablate import OVER, print_table
from icl_lab.store import read_config


HELP = "clean → corrupted activation patching per component of a stored run"
DESCRIPTION = "Patch each component's activation on the clean ICL set into the run on its relabelled twin; report the fraction of the logit difference restored."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--step", type=int, default=-1, help="checkpoint step (default: the last)")
    parser.add_argument("--over", default="heads", choices=OVER, help="which components")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    read_config(run_dir)  # RunError: not a run, or a corrupt config.json
    from icl_lab.ablate import patching_scan  # loads the model: imports TransformerLens

    return print_table(patching_scan(run_dir, step=args.step, over=args.over), run_dir)
