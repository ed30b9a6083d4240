"""Sweep throughput: runs per minute for a 16-run CPU sweep with 1 and 2 workers.

The runs are the reference bursty preset shortened to --steps (default 300) over 16 seeds,
each executor's sweep written to its own temporary directory. Each run uses the sweep's
default torch thread count (this process's thread budget split between the workers; set
OMP_NUM_THREADS to change the budget).

    python benchmarks/sweep_throughput.py [--steps 300] [--runs 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from icl_lab.sweep import default_threads, run_sweep, sweep_outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=16)
    args = parser.parse_args()
    spec = f'''
[sweep]
task = "bursty"
preset = "small"
set = {{ "train.steps" = {args.steps}, "train.eval_every" = {max(1, args.steps // 6)}, "device" = "cpu" }}
[axes]
seed = {list(range(args.runs))}
'''
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(spec)
        for workers in (1, 2):
            start = time.perf_counter()
            table = run_sweep(path, Path(tmp) / f"w{workers}", workers=workers, progress=False)
            minutes = (time.perf_counter() - start) / 60
            code, outcome = sweep_outcome(table)
            assert code == 0, outcome
            print(f"{args.runs} runs x {args.steps} steps, {workers} worker(s) x {default_threads(workers)} thread(s): "
                  f"{minutes * 60:6.1f} s  ->  {args.runs / minutes:5.1f} runs/minute")


if __name__ == "__main__":
    main()
