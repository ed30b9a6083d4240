"""A sweep's members at work: one Batch of the grid policy trained (a run alone or a group, from
the start or resumed), each member's ablation scans, and failures recorded, never raised.

    outcomes = run_batch(batch, members, command)   # [{"name", "state", "error"}, ...]

A group that fails (one member's loss diverges, one member's directory cannot be replaced)
stops all its members; each then goes on alone as the grid policy continues it (from its newest
intact checkpoint where it has one), so the member at fault fails with its own error and the
others finish, as they would have under the local executor. Ctrl-C (KeyboardInterrupt)
propagates, the runs marked stopped by the trainer with `command` as the way to continue them.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from icl_lab.grid_policy import Batch, WantedRun, plan_grid, train_batch
from icl_lab.lifecycle import continued_by
from icl_lab.store import RunError, RunLocked, read_status, record_failure
from icl_lab.sweep.executors import interruptible, stop_requested
from icl_lab.sweep.spec import SweepRun


def run_batch(batch: Batch, members: tuple[SweepRun, ...], command: str, threads: int | None = None) -> list[dict[str, Any]]:
    """Train `batch` (its runs are `members`' run directories) and scan each finished member;
    each member's {"name", "state", "error"}. `command`: what continues a stopped member."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    with interruptible(), continued_by(command):
        if stop_requested():  # the sweep stopped first
            return [{"name": member.name, "state": "pending", "error": ""} for member in members]
        return _train_and_scan(batch, members)


def _train_and_scan(batch: Batch, members: tuple[SweepRun, ...]) -> list[dict[str, Any]]:
    try:
        train_batch(batch, verb="sweep")
    except Exception as err:
        if batch.size == 1:
            return [member_failure(members[0], batch.runs[0].run_dir, err)]
        reason = (str(err).splitlines() or [""])[0]
        print(f"icl-lab sweep: the group of {', '.join(m.name for m in members)} failed "
              f"({type(err).__name__}: {reason}); training its members alone", file=sys.stderr)
        return [outcome for run, member in zip(batch.runs, members) for outcome in _continue_alone(run, member)]
    return [scan_member(member, run.run_dir) for run, member in zip(batch.runs, members)]


def _continue_alone(run: WantedRun, member: SweepRun) -> list[dict[str, Any]]:
    """A member of a failed group, on its own as the grid policy continues it."""
    plan = plan_grid([run], retry_failed=True)
    if plan.locked:
        return [{"name": member.name, "state": "locked", "error": plan.locked[0][1]}]
    for batch in plan.batches(group_size=1):
        return _train_and_scan(batch, (member,))
    return [scan_member(member, run.run_dir)]  # it finished before the group failed


def scan_member(run: SweepRun, out: Path) -> dict[str, Any]:
    """A trained member's ablation scans; its outcome as `run_batch` gives it."""
    try:
        for scan in run.ablations:
            from icl_lab.ablate import ablation_scan

            ablation_scan(out, kind=scan.get("kind", "zero"), over=scan.get("over", "heads"), metrics=scan.get("metrics"))
    except Exception as err:
        return member_failure(run, out, err)
    return {"name": run.name, "state": "done", "error": ""}


def member_failure(run: SweepRun, out: Path, err: Exception) -> dict[str, Any]:
    """The outcome of a member whose work raised `err`. The failure is recorded in its status
    unless the trainer recorded this very error; a member another process holds is `locked`,
    its files untouched."""
    if isinstance(err, RunLocked):
        return {"name": run.name, "state": "locked", "error": str(err)}
    message = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        status = read_status(out)
    except RunError:
        status = {}
    recorded = status.get("state") == "failed" and f"{type(err).__name__}: {err}" in (status.get("error") or "")
    if not recorded:
        try:  # the trainer records failures of a run it started; this is any other
            record_failure(out, run.config, message, verb="sweep")
        except RunLocked as locked:
            return {"name": run.name, "state": "locked", "error": str(locked)}
    return {"name": run.name, "state": "failed", "error": str(err)}
