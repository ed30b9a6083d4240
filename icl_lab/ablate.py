"""Ablation and activation-patching scans of a stored run, built on the intervention engine.

Every component scan is a list of evaluation-only Intervention specs, one per component:

    heads:      blocks.{l}.attn.hook_z, heads=(h,)             rows (layer, "H{h}")
    positions:  blocks.{l}.attn.hook_z, positions=(t,)          rows (layer, "pos{t}")
    layers:     blocks.{l}.hook_attn_out (and hook_mlp_out)     rows (layer, "attn" / "mlp")

Ablation kinds (AutoCircuit's names): `zero`; `mean` (mean over the evaluation batch);
`resample` (the activation on another sequence of the batch). For each component the run's
measures are re-evaluated:  delta = metric(ablated) − metric(unablated).

Patching (clean → corrupted): the component's activation on the clean input is patched into
the run on the corrupted input (spec target `other_input`), and with the logit difference
LD = logit[clean target] − logit[corrupted target], averaged over sequences,

    restored = (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted)

is 1 when that component alone carries the clean answer and 0 when it carries none of it.
The bursty task's corrupted twin relabels each sequence (every label shifted by s ≠ 0).

Both scans measure the model the run's curves measured: the run's own evaluation-time clamps
(interventions with apply = train_and_eval or eval) stay on, in their state at that checkpoint,
as `icl-lab measure` and `load_run(...).model(step)` have them; the scanned component's
intervention acts after them.

Tables: RUN/ablations/<over>_<kind>_step<N>.parquet and RUN/ablations/patch_<over>_step<N>.parquet
with columns layer, component, metric, value, baseline, delta.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from icl_lab.checkpoints import resolve_step
from icl_lab.loaded_run import load_run
from icl_lab.config import ConfigError
from icl_lab.measures import evaluate
from icl_lab.store import RunLock, write_ablation_table
from icl_lab.tasks import CorruptedTwin
from interventions import Intervention, InterventionEngine

KINDS = ("zero", "mean", "resample")
OVER = ("heads", "positions", "layers")


def component_specs(model, over: str, target: str) -> list[tuple[int, str, Intervention]]:
    """(layer, component label, spec) for every component of the scan."""
    if over not in OVER:
        raise ConfigError(f"--over {over!r} is not one of {', '.join(OVER)}")
    cfg, out = model.config, []
    for layer in range(cfg.n_layers):
        if over == "heads":
            for head in range(cfg.n_heads):
                out.append((layer, f"H{head}", Intervention(hook=f"blocks.{layer}.attn.hook_z", heads=(head,), target=target, apply="eval", name=f"L{layer}H{head}")))
        elif over == "positions":
            for pos in range(model.io.seq_len):
                out.append((layer, f"pos{pos}", Intervention(hook=f"blocks.{layer}.attn.hook_z", positions=(pos,), target=target, apply="eval", name=f"L{layer}pos{pos}")))
        else:
            out.append((layer, "attn", Intervention(hook=f"blocks.{layer}.hook_attn_out", target=target, apply="eval", name=f"L{layer}.attn")))
            if not cfg.attn_only:
                out.append((layer, "mlp", Intervention(hook=f"blocks.{layer}.hook_mlp_out", target=target, apply="eval", name=f"L{layer}.mlp")))
    return out


@torch.no_grad()
def ablation_scan(
    run_dir: str | Path, step: int = -1, kind: str = "zero", over: str = "heads",
    metrics: list[str] | None = None, device: str = "cpu",
) -> pl.DataFrame:
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    run_dir = Path(run_dir)
    with RunLock.of_run(run_dir, "ablate"):  # the table is written into the run: one writer at a time
        return _ablation_table(run_dir, resolve_step(run_dir, step), kind, over, metrics, device)


def _ablation_table(run_dir: Path, step: int, kind: str, over: str, metrics: list[str] | None, device: str) -> pl.DataFrame:
    run = load_run(run_dir)
    with run.model(step, device=device) as loaded:  # the run's eval-time clamps on
        return _ablation_rows(run_dir, step, kind, over, metrics, loaded.model, loaded.task, run.config)


def _ablation_rows(run_dir: Path, step: int, kind: str, over: str, metrics: list[str] | None, model, task, config) -> pl.DataFrame:
    batches = task.eval_sets()
    measures = [m for m in config.measures if m != "llc"]  # seconds of SGLD per evaluation: not per ablation
    baseline = {k: float(v) for k, v in evaluate(model, task, batches, measures).items()}
    names = metrics or sorted(baseline)
    unknown = [m for m in names if m not in baseline]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown} for this run; it records: {', '.join(sorted(baseline))}")
    rows = []
    for layer, component, spec in component_specs(model, over, kind):
        with InterventionEngine(model, task, [spec]) as engine:
            engine.set_step(step, "eval")
            values = evaluate(model, task, batches, measures)
        for metric in names:
            value = float(values[metric])
            rows.append({"layer": layer, "component": component, "metric": metric, "value": value,
                         "baseline": baseline[metric], "delta": value - baseline[metric]})
    table = pl.DataFrame(rows)
    write_ablation_table(run_dir, f"{over}_{kind}_step{step}", table)
    return table


def _logit_difference(logits: torch.Tensor, clean_target: torch.Tensor, corrupt_target: torch.Tensor) -> float:
    rows = torch.arange(logits.shape[0], device=logits.device)
    return float((logits[rows, clean_target] - logits[rows, corrupt_target]).mean())


@torch.no_grad()
def patching_scan(run_dir: str | Path, step: int = -1, over: str = "heads", device: str = "cpu", seed: int = 0) -> pl.DataFrame:
    """Clean → corrupted activation patching on the task's ICL set and its relabelled twin."""
    run_dir = Path(run_dir)
    with RunLock.of_run(run_dir, "patch"):
        return _patching_table(run_dir, resolve_step(run_dir, step), over, device, seed)


