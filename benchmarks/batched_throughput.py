"""Group training throughput: `train_group` of M members against the same M runs trained one
after another with `train`, in one process, on one device.

Members are the preset's config with seeds 0..M-1 (same shapes, so one group); both sides are
whole calls (setup, evaluation at the first and last step only, checkpoints at the first and
last step, the run store), so the numbers are what a sweep of M short runs sees.

    python benchmarks/batched_throughput.py [--preset small] [--steps 200] [--members 1,4,16]
                                            [--device cpu] [--threads 2]

Prints aggregate member-steps/s (M × steps / wall seconds) of each side and the ratio
group/sequential, all measured in this one run.
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


def member_configs(preset: str, steps: int, members: int, device: str):
    base = get_preset("bursty", preset).config.with_overrides(
        {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": 0, "device": device,
         "measures": ["icl_accuracy"], "track": ["icl_accuracy"]}  # one cheap measure: the steps dominate
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
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--members", default="1,4,16", help="comma-separated group sizes M")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (set explicitly for comparable numbers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(m) for m in args.members.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_group(member_configs(args.preset, 2, 1, args.device), [root / "warmup"])  # imports, first-call costs
        print(f"bursty/{args.preset}, {args.steps} steps, device {args.device}, {args.threads} threads")
        print(f"{'M':>4} {'group member-steps/s':>22} {'sequential member-steps/s':>27} {'ratio':>7}")
        for m in sizes:
            configs = member_configs(args.preset, args.steps, m, args.device)
            group = timed(lambda: train_group(configs, [root / f"g{m}_{i}" for i in range(m)]))
            alone = timed(lambda: [train(c, root / f"s{m}_{i}", progress=False) for i, c in enumerate(configs)])
            rate_group, rate_alone = m * args.steps / group, m * args.steps / alone
            print(f"{m:>4} {rate_group:>22.1f} {rate_alone:>27.1f} {rate_group / rate_alone:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
