"""Sweeps: a TOML file expands to a grid of runs, run in parallel, resumable, one table.

    [sweep]
    task = "bursty"
    preset = "small"
    set = { "train.steps" = 3000 }          # base overrides (any `--set` key)

    [axes]                                  # the grid: every combination, in file order
    seed = [0, 1, 2]
    "task.num_classes" = [512, 2048]
    condition = ["none", "induction"]       # names of [conditions.*] tables

    [conditions.none]
    [[conditions.induction.intervention]]   # the same tables as an --intervention file
    hook = "blocks.1.attn.hook_pattern"
    heads = [0]
    query_positions = "query"
    target = "induction"

    [[ablation]]                            # optional scans of each finished run
    kind = "zero"
    over = "heads"

Layout: OUT/sweep.toml (the spec), OUT/runs/<name>/ (one run directory each, named by its
axis values), OUT/sweep.parquet (one row per run: axis values, status, final metrics,
transition steps). A run whose status is `done` is never redone; a `failed` one is redone
only with retry_failed; a run stopped by Ctrl-C (`stopped`) or killed mid-way (`running`, its
writer gone) resumes from its newest intact checkpoint, exactly as if it had never stopped;
a run another live process is writing is reported `locked` and left alone.
Everything in the file is checked before any run starts, every member's interventions
against that member's model included.

Ctrl-C stops the sweep: the runs under way are marked `stopped` and `SweepInterrupted` (a
KeyboardInterrupt) says how to continue. Worker processes die with the sweep, even a
`kill -9`ed one, and split the CPU cores between them (`threads` torch threads each).
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import dataclasses
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import tomllib
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import polars as pl
from tqdm.auto import tqdm

from icl_lab.config import ConfigError, did_you_mean
from icl_lab.openmp import prefer_passive_openmp
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import (
    RunError,
    RunLock,
    RunLocked,
    atomic_write,
    atomic_write_bytes,
    intact_state_steps,
    load_run,
    read_status,
    record_failure,
)
from interventions.spec import Intervention

EXECUTORS = ("local", "ray", "batched")  # batched: icl_lab/sweep_batched.py
SECTIONS = ("sweep", "axes", "conditions", "ablation")
# a member's status in the sweep table: its run's state, `locked` while another live process
# writes it, `pending` before it starts; listed in this order in the one-line outcome
MEMBER_STATES = ("done", "failed", "locked", "stopped", "running", "pending")


@dataclass(frozen=True)
class SweepRun:
    name: str
    axes: dict[str, Any]
    config: dict[str, Any]  # RunConfig.to_dict()
    ablations: tuple[dict[str, Any], ...] = ()


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf'^\s*(\[+\s*)?("?){re.escape(key)}\2\s*(=|\]|\.)', re.M)
    match = pattern.search(text)
    return text[: match.start()].count("\n") + 1 if match else None


def _where(source: str, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{source}, line {line}" if line else source


def _value_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_") or "x"


def load_sweep(path: str | Path) -> tuple[list[SweepRun], str]:
    """Parse and validate a sweep file: (the grid of runs, the file's text). No run starts."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"sweep file {path} is not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"sweep file {path} is not readable ({type(err).__name__}: {err})") from None
    runs = expand(text, source=str(path))
    check_interventions(runs, text, source=str(path))
    return runs, text


def expand(text: str, source: str = "<sweep>") -> list[SweepRun]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{_where(source, text, key)}: unknown section {key!r}.{did_you_mean(key, list(SECTIONS))} Valid: {', '.join(SECTIONS)}")
    head = data.get("sweep")
    if not isinstance(head, dict) or "task" not in head:
        raise ConfigError(f"{source}: needs a [sweep] table with task = \"...\" (and optionally preset, set)")
    for key in head:
        if key not in ("task", "preset", "set"):
            raise ConfigError(f"{_where(source, text, key)}: unknown key {key!r} in [sweep]; valid: task, preset, set")
    try:
        base = get_preset(head["task"], head.get("preset"))
        config = base.config.with_overrides(head.get("set", {}))
    except ConfigError as err:
        bad = next((k for k in head.get("set", {}) if k in str(err)), "task")
        raise ConfigError(f"{_where(source, text, bad)}: {err}") from None

    conditions: dict[str, tuple[Intervention, ...]] = {}
    for name, table in (data.get("conditions") or {}).items():
        specs = table.get("intervention", []) if isinstance(table, dict) else None
        if specs is None or not isinstance(specs, list) or set(table) - {"intervention"}:
            raise ConfigError(f"{_where(source, text, f'conditions.{name}')}: [conditions.{name}] holds only [[conditions.{name}.intervention]] tables")
        conditions[name] = tuple(Intervention.from_dict(s, where=f"{_where(source, text, f'conditions.{name}')}: conditions.{name}") for s in specs)

    axes = data.get("axes") or {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_where(source, text, key)}: axis {key!r} needs a non-empty list of values")
        if key == "condition":
            for v in values:
                if v not in conditions:
                    raise ConfigError(f"{_where(source, text, key)}: condition {v!r} has no [conditions.{v}] table; defined: {', '.join(conditions) or 'none'}")
            continue
        try:
            config.with_overrides({key: values[0]})
        except ConfigError as err:
            raise ConfigError(f"{_where(source, text, key)}: axis {key!r}: {err}") from None

    ablations = data.get("ablation") or []
    for table in ablations:
        from icl_lab.ablate import KINDS, OVER

        unknown = set(table) - {"kind", "over", "metrics"}
        if unknown or table.get("kind", "zero") not in KINDS or table.get("over", "heads") not in OVER:
            raise ConfigError(f"{_where(source, text, 'ablation')}: [[ablation]] takes kind ({', '.join(KINDS)}), over ({', '.join(OVER)}), metrics; got {table}")

    runs, names = [], set()
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo))
        overrides = {k: v for k, v in values.items() if k != "condition"}
        try:
            run_config = config.with_overrides(overrides)
        except ConfigError as err:
            raise ConfigError(f"{source}: the grid point {values} is invalid: {err}") from None
        if "condition" in values:
            run_config = dataclasses.replace(run_config, interventions=run_config.interventions + conditions[values["condition"]])
        name = "-".join(f"{k.split('.')[-1]}={_value_name(v)}" for k, v in values.items()) or "run"
        if name in names:
            raise ConfigError(f"{source}: two grid points share the run name {name!r}")
        names.add(name)
        runs.append(SweepRun(name=name, axes=values, config=run_config.to_dict(), ablations=tuple(ablations)))
    return runs


