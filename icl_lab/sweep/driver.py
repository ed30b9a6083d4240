"""Running a sweep: its members sorted by the grid policy, the jobs run by an executor, the table.

    table = run_sweep("grid.toml", "runs/grid", executor="batched", workers=2)

Executors: "local" (one run per job, in this process or `workers` worker processes), "batched"
(compatible members trained together as groups of at most `group_size`, default GROUP_SIZE, in
the same places) and "ray" (Ray tasks; with `group_size`, groups as tasks that ask for a GPU when
this machine has one). What is kept, resumed, trained or refused is icl_lab.grid_policy's
decision, the same for every executor and for the experiments; a rerun whose sweep file asks for
other runs than --out holds (e.g. train.steps changed) is refused before anything is written.
"""

from __future__ import annotations

import shlex
from functools import partial
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from icl_lab.config import ConfigError
from icl_lab.grid_policy import Batch, GridPlan, WantedRun, plan_grid
from icl_lab.store import atomic_write_bytes
from icl_lab.sweep.executors import Job, default_threads, run_here, run_in_workers, run_on_ray
from icl_lab.sweep.members import run_batch
from icl_lab.sweep.spec import SweepRun, load_sweep
from icl_lab.sweep.table import SweepPaths, status_counts, write_sweep_table

EXECUTORS = ("local", "ray", "batched")
GROUPING_EXECUTORS = ("batched", "ray")
GROUP_SIZE = 64  # members per group of the batched executor when no group size is given


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; the message counts the members and says how to continue.
    `table` is the sweep table as it was left (also written to OUT/sweep.parquet)."""

    def __init__(self, message: str, table: pl.DataFrame):
        super().__init__(message)
        self.table = table


def check_sweep_options(executor: str, workers: int, threads: int | None, group_size: int | None) -> None:
    """Refuse, before any work, options the sweep cannot use (ConfigError naming the value)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if group_size is not None:
        if executor not in GROUPING_EXECUTORS:
            raise ConfigError(f"group size {group_size} needs an executor that trains groups ({', '.join(GROUPING_EXECUTORS)}); "
                              f"executor {executor!r} trains one run per worker")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ConfigError(f"group size must be a whole number of runs >= 1, got {group_size!r}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")


def continue_command(spec: str | Path, out: str | Path, executor: str, group_size: int | None) -> str:
    """The command that continues this sweep (its stopped members' status.json names it)."""
    words = ["icl-lab", "sweep", str(spec), "--out", str(out)]
    if executor != "local":
        words += ["--executor", executor]
    if group_size is not None:
        words += ["--group-size", str(group_size)]
    return shlex.join(words)


def sweep_jobs(batches: list[Batch], members: dict[Path, SweepRun], command: str) -> list[Job]:
    """One job per batch of the grid policy (`members`: each run directory's member), the
    largest first so that workers finish together; a group's Ray task asks for a GPU when
    this machine has one."""
    import torch

    group_resources = {"num_gpus": 1} if torch.cuda.is_available() else {"num_cpus": 1}
    jobs = [Job(partial(run_batch, batch, tuple(members[run.run_dir] for run in batch.runs), command), batch.size,
                group_resources if batch.size > 1 else {"num_cpus": 1}) for batch in batches]
    return sorted(jobs, key=lambda job: -job.size)


def plan_sweep(runs: list[SweepRun], layout: SweepPaths, spec: str | Path, retry_failed: bool) -> GridPlan:
    """The grid policy's plan for the sweep's members; a member stored with another config
    refuses the whole sweep, naming it and what differs."""
    wanted = [WantedRun(layout.run(run.name), run.run_config()) for run in runs]
    try:
        return plan_grid(wanted, retry_failed=retry_failed)
    except ConfigError as err:
        raise ConfigError(f"sweep {spec} asks for other runs than --out {layout.dir} holds: {err}") from None


def run_sweep(
    spec: str | Path, out: str | Path, executor: str = "local", workers: int = 1,
    retry_failed: bool = False, progress: bool = True, threads: int | None = None,
    loaded: tuple[list[SweepRun], str] | None = None, group_size: int | None = None,
) -> pl.DataFrame:
    """Run every pending member of the sweep in `spec` into `out` and return the sweep table
    (see `sweep_outcome` for its verdict). `threads`: torch threads per run (default
    `default_threads(workers)`); `loaded`: `load_sweep(spec)` when the caller already has it.
    Executor "batched", or "ray" with a `group_size`, trains compatible members together, at
    most `group_size` per group. Ctrl-C raises SweepInterrupted."""
    check_sweep_options(executor, workers, threads, group_size)
    threads = threads or default_threads(workers)
    runs, text = loaded or load_sweep(spec)
    layout = SweepPaths(out)
    plan = plan_sweep(runs, layout, spec, retry_failed)
    layout.runs.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.spec, text.encode())
    if plan.resuming_line():
        print(plan.resuming_line())
    size = group_size or (GROUP_SIZE if executor == "batched" else 1)
    command = continue_command(spec, layout.dir, executor, group_size)
    jobs = sweep_jobs(plan.batches(size), {layout.run(run.name): run for run in runs}, command)
    pending = sum(job.size for job in jobs)
    bar = tqdm(total=len(runs), initial=len(runs) - pending, disable=not progress, desc="sweep", unit="run")
    try:
        if executor == "ray":
            run_on_ray(jobs, workers, threads, bar)
        elif workers > 1:
            run_in_workers(jobs, workers, threads, bar)
        else:
            run_here(jobs, threads, bar)
    except KeyboardInterrupt:
        bar.close()
        table = write_sweep_table(runs, layout)
        stopped = table.filter(pl.col("status").is_in(["stopped", "running"]))["run"].to_list()
        resumes = f"resumes {', '.join(stopped)} from the last checkpoint and " if stopped else ""
        raise SweepInterrupted(
            f"sweep stopped by Ctrl-C ({status_counts(table)}); running it again "
            f"with the same file and --out {layout.dir} {resumes}runs the rest", table) from None
    bar.close()
    return write_sweep_table(runs, layout)
