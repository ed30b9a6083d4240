"""A store of 100+ mixed runs, the way a newcomer's runs directory looks after a week, built
cheaply: a few tiny real runs (bursty plain and clamped, a repeated seed 0, digits, pairs,
modular arithmetic, an RFM run on 122 features, an ablation scan), then copies of them with
another seed or learning rate and their curves shifted (a copy's metrics are the real run's,
moved along the step axis and jittered), a running and a failed run, a sweep and a clamp table.

    python tests/mixed_store.py /tmp/explorer-store      # ~1 min on 2 cores

The real-browser screenshots (tests/test_app_browser.py) and docs/explorer.md use it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from icl_lab import get_preset
from icl_lab.store import paths
from icl_lab.train import train
from interventions import Intervention

TINY_BURSTY = {"task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32, "model.d_model": 16,
               "train.steps": 40, "train.eval_every": 4, "train.checkpoint_every": 20, "device": "cpu"}
COPIES = {"bursty-plain": 40, "bursty-clamped": 30, "digits": 14, "pairs": 12, "grok": 10}  # copies of each real run


def real_runs(root: Path) -> None:
    """The tiny real runs every copy comes from."""
    from icl_lab.ablate import ablation_scan
    from icl_lab.rfm import RFMConfig, run_rfm

    base = get_preset("bursty", "small").config.with_overrides(TINY_BURSTY)
    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")
    train(base, root / "bursty-plain", progress=False)
    train(base, root / "bursty-plain-again", progress=False)  # seed 0 run twice: one seed, not two
    train(dataclasses.replace(base, interventions=(clamp,)), root / "bursty-clamped", progress=False)
    ablation_scan(root / "bursty-plain", kind="zero", over="heads", metrics=["icl_accuracy"])
    train(get_preset("digits", "cpu").config.with_overrides({"train.steps": 30, "train.eval_every": 3, "device": "cpu"}),
          root / "digits", progress=False)
    train(get_preset("pairs", "cpu").config.with_overrides({"train.steps": 30, "train.eval_every": 3, "device": "cpu"}),
          root / "pairs", progress=False)
    train(get_preset("modular", "cpu").config.with_overrides({
        "task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 40, "train.eval_every": 4,
        "train.checkpoint_every": 20, "device": "cpu"}), root / "grok", progress=False)
    run_rfm(RFMConfig(p=61, iters=3, device="cpu"), root / "rfm-p61", progress=False)


def copy_run(source: Path, target: Path, seed: int, lr_scale: float, shift: float, rng: np.random.Generator) -> None:
    """A copy of `source` as if trained with another seed and learning rate: its curves moved by
    `shift` (a fraction of the run) and jittered, its summary's final values and transitions to match."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ablations", "*.lock"))
    p = paths(target)
    config = json.loads(p.config.read_text())
    config["seed"] = seed
    if "train" in config and isinstance(config["train"], dict) and "lr" in config["train"]:
        config["train"]["lr"] = float(config["train"]["lr"]) * lr_scale
    p.config.write_text(json.dumps(config, indent=1))
    metrics = pl.read_parquet(p.metrics)
    steps = sorted(set(metrics["step"].to_list()))
    moved = {s: steps[min(len(steps) - 1, max(0, round(i - shift * len(steps))))] for i, s in enumerate(steps)}
    lookup = metrics.rename({"step": "from_step", "value": "from_value"})
    noise = rng.normal(0, 0.03, metrics.height)
    metrics = (metrics.with_columns(pl.col("step").replace_strict(moved).alias("from_step"))
               .join(lookup.select("from_step", "metric", "from_value"), on=["from_step", "metric"], how="left")
               .with_columns((pl.coalesce("from_value", "value") * (1 + pl.Series(noise))).cast(metrics["value"].dtype).alias("value"))
               .select(metrics.columns))
    metrics.write_parquet(p.metrics)
    summary = json.loads(p.summary.read_text())
    last = metrics.filter(pl.col("step") == metrics["step"].max())
    summary["final"] = {m: float(v) for m, v in zip(last["metric"], last["value"]) if m in summary.get("final", {}) and v is not None}
    for found in summary.get("transitions", {}).values():
        if isinstance(found, dict) and found.get("transition_step") is not None:
            found["transition_step"] = moved.get(found["transition_step"], found["transition_step"])
        elif isinstance(found, dict) and rng.uniform() < 0.5:  # half the copies found one (the tiny real runs are too short to)
            found["transition_step"] = moved[steps[len(steps) // 2]]
    p.summary.write_text(json.dumps(summary, indent=1))


def make_mixed_store(root: Path) -> Path:
    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    real_runs(root)
    rng = np.random.default_rng(0)
    for name, count in COPIES.items():
        for i in range(count):
            seed, lr_scale = 1 + i % 5, (0.5, 1.0, 2.0)[i // 5 % 3]
            copy_run(root / name, root / f"{name}-lr{lr_scale:g}-s{seed}-{i}", seed, lr_scale, rng.uniform(-0.3, 0.3), rng)
    shutil.copytree(root / "bursty-plain", root / "bursty-running", ignore=shutil.ignore_patterns("ablations"))  # still training
    paths(root / "bursty-running").status.write_text(json.dumps({"state": "running", "error": None}))
    shutil.copytree(root / "bursty-plain", root / "bursty-failed", ignore=shutil.ignore_patterns("ablations"))
    paths(root / "bursty-failed").status.write_text(json.dumps({"state": "failed", "error": "RuntimeError: loss is nan at step 24"}))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_app import write_tables

    write_tables(root, [root / "bursty-plain", root / "bursty-plain-lr1-s1-5"], [root / "bursty-clamped", root / "bursty-clamped-lr1-s1-5"],
                 damaged=False)
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/explorer-store")
    if out.exists():
        sys.exit(f"{out} exists; remove it or name another folder")
    make_mixed_store(out)
    print(f"{sum(1 for _ in out.rglob('config.json'))} runs in {out}")
