"""Sweeps: a TOML file expands to a grid of runs, run in parallel, resumable, one table.

    runs, text = load_sweep("sweeps/singh_clamps.toml")          # checked, nothing runs
    table = run_sweep("sweeps/singh_clamps.toml", "runs/singh", workers=2)
    code, line = sweep_outcome(table)                             # "9 done", exit code 0

Layout: OUT/sweep.toml (the spec), OUT/runs/<name>/ (one run directory each, named by its
axis values), OUT/sweep.parquet (one row per run: axis values, status, final metrics,
transition steps). What happens to each member is the grid policy's (icl_lab/grid_policy.py),
shared with the experiments: a `done` run is never redone; a `failed` one is continued only
with retry_failed; a run stopped by Ctrl-C (`stopped`) or killed mid-way (`running`, its writer
gone) resumes from its newest intact checkpoint, exactly as if it had never stopped; a run
another live process is writing is reported `locked` and left alone; a run stored with another
config than the file asks for refuses the sweep, before anything is written. Everything in the
file is checked before any run starts, every member's interventions against that member's
model included.

Ctrl-C stops the sweep: the runs under way are marked `stopped` (their status.json names the
sweep command that continues them) and `SweepInterrupted` (a KeyboardInterrupt) says how to
continue. Worker processes die with the sweep, even a `kill -9`ed one, and split the CPU cores
between them (`threads` torch threads each).

    spec.py       the sweep file: parse, expand to SweepRuns, check (load_sweep)
    members.py    one batch of members trained and scanned, failures recorded (run_batch)
    executors.py  where jobs run: this process, worker processes, Ray (Job)
    table.py      OUT's layout (SweepPaths) and the sweep table with its verdict
    driver.py     run_sweep: options checked, the policy's plan, jobs, Ctrl-C
"""

from icl_lab.sweep.driver import (
    EXECUTORS,
    GROUP_SIZE,
    GROUPING_EXECUTORS,
    SweepInterrupted,
    check_sweep_options,
    continue_command,
    plan_sweep,
    run_sweep,
    sweep_jobs,
)
from icl_lab.sweep.executors import Job, default_threads
from icl_lab.sweep.members import member_failure, run_batch, scan_member
from icl_lab.sweep.spec import SECTIONS, SweepRun, expand, load_sweep
from icl_lab.sweep.table import MEMBER_STATES, SweepPaths, status_counts, summarize_sweep, sweep_outcome, write_sweep_table

__all__ = [
    "EXECUTORS", "GROUP_SIZE", "GROUPING_EXECUTORS", "MEMBER_STATES", "SECTIONS", "Job", "SweepInterrupted",
    "SweepPaths", "SweepRun", "check_sweep_options", "continue_command", "default_threads", "expand",
    "load_sweep", "member_failure", "plan_sweep", "run_batch", "run_sweep", "scan_member", "status_counts",
    "summarize_sweep", "sweep_jobs", "sweep_outcome", "write_sweep_table",
]
