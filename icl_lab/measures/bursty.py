"""Accuracies on the bursty task's evaluation sets (Reddy 2024; Chan et al. 2022)."""

from __future__ import annotations

import torch

from icl_lab.measures.registry import EvalData, register_measure

BURSTY_SETS = ("icl", "iwl", "label_swap", "flip", "ciwl")


def _accuracy(model, data: EvalData, set_name: str) -> torch.Tensor:
    """Fraction of sequences whose argmax logit is the target: (1/S) Σ_s [argmax ŷ_s = y_s]."""
    logits = data.logits(model, set_name)
    return (logits.argmax(dim=-1) == data.batches[set_name].targets).float().mean()


@register_measure("icl_accuracy", eval_sets=("icl",))
def icl_accuracy(model, data: EvalData) -> dict:
    """ICL accuracy: accuracy on novel classes with labels drawn fresh per sequence.

    Chance is 1/L; picking a random context label gives B/N.
    """
    return {"icl_accuracy": _accuracy(model, data, "icl")}


@register_measure("iwl_accuracy", eval_sets=("iwl",))
def iwl_accuracy(model, data: EvalData) -> dict:
    """IWL accuracy: accuracy on trained classes whose label is absent from the context."""
    return {"iwl_accuracy": _accuracy(model, data, "iwl")}


@register_measure("label_swap_accuracy", eval_sets=("label_swap",))
def label_swap_accuracy(model, data: EvalData) -> dict:
    """Label-swap accuracy: trained classes, every label shifted by a per-sequence s ≠ 0;
    scored against the shifted label, so only use of the context can be right."""
    return {"label_swap_accuracy": _accuracy(model, data, "label_swap")}


@register_measure("flip_accuracy", eval_sets=("flip",))
def flip_accuracy(model, data: EvalData) -> dict:
    """Flip accuracy (Singh et al. 2025's Flip eval): the query's class and a distractor's
    trained labels swapped in the context, scored against the label bound to the query's class
    there. ICL scores 1, IWL and CIWL 0 (they answer the query's own trained label)."""
    return {"flip_accuracy": _accuracy(model, data, "flip")}


@register_measure("ciwl_accuracy", eval_sets=("ciwl",))
def ciwl_accuracy(model, data: EvalData) -> dict:
    """CIWL accuracy (their CIWL eval, `iwl_copy_avail`): no item of the query's class in the
    context, its trained label there bound to another item; scored against that label. IWL and
    CIWL score 1, ICL only chance among the context labels (read with iwl_accuracy: CIWL alone
    scores 0 there)."""
    return {"ciwl_accuracy": _accuracy(model, data, "ciwl")}


# The cross-entropy of every set, where each set is scored as a whole: tasks with an `icl` set
# (bursty, pairs; the modular grid mixes training and held-out pairs; digits scores its own loss).
@register_measure("eval_loss", eval_sets=("icl",))
def eval_loss(model, data: EvalData) -> dict:
    """Cross-entropy −(1/S) Σ_s log softmax(ŷ_s)[y_s] on each evaluation set."""
    out = {}
    for set_name, batch in data.batches.items():
        logits = data.logits(model, set_name)
        out[f"{set_name}_loss"] = torch.nn.functional.cross_entropy(logits, batch.targets)
    return out


@register_measure("context_label_accuracy", eval_sets=("icl",))
def context_label_accuracy(model, data: EvalData) -> dict:
    """CLA (Reddy 2024): fraction of ICL-set predictions that are one of the context labels,
    (1/S) Σ_s [argmax ŷ_s ∈ {ℓ_1, …, ℓ_N}]. It rises in the slow phase before the jump."""
    logits = data.logits(model, "icl")
    pred = logits.argmax(dim=-1)
    in_context = (data.batches["icl"].context_labels == pred[:, None]).any(dim=1)
    return {"context_label_accuracy": in_context.float().mean()}
