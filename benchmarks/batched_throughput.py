"""Group training throughput: `train_group` of M members against the same M runs trained one
after another with `train`, in one process, on one device.

Members are the preset's config with seeds 0..M-1 (same shapes, so one group); both sides are
whole calls (setup, evaluation at the first and last step only, checkpoints at the first and
last step, the run store), so the numbers are what a sweep of M short runs sees.

    python benchmarks/batched_throughput.py [--preset small] [--steps 200] [--members 1,4,16,64]
                                            [--device cpu|cuda|auto] [--threads 2] [--sequential all|one]

Prints, for each M: the group's wall time, aggregate member-steps/s (M x steps / wall seconds)
of the group and of the sequential runs, their ratio group/sequential, and the group's wall
time over one run's (the GPU target: 64 members in at most 2x one run's time). With
`--sequential all` (the default) the M sequential runs are trained and timed, all in this one
run; with `--sequential one` one run is timed once and the sequential side is M times it (for
M in the hundreds on a GPU, where training them all would take long).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from icl_lab import get_preset, train
from icl_lab.batched import train_group
from icl_lab.provenance import resolve_device


def member_configs(preset: str, steps: int, members: int, device: str):
    base = get_preset("bursty", preset).config.with_overrides(
        {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": 0, "train.checkpoints_per_decade": 0,
         "device": device, "measures": ["icl_accuracy"], "track": ["icl_accuracy"]}  # one cheap measure: the steps dominate
    )
    return [dataclasses.replace(base, seed=seed) for seed in range(members)]


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="bursty preset")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--members", default="1,4,16,64", help="comma-separated group sizes M")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (set explicitly for comparable numbers)")
    parser.add_argument("--sequential", choices=["all", "one"], default="all",
                        help="time all M sequential runs (default), or one run and count it M times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    sizes = [int(m) for m in args.members.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_group(member_configs(args.preset, 2, 1, device), [root / "warmup"])  # imports, first-call costs
        one_run = None
        if args.sequential == "one":
            config = member_configs(args.preset, args.steps, 1, device)[0]
            one_run = timed(lambda: train(config, root / "one", progress=False))
        print(f"bursty/{args.preset}, {args.steps} steps, device {device}, {args.threads} threads, "
              f"sequential side: {'one run timed, x M' if one_run else 'all M runs timed'}")
        print(f"{'M':>4} {'group wall s':>12} {'group member-steps/s':>21} {'sequential member-steps/s':>26} "
              f"{'ratio':>6} {'group wall / one run':>21}")
        for m in sizes:
            configs = member_configs(args.preset, args.steps, m, device)
            group = timed(lambda: train_group(configs, [root / f"g{m}_{i}" for i in range(m)]))  # noqa: B023  (called at once)
            if one_run is None:
                alone = timed(lambda: [train(c, root / f"s{m}_{i}", progress=False) for i, c in enumerate(configs)])  # noqa: B023  (called at once)
            else:
                alone = m * one_run
            rate_group, rate_alone = m * args.steps / group, m * args.steps / alone
            print(f"{m:>4} {group:>12.2f} {rate_group:>21.1f} {rate_alone:>26.1f} {rate_group / rate_alone:>6.2f} "
                  f"{group / (alone / m):>21.2f}", flush=True)


if __name__ == "__main__":
    main()