def check_interventions(runs: list[SweepRun], text: str, source: str = "<sweep>") -> None:
    """Check every member's interventions against that member's model and task, before any
    run starts: each distinct (task, model) is built once on the CPU and each distinct set of
    specs validated on it by the intervention engine (hook names, heads, positions, targets)."""
    import torch

    from icl_lab.models import build_model
    from icl_lab.tasks import make_task
    from interventions.engine import InterventionEngine

    shapes: dict[str, tuple[Any, Any]] = {}  # (task, task_config, model) -> (model, task)
    checked: set[str] = set()
    for run in runs:
        if not run.config.get("interventions"):
            continue
        shape = json.dumps([run.config["task"], run.config["task_config"], run.config["model"]], sort_keys=True)
        key = json.dumps([shape, run.config["interventions"]], sort_keys=True)
        if key in checked:
            continue
        checked.add(key)
        config = RunConfig.from_dict(run.config)
        if shape not in shapes:
            try:
                with torch.random.fork_rng():  # leave the caller's random state alone
                    task = make_task(config.task, config.task_config, seed=config.seed, device="cpu")
                    shapes[shape] = (build_model(config.model, task.io, seed=config.seed + 1, device="cpu"), task)
            except ConfigError as err:
                raise ConfigError(f"{source}: member {run.name!r}: {err}") from None
        try:
            InterventionEngine(*shapes[shape], config.interventions).close()
        except ConfigError as err:
            condition = run.axes.get("condition")
            where = _where(source, text, f"conditions.{condition}") if condition is not None else source
            raise ConfigError(f"{where}: member {run.name!r}: {err}") from None


