"""Run an experiment's grid of (run directory, config) pairs, batched where the members allow.

    timing = run_grid([(out / "K256-B1-seed0", config), ...], group_size=None)

What happens to each run is the grid policy's (icl_lab/grid_policy.py), the sweeps' too:
finished runs are kept (an experiment run again picks up where it stopped); a stored run whose
config is not the one asked for is refused, never mixed in; a run that was started and stopped
(killed, Ctrl-C, failed) resumes from its newest checkpoint, exactly; every other run is new.
Runs that can share a batched pass (`icl_lab.batched.partition`: same model shapes, steps,
batch size, device) train together by `train_group`, at most `group_size` at a time, the
resumed ones with those resuming from the same step. `group_size=1` trains them one by one with
`train`, the way a plain loop over the grid would (the wall-time baseline).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from icl_lab.config import ConfigError
from icl_lab.grid_policy import WantedRun, plan_grid, train_batch
from icl_lab.run_config import RunConfig
from icl_lab.store import RunLocked


@dataclass
class GridTiming:
    """What ran and how long it took (the caller reports it beside its table)."""

    wall_seconds: float = 0.0
    trained: int = 0  # runs trained from the start in this call
    resumed: int = 0
    kept: int = 0  # finished before this call
    groups: int = 0  # train_group calls (group_size != 1)
    group_size: int | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run_grid(runs: list[tuple[Path, RunConfig]], group_size: int | None = None, progress: bool = False) -> GridTiming:
    """Train what the grid policy says of `runs` (ConfigError, before any work, for a stored
    run with another config; RunLocked for a run another live process writes)."""
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ConfigError(f"group_size must be a positive number of runs, got {group_size!r}")
    timing = GridTiming(group_size=group_size)
    start = time.perf_counter()
    plan = plan_grid([WantedRun(Path(out), config) for out, config in runs], retry_failed=True)
    if plan.locked:
        run, holder = plan.locked[0]
        raise RunLocked(f"run {run.run_dir} is being written by {holder}; wait for it or give another --out")
    if plan.resuming_line():
        print(plan.resuming_line(), flush=True)
    for batch in plan.batches(group_size):
        train_batch(batch, progress=progress, verb="experiment")
        timing.groups += batch.size > 1
    timing.kept, timing.resumed, timing.trained = len(plan.kept), len(plan.resumed), len(plan.new)
    timing.wall_seconds = time.perf_counter() - start
    return timing


def markdown_table(columns: list[str], rows: list[list]) -> list[str]:
    """A markdown table's lines: the header, its rule, then one line per row (cells as given)."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds (None where undefined: no values, or one)."""
    mean = statistics.fmean(values) if values else None
    return mean, statistics.stdev(values) if len(values) > 1 else None
