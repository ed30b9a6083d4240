"""Where a sweep's jobs run: in this process, in worker processes, or as Ray tasks.

A `Job` trains one run or one group and returns their outcomes. Worker processes die with the
sweep, even a `kill -9`ed one, run `threads` torch threads each, ignore Ctrl-C while idle, and
interrupt the run under way when the sweep stops (the run is then marked stopped, resumable);
a worker starts no job after the stop. The same holds for Ray tasks, cancelled on Ctrl-C.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any
from collections.abc import Callable

from icl_lab.openmp import prefer_passive_openmp

PR_SET_PDEATHSIG = 1  # linux/prctl.h

_stop_event = None  # in a sweep worker: set by the parent when the sweep stops


@dataclass
class Job:
    """One worker's work: `call(threads=...)` trains `size` members (one run, or a group trained
    together) and returns their outcomes; as a Ray task it asks for `resources`."""

    call: Callable[..., Any]
    size: int = 1
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1})


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the cleanup
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible():
    """In a worker, Ctrl-C (or the parent's stop) interrupts the job it is running; an idle
    worker ignores it. In the sweep's own process, nothing changes."""
    if _stop_event is None:
        yield
        return
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_requested() -> bool:
    """In a worker: the sweep has stopped, start nothing more."""
    return _stop_event is not None and _stop_event.is_set()


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
    prefer_passive_openmp()  # inherited from the pool's parent already; for a worker started otherwise
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


def _run_job(call: Callable[..., Any], threads: int | None = None) -> Any:
    return call(threads=threads)


def run_here(jobs: list[Job], threads: int, bar: Any) -> None:
    """Each job in turn in this process, with `threads` torch threads."""
    with _torch_threads(threads):
        for job in jobs:
            job.call()
            bar.update(job.size)


def run_in_workers(jobs: list[Job], workers: int, threads: int, bar: Any) -> None:
    """The jobs in `workers` worker processes; Ctrl-C stops every worker's run (marked stopped)."""
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


def run_on_ray(jobs: list[Job], workers: int, threads: int, bar: Any) -> None:
    """The jobs as Ray tasks (a local Ray of `workers` CPUs unless one is running)."""
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
