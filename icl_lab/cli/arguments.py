"""Argument types and checks shared by the verbs: each refuses a bad value with a message
naming it and the valid range, before any work starts (exit code 2)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from icl_lab.config import ConfigError
from icl_lab.run_config import MAX_SEED

MAX_COUNT = 2**63 - 1  # steps are stored as int64


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line that says what was left and how to go on (`main` prints it)."""


@contextlib.contextmanager
def stops_resumably(run_dir: Path) -> Iterator[None]:
    """Turn Ctrl-C during a run into one line: the run's state and the command that resumes it."""
    try:
        yield
    except KeyboardInterrupt:
        from icl_lab.store import read_status

        try:
            state = read_status(run_dir)["state"]
        except Exception:  # noqa: BLE001  (no status yet, or unreadable: nothing resumable)
            state = None
        if state == "stopped":
            raise Interrupted(f"run {run_dir} is stopped and resumable: icl-lab resume {run_dir}") from None
        if state is None:
            raise Interrupted(f"run {run_dir} was not started; nothing was written") from None
        raise Interrupted(f"run {run_dir} is left {state!r}; `icl-lab resume {run_dir}` continues it where it can") from None


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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads(text: str) -> int:
    """Torch CPU threads: an integer from 1 to the cores this process may use."""
    value = _integer(text)
    cores = usable_cores()
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(
            f"{text} must be an integer in 1..{cores}, the cores this process may use "
            "(more threads than cores only slow a run down)"
        )
    return value


# The default thread policy, from benchmarks/threads.py (bursty/small, 2 idle cores, figures in
# docs/performance.md): with OpenMP's default spinning, two 2-thread runs side by side fell to 0.14x of
# one 1-thread run; icl-lab sets OMP_WAIT_POLICY=PASSIVE (icl_lab/openmp.py), after which a
# lone run gains 1.23x from its second thread and two 2-thread runs together lose 4% against
# two 1-thread runs. So a run and an experiment take torch's own count (the cores), and a sweep
# splits the cores between its workers.
SINGLE_RUN_THREADS = None
THREADS_HELP = ("torch CPU threads (1..cores); default {default}; OMP_NUM_THREADS, when set, is the default instead. "
                "Recorded in config.json (device_description)")
SINGLE_RUN_DEFAULT = ("the cores (with passive OpenMP waiting, set by icl_lab, a second thread speeds a lone run up and "
                      "costs little when another process shares the cores: benchmarks/threads.py)")


@contextlib.contextmanager
def cpu_threads(requested: int | None, default: int | None) -> Iterator[int]:
    """Torch's CPU threads while a verb runs, then the previous count again (for callers of
    `main` in one process): `requested` (--threads), else the count torch took from
    OMP_NUM_THREADS when it is set, else `default` (None: torch's own, the cores)."""
    import torch

    previous = torch.get_num_threads()
    if requested is None:
        requested = previous if default is None or "OMP_NUM_THREADS" in os.environ else default
    torch.set_num_threads(requested)
    try:
        yield requested
    finally:
        torch.set_num_threads(previous)


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