def _patching_table(run_dir: Path, step: int, over: str, device: str, seed: int) -> pl.DataFrame:
    with load_run(run_dir).model(step, device=device) as loaded:  # the run's eval-time clamps on
        return _patching_rows(run_dir, step, over, seed, loaded.model, loaded.task)


def _patching_rows(run_dir: Path, step: int, over: str, seed: int, model, task) -> pl.DataFrame:
    if not isinstance(task, CorruptedTwin):
        raise ConfigError(f"task {task.name!r} defines no corrupted twin for patching")
    clean = task.eval_sets()[task.eval_set_names[0]]
    corrupt = task.corrupted_twin(clean, task.make_generator(seed))
    ld = lambda logits: _logit_difference(logits, clean.targets, corrupt.targets)  # noqa: E731
    corrupt_logits = model.forward_batch(corrupt)
    ld_clean, ld_corrupt = ld(model.forward_batch(clean)), ld(corrupt_logits)
    acc_corrupt = float((corrupt_logits.argmax(-1) == clean.targets).float().mean())
    rows = []
    for layer, component, spec in component_specs(model, over, "other_input"):
        with InterventionEngine(model, task, [spec]) as engine:
            engine.set_other_input(clean)
            engine.set_step(step, "eval")
            patched = model.forward_batch(corrupt)
        restored = (ld(patched) - ld_corrupt) / (ld_clean - ld_corrupt)
        acc = float((patched.argmax(-1) == clean.targets).float().mean())
        for metric, value, baseline in (("restored_logit_difference", restored, 0.0), ("clean_answer_accuracy", acc, acc_corrupt)):
            rows.append({"layer": layer, "component": component, "metric": metric, "value": value, "baseline": baseline, "delta": value - baseline})
    table = pl.DataFrame(rows)
    write_ablation_table(run_dir, f"patch_{over}_step{step}", table)
    return table
