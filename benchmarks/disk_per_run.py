"""Disk per run, for every preset: MB of checkpoints under the old policy (every checkpoint with
its full training state) and the current one (icl_lab/train/training_run.py `checkpoint`):

- the `checkpoint_every` grid, step 0 and the last step are written with the training state
  (optimizer moments, schedule, data stream, RNG, clamp state), and once a new one is written
  only the KEEP_STATES newest keep it; older ones keep their weights;
- the denser view-only checkpoints (log-spaced `checkpoints_per_decade`, `checkpoint_window`)
  are weights only;
- a run whose clamp targets accumulate state (`running_mean`) keeps every state, as before.

Each preset's file sizes are measured, not estimated: its model, optimizer (after one real
step, so Adam's moments exist) and run writer save one checkpoint with and one without the
state into a temporary run directory; the schedule then says how many of each a full-length
run writes. metrics.parquet and the JSON files (a few hundred kB at most) are the same under
both policies and are left out.

    python benchmarks/disk_per_run.py [--presets bursty/small,pairs/cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from icl_lab.presets import PRESETS
from icl_lab.store import paths
from icl_lab.train.training_run import KEEP_STATES, TrainingRun

MB = 1e6


def checkpoint_schedule(run: TrainingRun) -> tuple[list[int], list[int]]:
    """(every checkpoint step of a full-length run, those written with the training state)."""
    steps = [s for s in range(run.cfg.steps + 1) if run.due(run.cfg.checkpoint_every, s) or run.extra_checkpoint(s)]
    return steps, [s for s in steps if run.due(run.cfg.checkpoint_every, s)]


def file_sizes(run: TrainingRun, out: Path) -> tuple[int, int]:
    """(bytes of one checkpoint's weights, bytes of its training state and record)."""
    run.create_run_dir(out, overwrite=False)
    run.model.train()
    run.train_step(1)
    run.write_checkpoint(1, with_state=True)
    p = paths(out)
    weights = p.weights(1).stat().st_size
    state = p.state_tensors(1).stat().st_size + p.state_record(1).stat().st_size
    run.lifecycle.writer.close()
    return weights, state


def measure(task: str, name: str) -> dict:
    config = PRESETS[task][name].config.with_overrides({"device": "cpu"})
    run = TrainingRun(config, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        weights, state = file_sizes(run, Path(tmp) / "run")
    steps, with_state = checkpoint_schedule(run)
    kept = len(steps) if run.keeps_every_state() else min(KEEP_STATES, len(with_state))
    return {
        "preset": f"{task}/{name}", "steps": config.train.steps, "checkpoints": len(steps), "with_state": len(with_state),
        "weights_MB": weights / MB, "state_MB": state / MB,
        "before_MB": len(steps) * (weights + state) / MB, "after_MB": (len(steps) * weights + kept * state) / MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=None, help="comma-separated TASK/NAME (default: every preset)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [p.split("/") for p in args.presets.split(",")] if args.presets else [(t, n) for t in PRESETS for n in PRESETS[t]]
    print("| preset | steps | checkpoints (with state) | weights / state, MB each | MB per run before | after | ratio |")
    print("|---|---|---|---|---|---|---|")
    for task, name in chosen:
        r = measure(task, name)
        print(f"| {r['preset']} | {r['steps']:,} | {r['checkpoints']} ({r['with_state']}) | {r['weights_MB']:.2f} / {r['state_MB']:.2f} "
              f"| {r['before_MB']:.1f} | {r['after_MB']:.1f} | {r['before_MB'] / r['after_MB']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
