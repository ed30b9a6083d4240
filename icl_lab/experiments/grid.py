"""Run an experiment's grid of (run directory, config) pairs, batched where the members allow.

    timing = run_grid([(out / "K256-B1-seed0", config), ...], group_size=None)

Finished runs are kept (an experiment run again picks up where it stopped; a stored run
whose config is not the one asked for is refused, never mixed in); a run that was
started and stopped (killed, Ctrl-C, failed) resumes alone from its newest checkpoint, exactly
as `icl-lab resume` would; every other run is new, and new runs that can share a batched pass
(`icl_lab.batched.partition`: same model shapes, steps, batch size, device) are trained
together by `train_group`, at most `group_size` at a time. `group_size=1` trains them one by
one with `train`, the way a plain loop over the grid would (the wall-time baseline).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from icl_lab.config import ConfigError
from icl_lab.run_config import RunConfig
from icl_lab.store import run_state


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


def check_same_config(out: Path, config: RunConfig) -> None:
    """A run kept or resumed must be the run the grid asks for (not an older version of it)."""
    from icl_lab.checkpoints import run_config_of

    stored, wanted = run_config_of(out).to_dict(), config.to_dict()
    if stored != wanted:
        differ = ", ".join(k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k))
        raise ConfigError(
            f"{out} holds a run with another config (it differs in {differ}); the experiment would "
            "mix it into its table. Move or delete it, or give another --out"
        )


def run_grid(runs: list[tuple[Path, RunConfig]], group_size: int | None = None, progress: bool = False) -> GridTiming:
    from icl_lab.batched import partition, train_group
    from icl_lab.train import train

    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be a positive number of runs, got {group_size}")
    timing = GridTiming(group_size=group_size)
    start = time.perf_counter()
    new: list[tuple[Path, RunConfig]] = []
    for out, config in runs:
        state = run_state(out)
        if state != "missing":
            check_same_config(out, config)
        if state == "done":
            timing.kept += 1
        elif state == "missing":
            new.append((out, config))
        else:  # started before: continue it alone (exact resume)
            train(config, out, progress=progress, resume=True)
            timing.resumed += 1
    groups = [[i] for i in range(len(new))] if group_size == 1 else partition([c for _, c in new], group_size)
    for group in groups:
        if len(group) == 1:  # alone (also what partition gives an unbatchable run)
            train(new[group[0]][1], new[group[0]][0], progress=progress)
        else:
            train_group([new[i][1] for i in group], [new[i][0] for i in group], progress=progress)
            timing.groups += 1
    timing.trained = len(new)
    timing.wall_seconds = time.perf_counter() - start
    return timing


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds (None where undefined: no values, or one)."""
    mean = statistics.fmean(values) if values else None
    return mean, statistics.stdev(values) if len(values) > 1 else None
