"""Golechha (2024), "Progress measures for grokking on real-world tasks": activation sparsity,
absolute weight entropy and approximate local circuit complexity.

The paper leaves some choices open (which layer, the sparsity threshold, how the zeroed weights
are drawn); the choices made here are stated in each docstring and are parameters of the
plain functions, which the registered measures call with their defaults.
"""

from __future__ import annotations

import torch

from icl_lab.measures.registry import EvalData, register_measure
from icl_lab.measures.sites import neuron_hooks, weight_matrices

PATTERN_THRESHOLD = 0.01


def sparsity(act: torch.Tensor, threshold: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """S = (1/(D·n)) Σ_i Σ_j 𝟙(|a_ij| ≤ τ): the fraction of activations at most τ in size,
    over the entries where `mask` (broadcastable) is True."""
    off = (act.abs() <= threshold).double()
    if mask is None:
        return off.mean()
    mask = mask.expand_as(off)
    return off[mask].mean()


def _sparsity_reads(model, task) -> dict[str, list[str]]:
    hooks = neuron_hooks(model) or [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers)]
    return {task.probe_set: hooks}


@register_measure("activation_sparsity", needs=("probe_set",), reads=_sparsity_reads)
def activation_sparsity(model, data: EvalData, threshold: float = 0.0) -> dict:
    """Activation sparsity (Golechha 2024): S = (1/(D·n)) Σ_{i≤D} Σ_{j≤n} 𝟙(a_ij ≤ τ) over the D
    probe inputs and the n activations of a layer.

    Layers: the ReLU neurons (`hook_post`) of every MLP layer, at every position; τ = 0, so a
    neuron counts as off exactly when the ReLU zeroes it. An attention-only transformer has no
    neurons: there the measure reads each attention pattern (`hook_pattern`) over the causal
    entries, with τ = 0.01 (an attention weight under 1% counts as off). `activation_sparsity`
    is the mean over the layers.
    """
    set_name = data.task.probe_set
    sites = neuron_hooks(model)
    out = {}
    if sites:
        for hook in sites:
            out[f"activation_sparsity.{hook}"] = sparsity(data.activations(model, set_name, hook), threshold)
    else:
        for layer in range(model.config.n_layers):
            hook = f"blocks.{layer}.attn.hook_pattern"
            pattern = data.activations(model, set_name, hook)  # [batch, head, query, key]
            T = pattern.shape[-1]
            causal = torch.ones(T, T, dtype=torch.bool, device=pattern.device).tril()
            out[f"activation_sparsity.{hook}"] = sparsity(pattern, PATTERN_THRESHOLD, causal)
    out["activation_sparsity"] = torch.stack([torch.as_tensor(v) for v in out.values()]).mean()
    return out


def absolute_weight_entropy(W: torch.Tensor) -> torch.Tensor:
    """H(W) = −Σ_ij |w_ij| ln |w_ij| (Golechha's eq.; natural log, 0 ln 0 = 0, not normalised).
    For entries uniform on (−a, a): E[H] = m·n·(a/4 − (a/2) ln a)."""
    w = W.detach().double().abs()
    return -(torch.xlogy(w, w)).sum()


def normalized_weight_entropy(weights: list[torch.Tensor]) -> torch.Tensor:
    """Shannon entropy of p_i = |w_i| / Σ_j |w_j| over all the given weights (nats), the
    scale-free variant: it falls as the weight mass concentrates on fewer entries."""
    w = torch.cat([x.detach().double().abs().flatten() for x in weights])
    p = w / w.sum()
    return -(torch.xlogy(p, p)).sum()


@register_measure("weight_entropy")
def weight_entropy(model, data: EvalData) -> dict:
    """Absolute weight entropy (Golechha 2024) per weight matrix, H(W) = −Σ |w| ln |w|
    (`weight_entropy.<matrix>`), its sum over the model (`weight_entropy`), and the normalised
    entropy −Σ p ln p with p = |w|/Σ|w| over all matrices (`weight_entropy_normalized`)."""
    mats = weight_matrices(model)
    out = {f"weight_entropy.{name}": absolute_weight_entropy(W) for name, W in mats.items()}
    out["weight_entropy"] = torch.stack(list(out.values())).sum()
    out["weight_entropy_normalized"] = normalized_weight_entropy(list(mats.values()))
    return out


def zero_mask(shape: torch.Size, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Boolean mask with exactly round(fraction · numel) True entries, drawn uniformly."""
    n = int(torch.Size(shape).numel())
    k = round(fraction * n)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:k]] = True
    return mask.reshape(shape)


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per row, P = softmax(logits_p), Q = softmax(logits_q), in nats (float64)."""
    log_p = torch.log_softmax(logits_p.double(), -1)
    log_q = torch.log_softmax(logits_q.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def perturbed_logits(model, batch, fraction: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Logits with a random `fraction` of the entries of every weight matrix (the set of
    `weight_matrices`) set to zero, then the weights restored exactly. The masks come from a
    generator seeded with `seed`, so every checkpoint is scored with the same masks."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params = weight_matrices(model, parameters=True)
    saved = {}
    try:
        with torch.no_grad():
            for site, p in params.items():
                saved[site] = p.detach().clone()
                p.masked_fill_(zero_mask(p.shape, fraction, gen).to(p.device), 0.0)
            return model.forward_batch(batch)
    finally:
        with torch.no_grad():
            for site, value in saved.items():
                params[site].copy_(value)


@register_measure("local_circuit_complexity", needs=("probe_set",))
def local_circuit_complexity(model, data: EvalData, fraction: float = 0.1, seed: int = 0) -> dict:
    """Approximate local circuit complexity (Golechha 2024):
    Σ_{i≤D} Σ_y P_W(y|x_i) ln [P_W(y|x_i) / P_W′(y|x_i)], the KL divergence from the model's
    output distribution (softmax of the logits) to that of W′, the model with a random 10% of
    the entries of every weight matrix zeroed (dropout-like, one fixed seeded mask), summed over
    the D probe inputs (`local_circuit_complexity`) and averaged (`..._mean`)."""
    set_name = data.task.probe_set
    batch = data.batches[set_name]
    kl = kl_rows(data.logits(model, set_name), perturbed_logits(model, batch, fraction, seed))
    return {"local_circuit_complexity": kl.sum(), "local_circuit_complexity_mean": kl.mean()}
