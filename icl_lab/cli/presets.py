"""`icl-lab presets`: list the named presets and their parameters."""

from __future__ import annotations

import argparse

from icl_lab.presets import describe_presets


HELP = "list the named presets and their parameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass  # no arguments


def run(args: argparse.Namespace) -> int:
    print(describe_presets())
    return 0