# -- the sweep's own layout ----------------------------------------------------------------
class SweepPaths:
    """OUT/sweep.toml, OUT/sweep.parquet and OUT/runs/<name>; inside a run the store decides."""

    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.spec, self.table, self.runs = self.dir / "sweep.toml", self.dir / "sweep.parquet", self.dir / "runs"

    def run(self, name: str) -> Path:
        return self.runs / name


# -- one member --------------------------------------------------------------------------
_stop_event = None  # in a sweep worker: set by the parent when the sweep stops


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the cleanup
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible():
    """In a worker, Ctrl-C (or the parent's stop) interrupts the run it is running; an idle
    worker ignores it. In the sweep's own process, nothing changes."""
    if _stop_event is None:
        yield
        return
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _status_or_none(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_status(run_dir)
    except RunError:
        return None


def _stopped() -> bool:
    """In a worker: the sweep has stopped, start nothing more."""
    return _stop_event is not None and _stop_event.is_set()


def run_one(run: SweepRun, run_dir: str | Path, threads: int | None = None, resume: bool = False) -> dict[str, Any]:
    """Train one grid point into `run_dir` (`resume`: continue it from its newest intact
    checkpoint) and run its ablation scans. Returns {"name", "state", "error"}; a failure is
    recorded in the run's status, never raised. Ctrl-C (KeyboardInterrupt) propagates, the
    run marked stopped by the trainer."""
    import torch

    from icl_lab.train import train

    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(run_dir)
    with _interruptible():
        if _stopped():
            return {"name": run.name, "state": "pending", "error": ""}  # the sweep stopped first
        before = _status_or_none(out)
        try:
            train(RunConfig.from_dict(run.config), out, progress=False, overwrite=True, resume=resume)
        except Exception as err:
            return member_failure(run, out, before, err)
        return scan_member(run, out)


def scan_member(run: SweepRun, out: Path) -> dict[str, Any]:
    """A trained member's ablation scans; its outcome as `run_one` returns it."""
    try:
        for scan in run.ablations:
            from icl_lab.ablate import ablation_scan

            ablation_scan(out, kind=scan.get("kind", "zero"), over=scan.get("over", "heads"), metrics=scan.get("metrics"))
    except Exception as err:
        return member_failure(run, out, None, err)
    return {"name": run.name, "state": "done", "error": ""}


def member_failure(run: SweepRun, out: Path, before: dict[str, Any] | None, err: Exception) -> dict[str, Any]:
    """The outcome of a member whose work raised `err` (`before`: its status beforehand). The
    failure is recorded in its status unless the trainer did; a member another process holds
    is `locked`, its files untouched."""
    if isinstance(err, RunLocked):
        return {"name": run.name, "state": "locked", "error": str(err)}
    message = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    after = _status_or_none(out)
    if after is None or after.get("state") != "failed" or after == before:
        try:  # the trainer records failures of a run it started; this is any other
            record_failure(out, run.config, message, verb="sweep")
        except RunLocked as locked:
            return {"name": run.name, "state": "locked", "error": str(locked)}
    return {"name": run.name, "state": "failed", "error": str(err)}


def _live_holder(run_dir: Path) -> str | None:
    holder = RunLock.holder(run_dir)
    return holder.describe() if holder is not None and holder.alive() else None


def pending(runs: list[SweepRun], layout: SweepPaths, retry_failed: bool) -> list[tuple[SweepRun, bool]]:
    """The members to run now, each with whether it resumes. Done ones are skipped, failed
    ones unless retry_failed, locked ones (a live process writes them) left alone; a stopped
    or killed run resumes when it has an intact checkpoint and its stored config is this
    member's, and starts afresh otherwise. A directory without a status (a run interrupted
    while it was being created) is first recorded as failed, so that it can be replaced."""
    todo = []
    for run in runs:
        folder = layout.run(run.name)
        if _live_holder(folder):
            continue
        state = (_status_or_none(folder) or {}).get("state")
        if state in (None, "unknown") and folder.is_dir() and any(folder.iterdir()):
            record_failure(folder, run.config, "interrupted before the run started", verb="sweep")
        if state == "done" or (state == "failed" and not retry_failed):
            continue
        todo.append((run, state in ("stopped", "running") and _can_resume(folder, run)))
    return todo


def _can_resume(run_dir: Path, run: SweepRun) -> bool:
    from icl_lab.checkpoints import run_config_of

    try:
        same = run_config_of(run_dir).to_dict() == RunConfig.from_dict(run.config).to_dict()
    except RunError:
        return False
    return same and bool(intact_state_steps(run_dir)[0])


# -- worker processes ----------------------------------------------------------------------
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(parent_pid: int, stop: Any, threads: int) -> None:
    """A sweep worker: dies with the sweep process (even a kill -9ed one), runs `threads`
    torch threads, ignores Ctrl-C while idle and interrupts its run when `stop` is set."""
    global _stop_event
    _stop_event = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:  # the kernel kills us when the parent dies
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the watcher thread below notices within a second
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect
    threading.Thread(target=_watch_parent, args=(parent_pid, stop), daemon=True, name="sweep-watch").start()
    prefer_passive_openmp()  # inherited from _run_in_workers already; for a worker started otherwise
    import torch

    torch.set_num_threads(threads)


def _watch_parent(parent_pid: int, stop: Any) -> None:
    """Exit when the parent is gone (reparented); interrupt the main thread once on `stop`."""
    interrupted = False
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        if interrupted:
            time.sleep(0.5)
        elif stop.wait(0.5):
            interrupted = True
            _thread.interrupt_main(signal.SIGINT)  # a no-op while idle (SIGINT ignored)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while worker processes are created, so that they are born ignoring it
    (Python keeps an inherited SIG_IGN): a worker starting up cannot die of it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Job:
    """One worker's work: `call(threads=...)` trains `size` members (one run, or a group trained
    together) and returns their outcomes; as a Ray task it asks for `resources`."""

    call: Callable[..., Any]
    size: int = 1
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1})


