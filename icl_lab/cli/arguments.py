"""Argument types and checks shared by the verbs: each refuses a bad value with a message
naming it and the valid range, before any work starts (exit code 2)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from icl_lab.config import ConfigError
from icl_lab.run_config import MAX_SEED

MAX_COUNT = 2**63 - 1  # steps are stored as int64


class UsageError(ConfigError):
    """Bad command-line input: reported with exit code 2."""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text} is not a seed; seeds are integers 0..{MAX_SEED}")
    return value


def count(text: str) -> int:
    """A number of steps, iterations or workers: an integer >= 1."""
    value = _integer(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text} must be an integer in 1..{MAX_COUNT}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N, checked against this machine (the name is kept as given)."""
    from icl_lab.provenance import resolve_device

    try:
        resolve_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def comma_list(item_type, what: str):
    """An argument type for `a,b,c`: each part converted by `item_type`; empty parts dropped."""

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expects comma-separated {what}, got {text!r}")
        try:
            return [item_type(part) for part in parts]
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"expects comma-separated {what}, got {text!r}: {err}") from None

    return parse


def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def check_output_folder(flag: str, folder: Path) -> Path:
    """Refuse, writing nothing, a folder that cannot hold runs: a file or an unwritable place."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{flag} {folder}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {folder}: cannot write to {existing} (permission denied); choose another {flag}")
    return folder
