"""The batched sweep executor: a sweep's compatible members trained together, in one process.

    icl-lab sweep SPEC --out OUT --executor batched [--group-size M] [--workers N]
    icl-lab sweep SPEC --out OUT --executor ray --group-size M

The pending members that start afresh are split by `icl_lab.batched.partition` into groups that
share the model's shapes, steps, batch size and device, at most M each (default GROUP_SIZE), and
each group trains with `train_group` (one vmapped forward and backward for all its members):
`--workers` groups at a time in the sweep's worker processes, or as Ray tasks that ask for a GPU
when this machine has one. A member that resumes from a checkpoint, or that cannot be batched
(a `running_mean` clamp), trains alone as the local executor trains it. Every member is an
ordinary run (its summary names its group), so the sweep's layout, table, exit code, resume,
locks and Ctrl-C are those of icl_lab.sweep.

A group that fails (one member's loss diverges, one member's directory cannot be replaced)
stops all its members; each then trains alone, from its newest intact checkpoint where it has
one, so the member at fault fails with its own error and the others finish, as they would have
under the local executor.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

from icl_lab.config import ConfigError
from icl_lab.run_config import RunConfig
from icl_lab.sweep import (
    Job,
    SweepPaths,
    SweepRun,
    _can_resume,
    _interruptible,
    _stopped,
    run_one,
    scan_member,
)

GROUP_SIZE = 64  # members per group when --group-size is not given
GROUPING_EXECUTORS = ("batched", "ray")


def check_group_size(executor: str, group_size: int | None) -> None:
    """Refuse a group size the executor cannot use, before any work."""
    if group_size is None:
        return
    if executor not in GROUPING_EXECUTORS:
        raise ConfigError(f"group size {group_size} needs an executor that trains groups ({', '.join(GROUPING_EXECUTORS)}); "
                          f"executor {executor!r} trains one run per worker")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ConfigError(f"group size must be a whole number of runs >= 1, got {group_size!r}")


def grouped_jobs(todo: list[tuple[SweepRun, bool]], layout: SweepPaths, group_size: int | None = None) -> list[Job]:
    """The jobs for the pending members `todo` (each with whether it resumes): one per group of
    at most `group_size` fresh members, one per member that trains alone; the largest first, so
    that workers finish together. A group's Ray task asks for a GPU when one is present."""
    import torch

    from icl_lab.batched import partition

    fresh = [run for run, resume in todo if not resume]
    jobs = [Job(partial(run_one, run, layout.run(run.name), resume=True)) for run, resume in todo if resume]
    resources = {"num_gpus": 1} if torch.cuda.is_available() else {"num_cpus": 1}
    for group in partition([RunConfig.from_dict(run.config) for run in fresh], group_size or GROUP_SIZE):
        runs = [fresh[i] for i in group]
        if len(runs) == 1:
            jobs.append(Job(partial(run_one, runs[0], layout.run(runs[0].name))))
        else:
            jobs.append(Job(partial(run_group, runs, [layout.run(run.name) for run in runs]), len(runs), resources))
    return sorted(jobs, key=lambda job: -job.size)


def run_group(runs: list[SweepRun], run_dirs: list[str | Path], threads: int | None = None) -> list[dict[str, Any]]:
    """Train `runs` together into `run_dirs`, then each one's ablation scans; each member's
    {"name", "state", "error"} as `run_one` gives it. A group that fails: each member alone
    (see the module docstring). Ctrl-C propagates, every member marked stopped."""
    import torch

    from icl_lab.batched import train_group

    if threads is not None:
        torch.set_num_threads(threads)
    outs = [Path(d) for d in run_dirs]
    with _interruptible():
        if _stopped():
            return [{"name": run.name, "state": "pending", "error": ""} for run in runs]
        try:
            train_group([RunConfig.from_dict(run.config) for run in runs], outs, overwrite=True)
        except Exception as err:
            reason = (str(err).splitlines() or [""])[0]
            print(f"icl-lab sweep: the group of {', '.join(run.name for run in runs)} failed "
                  f"({type(err).__name__}: {reason}); training its members alone", file=sys.stderr)
            return [run_one(run, out, resume=_can_resume(out, run)) for run, out in zip(runs, outs)]
        return [scan_member(run, out) for run, out in zip(runs, outs)]
