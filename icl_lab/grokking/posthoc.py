"""Nanda et al.'s protocol on a stored run: restricted and excluded loss on every checkpoint,
with the key frequencies of the *final* model (as in the paper, where the key frequencies are
read off the trained network and the losses are then traced back through training).

Registered as the post-run step `final_key_losses` (icl_lab/post_run) for every task that
provides `modular_arithmetic`: the trainer runs it when such a run ends, `icl-lab measure RUN
--post-run` on a stored run."""

from __future__ import annotations

from pathlib import Path

import torch

from icl_lab.checkpoints import load_model
from icl_lab.grokking.measures import key_frequencies_from_model, restricted_excluded_loss
from icl_lab.measures.registry import EvalData
from icl_lab.post_run.registry import register_post_run_step
from icl_lab.store import append_metrics, checkpoint_steps, load_checkpoint


@torch.no_grad()
def add_final_key_losses(run_dir: str | Path, device: str = "cpu") -> list[int]:
    """Append restricted_loss_final_keys / excluded_loss_final_keys at every checkpoint.
    Returns the final key frequencies; none (and nothing written) for mul / div, where the
    Fourier restriction does not apply, and for an attention-only model (no neurons to read
    the frequencies from)."""
    final_model, task, config = load_model(run_dir, -1, device=device)
    if config.task_config.op not in ("add", "sub") or config.model.attn_only:
        return []
    grid = task.eval_sets()
    data = EvalData(task, grid)
    data.want("grid", [f"blocks.{final_model.config.n_layers - 1}.mlp.hook_post"])
    keys = key_frequencies_from_model(final_model, data)
    rows = []
    for step in checkpoint_steps(run_dir):  # one model, each checkpoint's weights in turn
        final_model.load_checkpoint_state({k: v.to(device) for k, v in load_checkpoint(run_dir, step).items()})
        values = restricted_excluded_loss(final_model, EvalData(task, grid), frequencies=keys)
        rows.append((step, "restricted_loss_final_keys", float(values["restricted_loss"])))
        rows.append((step, "excluded_loss_final_keys", float(values["excluded_loss"])))
    append_metrics(run_dir, rows)
    return keys


@register_post_run_step("final_key_losses", needs=("modular_arithmetic",))
def final_key_losses(run_dir: Path, device: str) -> dict:
    """Nanda et al.'s protocol on the finished run: the final model's key frequencies, then
    restricted / excluded loss with them at every checkpoint, appended to the run's metrics
    (`restricted_loss_final_keys`, `excluded_loss_final_keys`; add and sub with MLPs only)."""
    keys = add_final_key_losses(run_dir, device=device)
    return {"final_key_frequencies": keys} if keys else {}
