"""Cost of a clamp during training: steps/s with one active clamp against none, one run.

Both are whole `icl_lab.train(...)` calls on the same preset, seed and batches, evaluating only
at the first and last step. The clamp is the ideal induction pattern on head 0 of
`blocks.1.attn.hook_pattern` at the query (built per batch from the task's structure), the
most expensive of the pattern clamps. Target: the clamp costs <= 10%.

    python benchmarks/clamp_overhead.py [--steps 1000] [--device auto] [--target induction]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from icl_lab import get_preset, train
from icl_lab.provenance import resolve_device
from interventions import Intervention

CLAMPS = {
    "induction": Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction"),
    "previous_token": Intervention(hook="blocks.0.attn.hook_pattern", heads=(0,), query_positions="labels", target="previous_token"),
    "zero_z": Intervention(hook="blocks.1.attn.hook_z", heads=(1,), target="zero"),
}


def timed(config) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, f"{tmp}/run", progress=False)
        if config.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--target", choices=sorted(CLAMPS), default="induction")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    base = get_preset("bursty", "small").config.with_overrides(
        {"device": str(device), "train.steps": args.steps, "train.eval_every": args.steps, "train.checkpoint_every": 0}
    )
    clamped = dataclasses.replace(base, interventions=(CLAMPS[args.target],))
    timed(base.with_overrides({"train.steps": 20})), timed(dataclasses.replace(clamped, train=dataclasses.replace(clamped.train, steps=20)))
    plain_t, clamp_t = [], []
    for _ in range(args.repeats):
        plain_t.append(timed(base))
        clamp_t.append(timed(clamped))
    plain, clamp = args.steps / min(plain_t), args.steps / min(clamp_t)
    print(f"device {device}, {args.steps} steps, clamp {args.target}: {CLAMPS[args.target].to_dict()}")
    print(f"no clamp      : {plain:8.1f} steps/s")
    print(f"one clamp     : {clamp:8.1f} steps/s")
    print(f"clamp cost    : {100 * (plain / clamp - 1):.1f}% more time per step (target <= 10%)")


if __name__ == "__main__":
    main()
