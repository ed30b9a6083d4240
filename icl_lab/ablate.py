"""Per-head ablation scans of a stored run, built on the intervention engine.

Each head's output (`blocks.{l}.attn.hook_z`, that head's slice) is replaced by zeros or by its
mean over the evaluation batch, as an evaluation-only Intervention; the run's measures are
re-evaluated and compared with the unablated model:

    delta[layer, head, metric] = metric(model with that head ablated) − metric(model)

The table is stored in the run as `ablations/heads_<kind>_step<N>.parquet` with columns
layer, head, metric, value, baseline, delta.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from icl_lab.checkpoints import load_model, resolve_step
from icl_lab.config import ConfigError
from icl_lab.measures import evaluate
from icl_lab.store import _atomic_via_tmp
from interventions import Intervention, InterventionEngine

KINDS = ("zero", "mean")


@torch.no_grad()
def head_ablation_scan(run_dir: str | Path, step: int = -1, kind: str = "zero", metrics: list[str] | None = None, device: str = "cpu") -> pl.DataFrame:
    if kind not in KINDS:
        raise ConfigError(f"ablation kind {kind!r} is not one of {', '.join(KINDS)}")
    run_dir = Path(run_dir)
    step = resolve_step(run_dir, step)
    model, task, config = load_model(run_dir, step, device=device)
    measures = list(config.measures)
    batches = task.eval_sets()
    baseline = {k: float(v) for k, v in evaluate(model, task, batches, measures).items()}
    names = metrics or sorted(baseline)
    rows = []
    for layer in range(model.config.n_layers):
        for head in range(model.config.n_heads):
            spec = Intervention(hook=f"blocks.{layer}.attn.hook_z", heads=(head,), target=kind, apply="eval", name=f"L{layer}H{head}")
            with InterventionEngine(model, task, [spec]) as engine:
                engine.set_step(step, "eval")
                values = evaluate(model, task, batches, measures)
            for metric in names:
                value = float(values[metric])
                rows.append({"layer": layer, "head": head, "metric": metric, "value": value,
                             "baseline": baseline[metric], "delta": value - baseline[metric]})
    table = pl.DataFrame(rows)
    path = run_dir / "ablations" / f"heads_{kind}_step{step}.parquet"
    path.parent.mkdir(exist_ok=True)
    _atomic_via_tmp(path, lambda tmp: table.write_parquet(tmp))
    return table