def _run_job(call: Callable[..., Any], threads: int | None = None) -> Any:
    return call(threads=threads)


def _run_in_workers(jobs: list[Job], workers: int, threads: int, bar: Any) -> None:
    prefer_passive_openmp()  # before the workers start: they inherit it before torch loads OpenMP
    context = get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), stop, threads))
    try:
        with _sigint_ignored():
            futures = {pool.submit(_run_job, job.call): job.size for job in jobs}
        for future in as_completed(futures):
            future.result()  # a run's KeyboardInterrupt comes back here and stops the sweep
            bar.update(futures[future])
    except BaseException:
        stop.set()  # each worker interrupts its run (marked stopped) and starts no other
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_on_ray(jobs: list[Job], workers: int, threads: int, bar: Any) -> None:
    import ray

    if not ray.is_initialized():
        prefer_passive_openmp()  # Ray's workers inherit the environment
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(_run_job)
    refs = {remote.options(**job.resources).remote(job.call, threads): job.size for job in jobs}
    waiting = list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            ray.get(done)
            bar.update(refs[done[0]])
    except KeyboardInterrupt:
        for ref in waiting:
            ray.cancel(ref)  # raises KeyboardInterrupt in a running task: its runs are marked stopped
        ray.wait(waiting, num_returns=len(waiting), timeout=60)
        raise


