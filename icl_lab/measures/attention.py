"""Per-head attention scores on the ICL set, from the task's own statement of its structure.

For the bursty layout x₁ ℓ₁ … x_N ℓ_N x_q: item i at 2i, its label at 2i+1 (i = 0..N−1), the
query at 2N. Scores follow TransformerLens's induction/previous-token scores (the mean
attention on the positions a perfect head would attend to), restricted to the positions where
the task defines them: the registered measures take the label positions from the task's
`position_roles()` and the induction targets from its `ideal_attention("induction", ...)`.
Metric names: `induction_score.L{layer}H{head}`, `previous_token_score.L{layer}H{head}`.
"""

from __future__ import annotations

import torch
from einops import einsum, reduce

from icl_lab.measures.registry import EvalData, register_measure


def induction_targets(context_classes: torch.Tensor, query_class: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[batch, seq_len] bool: label positions 2i+1 whose item i has the query's class."""
    batch, N = context_classes.shape
    match = context_classes == query_class[:, None]  # [batch, N]
    mask = torch.zeros(batch, seq_len, dtype=torch.bool, device=context_classes.device)
    mask[:, 1 : 2 * N : 2] = match
    return mask


def query_attention_on(pattern: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/S) Σ_s Σ_{k ∈ M_s} A_h[s, q, k] per head: the attention the last position q pays to the
    keys `targets` [batch, key_pos] marks, from patterns [batch, head, query_pos, key_pos]."""
    at_query = pattern[:, :, -1, :]
    total = einsum(at_query, targets.to(pattern.dtype), "batch head key, batch key -> head")
    return total / pattern.shape[0]


def induction_score(pattern: torch.Tensor, context_classes: torch.Tensor, query_class: torch.Tensor) -> torch.Tensor:
    """Induction score per head, from patterns [batch, head, query_pos, key_pos]:

        score_h = (1/S) Σ_s Σ_{k ∈ M_s} A_h[s, q, k]

    q the query position (last), M_s the labels that follow items of the query's class.
    A perfect induction head scores 1; uniform attention scores |M_s|/T.
    """
    return query_attention_on(pattern, induction_targets(context_classes, query_class, pattern.shape[-1]))


def previous_token_score(pattern: torch.Tensor, label_positions: list[int] | None = None) -> torch.Tensor:
    """Previous-token score per head: the mean attention from each label to its item,

        score_h = (1/(S·N)) Σ_s Σ_i A_h[s, 2i+1, 2i]

    over the label positions (default: the bursty layout's 1, 3, …, T−2). A perfect
    previous-token head scores 1; uniform attention scores mean_i 1/(2i+2).
    """
    if label_positions is None:
        label_positions = list(range(1, pattern.shape[-1] - 1, 2))
    labels = torch.as_tensor(label_positions, device=pattern.device)
    prev = pattern[:, :, labels, labels - 1]  # [batch, head, label]
    return reduce(prev, "batch head label -> head", "mean")


def _pattern_names(model, task=None) -> dict[str, list[str]]:
    return {"icl": [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers)]}


def _per_head(prefix: str, layer: int, values: torch.Tensor) -> dict:
    return {f"{prefix}.L{layer}H{h}": values[h] for h in range(values.shape[0])}


@register_measure("induction_score", needs=("transformer", "ideal_attention"), eval_sets=("icl",), reads=_pattern_names)
def induction_scores(model, data: EvalData) -> dict:
    """Induction score of every head on the ICL set: the query's attention on the keys of the
    task's ideal induction pattern (see `induction_score`)."""
    ideal, _ = data.task.ideal_attention("induction", data.batches["icl"])  # [batch, query, key]
    targets = ideal[:, -1, :] > 0
    out = {}
    for layer in range(model.config.n_layers):
        pattern = data.activations(model, "icl", f"blocks.{layer}.attn.hook_pattern")
        out.update(_per_head("induction_score", layer, query_attention_on(pattern, targets)))
    return out


@register_measure("previous_token_score", needs=("transformer", "position_roles"), eval_sets=("icl",), reads=_pattern_names)
def previous_token_scores(model, data: EvalData) -> dict:
    """Previous-token score of every head on the ICL set, over the task's `labels` positions
    (see `previous_token_score`)."""
    labels = data.task.position_roles()["labels"]
    out = {}
    for layer in range(model.config.n_layers):
        pattern = data.activations(model, "icl", f"blocks.{layer}.attn.hook_pattern")
        out.update(_per_head("previous_token_score", layer, previous_token_score(pattern, labels)))
    return out
