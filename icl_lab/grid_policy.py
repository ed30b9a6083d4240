"""The grid-of-runs policy: what happens to each run a sweep or an experiment asks for.

    plan = plan_grid([WantedRun(out / "seed0", config), ...], retry_failed=True)
    for batch in plan.batches(group_size=None):
        train_batch(batch, verb="experiment")

For each wanted (run directory, RunConfig), read from the store before any work:
- a directory whose stored config.json differs from the wanted config is refused: a ConfigError
  naming the run and the differing keys (a grid never keeps, resumes or mixes into its table a
  run it did not ask for);
- `done`: kept;
- written by a live process (its lock held): `locked`, left alone;
- `failed`: left alone unless `retry_failed`, then continued as a started run;
- started (`stopped` by Ctrl-C, `running` but its writer gone, or failed and retried): resumed
  from its newest intact checkpoint, exactly as if it had never stopped; one without an intact
  checkpoint starts again from step 0 (exact too);
- new (no directory, an empty one, or one left by a run interrupted while it was created):
  trained from the start.
Runs that can share a batched pass (`icl_lab.batched.partition`: same model shapes, steps, batch
size, device) train together in groups of at most `group_size` (1: each alone); a resumed run
shares a group only with runs resuming from the same step, so a group stopped together goes on
together. A group member is an ordinary run, so `icl-lab resume` also continues it alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from icl_lab.config import ConfigError
from icl_lab.run_config import RunConfig
from icl_lab.store import RunError, RunLock, intact_state_steps, read_status, record_failure
from icl_lab.stored_config import check_stored_config


@dataclass(frozen=True)
class WantedRun:
    """A run the grid asks for: its directory and its config."""

    run_dir: Path
    config: RunConfig


@dataclass(frozen=True)
class Batch:
    """One training call: a run alone or a group trained together; `resume`: every run continues
    from its newest intact checkpoint (the same step for all)."""

    runs: tuple[WantedRun, ...]
    resume: bool = False

    @property
    def size(self) -> int:
        return len(self.runs)


@dataclass
class GridPlan:
    """The wanted runs sorted by what the policy does with them."""

    kept: list[WantedRun] = field(default_factory=list)  # done
    locked: list[tuple[WantedRun, str]] = field(default_factory=list)  # and who writes it
    failed: list[WantedRun] = field(default_factory=list)  # failed, not retried
    resumed: list[tuple[WantedRun, int]] = field(default_factory=list)  # and the step it resumes from
    new: list[WantedRun] = field(default_factory=list)  # trained from the start

    def batches(self, group_size: int | None = None) -> list[Batch]:
        """The training calls: groups of at most `group_size` runs (None: no limit; 1: each run
        alone), fresh runs with fresh runs, resumed ones with those resuming from the same step."""
        by_step: dict[int, list[WantedRun]] = defaultdict(list)
        for run, step in self.resumed:
            by_step[step].append(run)
        return ([batch for runs in by_step.values() for batch in _grouped(runs, group_size, resume=True)]
                + _grouped(self.new, group_size, resume=False))

    def resuming_line(self) -> str | None:
        """"resuming 2 run(s) from their checkpoints: a (step 40), b (step 40)", or None."""
        if not self.resumed:
            return None
        names = ", ".join(f"{run.run_dir.name} (step {step})" for run, step in self.resumed[:5])
        more = f" and {len(self.resumed) - 5} more" if len(self.resumed) > 5 else ""
        return f"resuming {len(self.resumed)} run(s) from their checkpoints: {names}{more}"


def _grouped(runs: list[WantedRun], group_size: int | None, resume: bool) -> list[Batch]:
    from icl_lab.batched import partition

    if group_size == 1:
        return [Batch((run,), resume) for run in runs]
    groups = partition([run.config for run in runs], group_size)
    return [Batch(tuple(runs[i] for i in group), resume) for group in groups]


def live_writer(run_dir: Path) -> str | None:
    """Who is writing `run_dir` now (a live process holding its lock), or None."""
    holder = RunLock.holder(run_dir)
    return holder.describe() if holder is not None and holder.alive() else None


def _stored_state(run_dir: Path) -> str | None:
    """The run's state from status.json; None when it has none (or an unreadable one)."""
    try:
        state = read_status(run_dir)["state"]
    except RunError:
        return None
    return None if state == "unknown" else state


def _stored_config(run: WantedRun, state: str | None) -> dict | None:
    """The config stored in the run's directory, normalised; None when nothing was trained there
    (a leftover is replaced, never kept) or its config.json cannot be read (it starts again)."""
    from icl_lab.checkpoints import run_config_of

    if state is None:
        return None
    try:
        return run_config_of(run.run_dir).to_dict()
    except RunError:
        if state == "done":
            raise  # a finished run whose config cannot be read is not kept blindly
        return None


def plan_grid(wanted: list[WantedRun], retry_failed: bool = True) -> GridPlan:
    """Sort the wanted runs by the policy (module docstring). Reads the store, writes nothing;
    ConfigError, before any work, for a stored run with another config or two runs in one place."""
    seen: dict[Path, WantedRun] = {}
    for run in wanted:
        if run.run_dir.resolve() in seen:
            raise ConfigError(f"two runs of the grid are both stored in {run.run_dir}; give each its own directory")
        seen[run.run_dir.resolve()] = run
    plan, refusals = GridPlan(), []
    for run in wanted:
        state = _stored_state(run.run_dir)
        stored = _stored_config(run, state)
        if stored is not None:
            try:
                check_stored_config(run.run_dir, stored, run.config.to_dict(),
                                    doing="move or delete it, or give another --out (a grid keeps only the runs it asks for)")
            except ConfigError as err:
                refusals.append(str(err))
                continue
        writer = live_writer(run.run_dir)
        if writer is not None:
            plan.locked.append((run, writer))
        elif state == "done":
            plan.kept.append(run)
        elif state == "failed" and not retry_failed:
            plan.failed.append(run)
        elif state is None:
            plan.new.append(run)
        else:  # stopped, running with its writer gone, failed and retried
            steps = intact_state_steps(run.run_dir)[0] if stored is not None else []
            if steps:
                plan.resumed.append((run, steps[-1]))
            else:
                plan.new.append(run)
    if refusals:
        others = f" ({len(refusals) - 1} other run(s) of the grid differ too)" if len(refusals) > 1 else ""
        raise ConfigError(refusals[0] + others)
    return plan


def train_batch(batch: Batch, *, progress: bool = False, verb: str = "train") -> None:
    """Train one Batch: `train` for a run alone, `train_group` for a group, from the start or
    resumed. A fresh run replaces what its directory holds, which must be a run the lab wrote:
    a directory left by a run interrupted while it was created is first recorded as failed
    (by `verb`), so that it can be replaced; anything else there is refused by the store."""
    from icl_lab.batched import train_group
    from icl_lab.train import train

    if not batch.resume:
        for run in batch.runs:
            if run.run_dir.is_dir() and any(run.run_dir.iterdir()) and _stored_state(run.run_dir) is None:
                record_failure(run.run_dir, run.config.to_dict(), "interrupted before the run started", verb=verb)
    configs, outs = [run.config for run in batch.runs], [run.run_dir for run in batch.runs]
    if batch.size == 1:
        train(configs[0], outs[0], progress=progress, overwrite=not batch.resume, resume=batch.resume)
    else:
        train_group(configs, outs, progress=progress, overwrite=not batch.resume, resume=batch.resume)
