"""Grokking measures in the registry (tasks with `modular_arithmetic`), live and on checkpoints.

All read one forward pass over the full (a, b) grid (`grid` set) and the weights:
- `modular_accuracy`: train_accuracy, test_accuracy (argmax at `=`);
- `modular_loss`: train_set_loss, test_loss (cross-entropy in float64);
- `fourier_embedding`: embedding_fourier_norm.k{k} for every frequency, gini_embedding,
  key_frequency_count_embedding (frequencies with ≥ 25% of the largest norm);
- `gini_neuron_logit`: Gini of the per-frequency norms of W_L = W_out W_U over output classes;
- `restricted_excluded_loss` (add, sub): key frequencies of the current model's MLP neurons
  (Nanda's clustering, see `neuron_frequencies`), then restricted_loss (all pairs) and
  excluded_loss (training pairs); key_frequency_count;
- `weight_norm`: Σ w² over every parameter, biases included.
"""

from __future__ import annotations

import torch

from icl_lab.grokking.fourier import (
    cross_entropy,
    frequency_norms,
    gini,
    key_frequencies_from_embedding,
    neuron_frequencies,
    restricted_and_excluded_logits,
)
from icl_lab.measures.registry import EvalData, register_measure


def _grid_logits(model, data: EvalData) -> torch.Tensor:
    return data.logits(model, "grid")


@register_measure("modular_accuracy", needs=("modular_arithmetic",))
def modular_accuracy(model, data: EvalData) -> dict:
    """Accuracy (1/S) Σ [argmax ŷ = y] on the training and the held-out pairs."""
    task = data.task
    correct = (_grid_logits(model, data).argmax(-1) == task.labels).double()
    return {"train_accuracy": correct[task.train_idx].mean(), "test_accuracy": correct[task.test_idx].mean()}


@register_measure("modular_loss", needs=("modular_arithmetic",))
def modular_loss(model, data: EvalData) -> dict:
    """Cross-entropy −(1/S) Σ log softmax(ŷ)[y] in float64 on training and held-out pairs."""
    task = data.task
    logits = _grid_logits(model, data)
    return {
        "train_set_loss": cross_entropy(logits[task.train_idx], task.labels[task.train_idx]),
        "test_loss": cross_entropy(logits[task.test_idx], task.labels[task.test_idx]),
    }


def _weights(model) -> dict[str, torch.Tensor]:
    return model.bridge.state_dict()


@register_measure("fourier_embedding", needs=("modular_arithmetic", "transformer"))
def fourier_embedding(model, data: EvalData) -> dict:
    """Per-frequency norms of W_E's Fourier components (rows a = 0..p−1), their Gini
    coefficient, and the count of frequencies with ≥ 25% of the largest norm."""
    p = data.task.config.p
    W_E = _weights(model)["embed.weight"][:p]
    norms = frequency_norms(W_E, p)
    out = {f"embedding_fourier_norm.k{k + 1}": norms[k] for k in range(norms.shape[0])}
    out["gini_embedding"] = gini(norms)
    out["key_frequency_count_embedding"] = torch.tensor(float(len(key_frequencies_from_embedding(W_E, p))))
    return out


@register_measure("gini_neuron_logit", needs=("modular_arithmetic", "transformer"))
def gini_neuron_logit(model, data: EvalData) -> dict:
    """Gini of the per-frequency norms of the neuron-logit map W_L = W_out W_U, Fourier
    transformed over the output residues."""
    w = _weights(model)
    layer = model.config.n_layers - 1
    if f"blocks.{layer}.mlp.out.weight" not in w:
        return {}
    W_L_T = w["unembed.weight"] @ w[f"blocks.{layer}.mlp.out.weight"]  # [p, d_mlp]
    return {"gini_neuron_logit": gini(frequency_norms(W_L_T, data.task.config.p))}


def _neuron_names(model, task=None) -> dict[str, list[str]]:
    if model.config.attn_only:
        return {}
    return {"grid": [f"blocks.{model.config.n_layers - 1}.mlp.hook_post"]}


def key_frequencies_from_model(model, data: EvalData) -> list[int]:
    """Unique frequencies assigned to the last MLP layer's neurons (Nanda et al.)."""
    p = data.task.config.p
    acts = data.activations(model, "grid", f"blocks.{model.config.n_layers - 1}.mlp.hook_post")[:, -1, :]
    freq, _ = neuron_frequencies(acts.reshape(p, p, -1), p)
    return sorted(set(freq.tolist()))


@register_measure("restricted_excluded_loss", needs=("modular_arithmetic", "transformer"), reads=_neuron_names)
def restricted_excluded_loss(model, data: EvalData, frequencies: list[int] | None = None) -> dict:
    """Restricted loss (key-frequency components of the logits plus class means, all pairs)
    and excluded loss (key components removed, training pairs), Nanda et al. §5.1."""
    task = data.task
    cfg = task.config
    if cfg.op not in ("add", "sub") or model.config.attn_only:
        return {}
    if frequencies is None:
        frequencies = key_frequencies_from_model(model, data)
    restricted, excluded = restricted_and_excluded_logits(_grid_logits(model, data), cfg.p, frequencies, cfg.op)
    return {
        "restricted_loss": cross_entropy(restricted, task.labels),
        "excluded_loss": cross_entropy(excluded[task.train_idx], task.labels[task.train_idx]),
        "key_frequency_count": torch.tensor(float(len(frequencies))),
    }


@register_measure("weight_norm")
def weight_norm(model, data: EvalData) -> dict:
    """Total weight norm Σ_θ θ² over every trainable parameter (biases included)."""
    return {"weight_norm": sum((p.detach().double() ** 2).sum() for p in model.parameters() if p.requires_grad)}


@register_measure("nfa", needs=("modular_arithmetic", "transformer"))
def nfa(model, data: EvalData) -> dict:
    """Neural feature ansatz (Mallinar et al. 2024): corr(vec(W₁ᵀW₁), vec(AGOP^½)) with W₁ the
    embedding acting on each operand's one-hot, AGOP over the training pairs (see
    `icl_lab.rfm.nfa.transformer_nfa`)."""
    from icl_lab.rfm.nfa import transformer_nfa

    with torch.enable_grad():
        return {"nfa_correlation": transformer_nfa(model, data.task)}