@contextlib.contextmanager
def _torch_threads(threads: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_threads(workers: int) -> int:
    """Torch threads per run: this process's thread budget split between the workers. The
    budget is torch's thread count (OMP_NUM_THREADS when set), at most the cores this process
    may use; on tiny models and busy machines more threads than cores slow a run down."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()) // workers)


# -- the sweep -----------------------------------------------------------------------------
class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; the message counts the members and says how to continue.
    `table` is the sweep table as it was left (also written to OUT/sweep.parquet)."""

    def __init__(self, message: str, table: pl.DataFrame):
        super().__init__(message)
        self.table = table


def run_sweep(
    spec: str | Path, out: str | Path, executor: str = "local", workers: int = 1,
    retry_failed: bool = False, progress: bool = True, threads: int | None = None,
    loaded: tuple[list[SweepRun], str] | None = None, group_size: int | None = None,
) -> pl.DataFrame:
    """Run every pending member of the sweep in `spec` into `out` and return the sweep table
    (see `sweep_outcome` for its verdict). `threads`: torch threads per run (default
    `default_threads(workers)`); `loaded`: `load_sweep(spec)` when the caller already has it.
    Executor "batched", or "ray" with a `group_size`, trains compatible members together, at
    most `group_size` per group (icl_lab/sweep_batched.py). Ctrl-C raises SweepInterrupted."""
    from icl_lab.sweep_batched import check_group_size, grouped_jobs

    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    check_group_size(executor, group_size)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    threads = threads or default_threads(workers)
    runs, text = loaded or load_sweep(spec)
    layout = SweepPaths(out)
    layout.runs.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.spec, text.encode())
    todo = pending(runs, layout, retry_failed)
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), disable=not progress, desc="sweep", unit="run")
    grouped = executor == "batched" or group_size is not None
    jobs = grouped_jobs(todo, layout, group_size) if grouped else [
        Job(partial(run_one, run, layout.run(run.name), resume=resume)) for run, resume in todo]
    try:
        if executor == "ray":
            _run_on_ray(jobs, workers, threads, bar)
        elif workers > 1:
            _run_in_workers(jobs, workers, threads, bar)
        else:
            with _torch_threads(threads):
                for job in jobs:
                    job.call()
                    bar.update(job.size)
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


def write_sweep_table(runs: list[SweepRun], layout: SweepPaths) -> pl.DataFrame:
    table = summarize_sweep(runs, layout)
    atomic_write(layout.table, lambda tmp: table.write_parquet(tmp))
    return table


def summarize_sweep(runs: list[SweepRun], layout: SweepPaths) -> pl.DataFrame:
    """One row per member: axis values, status (MEMBER_STATES), the last line of its error,
    final metrics and transition steps of the done ones."""
    rows = []
    for run in runs:
        folder = layout.run(run.name)
        row: dict[str, Any] = {"run": run.name}
        row.update({f"axis.{k}": str(v) for k, v in run.axes.items()})
        try:
            status = read_status(folder)
        except RunError as err:
            status = {"state": "failed", "error": str(err)}
        error = (status.get("error") or "").strip()
        holder = _live_holder(folder)
        row["status"] = "locked" if holder else "pending" if status["state"] == "unknown" else status["state"]
        row["error"] = f"being written by {holder}" if holder else error.splitlines()[-1] if error else ""
        if row["status"] == "done":
            r = load_run(folder)
            for metric, value in sorted(r.summary.get("final", {}).items()):
                row[f"final.{metric}"] = float(value)
            for metric, t in r.summary.get("transitions", {}).items():
                row[f"transition.{metric}"] = t.get("transition_step")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def sweep_outcome(table: pl.DataFrame, shown: int = 3) -> tuple[int, str]:
    """(exit code, one line) for a sweep table: 0 when every member is done, else 1; the line
    counts members by status and names each one not done with the last line of its error,
    e.g. "3 done, 1 failed: seed=2: RuntimeError: ...". """
    line = status_counts(table)
    bad = table.filter(pl.col("status") != "done")
    details = [f"{name}: {error or status}" for name, status, error in bad.select("run", "status", "error").iter_rows()]
    if len(details) > shown:
        details = details[:shown] + [f"and {len(details) - shown} more (see sweep.parquet)"]
    return (1 if bad.height else 0), line + (": " + "; ".join(details) if details else "")


def status_counts(table: pl.DataFrame) -> str:
    """"3 done, 1 failed": members by status, in MEMBER_STATES order."""
    counts = Counter(table["status"].to_list())
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (MEMBER_STATES + (s,)).index(s)))
