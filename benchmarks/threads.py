"""Torch threads against cores: steps/s of the reference preset (bursty/small) with 1 and 2
threads, alone and with a second identical training process on the same cores.

Four worker processes are started once (imports, the run's task, model and optimizer, a few
warm-up steps), all pinned to the same cores (the first `--cores` of those this process may
use): two with the environment's OpenMP settings, two with OMP_WAIT_POLICY=PASSIVE (threads
waiting at the end of a parallel region sleep instead of spinning). Then each phase runs
`--steps` training steps in one or two of them at once, each with the phase's torch thread
count (stopping early after `--seconds`, so a slow phase cannot run for minutes), and reports
steps/s from the workers' own clocks:

    1 process  x 1 thread        the baseline
    1 process  x 2 threads       what a second thread buys a run alone
    2 processes x 1 thread each  two runs sharing the cores, one thread each
    2 processes x 2 threads each two runs sharing the cores, oversubscribed
    the two 2-thread phases again with OMP_WAIT_POLICY=PASSIVE

    python benchmarks/threads.py [--steps 300] [--seconds 8] [--cores 2] [--preset small]

Prints one table (steps/s of each process, aggregate steps/s of the phase, and the aggregate
against the 1-thread run alone) and the load average before and after: other processes on the
machine make every figure noisy, so rerun it on a quiet machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

# (processes, threads each, OMP_WAIT_POLICY of the workers: None = the environment's)
PHASES = ((1, 1, None), (1, 2, None), (2, 1, None), (2, 2, None), (1, 2, "PASSIVE"), (2, 2, "PASSIVE"))


def worker(preset: str, cores: list[int]) -> None:
    """Build one training run, then answer `THREADS STEPS SECONDS` lines on stdin with `STEPS
    SECONDS`: the steps done (at most STEPS, stopping after SECONDS) and the time they took."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import torch

    from icl_lab import get_preset
    from icl_lab.train import TrainingRun

    config = get_preset("bursty", preset).config.with_overrides({"device": "cpu"})
    run = TrainingRun(config, torch.device("cpu"))
    run.model.train()
    step = 1

    def train_steps(n: int, budget: float = float("inf")) -> int:
        nonlocal step
        start = time.perf_counter()
        for done in range(1, n + 1):  # the trainer's step, without evaluation or checkpoints
            run.train_step(step)
            step += 1
            if time.perf_counter() - start > budget:
                return done
        return n

    train_steps(10)  # warm-up: first-call costs, optimizer state
    print("ready", flush=True)
    for line in sys.stdin:
        threads, steps, seconds = line.split()
        torch.set_num_threads(int(threads))
        train_steps(2)  # the thread pool at its new size
        start = time.perf_counter()
        done = train_steps(int(steps), float(seconds))
        print(done, f"{time.perf_counter() - start:.6f}", flush=True)


def start_worker(preset: str, cores: list[int], wait_policy: str | None) -> subprocess.Popen:
    command = [sys.executable, __file__, "--worker", "--preset", preset, "--core-list", ",".join(map(str, cores))]
    env = dict(os.environ) if wait_policy is None else {**os.environ, "OMP_WAIT_POLICY": wait_policy}
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def read_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a worker exited early (code {proc.wait()}); run it alone to see its error")
    return line.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per process and phase")
    parser.add_argument("--seconds", type=float, default=8.0, help="a phase's steps stop after this long")
    parser.add_argument("--cores", type=int, default=2, help="cores both workers are pinned to")
    parser.add_argument("--preset", default="small", help="bursty preset")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--core-list", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.preset, [int(c) for c in args.core_list.split(",")])
        return
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if not 1 <= args.cores <= len(available):
        raise SystemExit(f"--cores {args.cores}: this process may use {len(available)} cores ({available})")
    cores = available[: args.cores]
    load_before = os.getloadavg()
    policies = sorted({policy for *_, policy in PHASES}, key=str)
    workers = {policy: [start_worker(args.preset, cores, policy) for _ in range(2)] for policy in policies}
    try:
        for proc in (p for pair in workers.values() for p in pair):
            if read_line(proc) != "ready":
                raise SystemExit("a worker did not start")
        rows = []
        for processes, threads, policy in PHASES:
            active = workers[policy][:processes]
            for proc in active:  # both start together: each waits only for its line
                proc.stdin.write(f"{threads} {args.steps} {args.seconds}\n")
                proc.stdin.flush()
            rates = [steps / seconds for steps, seconds in (map(float, read_line(proc).split()) for proc in active)]
            rows.append((processes, threads, policy or os.environ.get("OMP_WAIT_POLICY", "(unset)"), rates))
            print(f"{rows[-1][:3]}: {', '.join(f'{r:.1f}' for r in rates)} steps/s", file=sys.stderr, flush=True)
    finally:
        for proc in (p for pair in workers.values() for p in pair):
            proc.stdin.close()
            proc.wait()
    base = rows[0][3][0]
    print(f"bursty/{args.preset}, {args.steps} steps (or {args.seconds:g} s) per process and phase, both processes pinned to cores {cores}; "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (other load makes these noisy)")
    print(f"{'processes':>9} {'threads each':>12} {'OMP_WAIT_POLICY':>15} {'steps/s each':>16} {'aggregate steps/s':>18} {'vs 1x1':>7}")
    for processes, threads, policy, rates in rows:
        each = ", ".join(f"{r:.1f}" for r in rates)
        print(f"{processes:>9} {threads:>12} {policy:>15} {each:>16} {sum(rates):>18.1f} {sum(rates) / base:>7.2f}")


if __name__ == "__main__":
    main()
