"""Geometry of embeddings and of the input partition: embedding uniformity (Gu et al.) and
local complexity (Humayun, Balestriero & Baraniuk 2024)."""

from __future__ import annotations

import torch

from icl_lab.measures.registry import EvalData, register_measure
from icl_lab.measures.sites import is_mlp_model, neuron_hooks


def consecutive_distances(E: torch.Tensor) -> torch.Tensor:
    """‖E[i+1] − E[i]‖₂ for i = 0 … n−2 over the rows of E [n, d]."""
    E = E.detach().double()
    return (E[1:] - E[:-1]).norm(dim=-1)


def main_embedding_difference(E: torch.Tensor) -> torch.Tensor:
    """MED = (1/(n−1)) Σ_{i=0}^{n−2} ‖E[i+1] − E[i]‖₂ over the rows of E [n, d] (Gu et al.,
    "Beyond progress measures"; their code's slice stops one row early, here every consecutive
    pair is used)."""
    return consecutive_distances(E).mean()


def token_embeddings(model, task) -> torch.Tensor:
    """The embeddings of the task's `ordered_inputs()`, in their order [n, d_model]: rows of the
    token embedding (tokens: the modular operands 0..p−1) or the vectors through the input map
    (continuous: the bursty label vectors in label-id order)."""
    inputs = task.ordered_inputs()
    if task.io.input_kind == "tokens":
        return model.bridge.embed.weight[inputs]
    return inputs.to(model.input_map.weight.dtype) @ model.input_map.weight.T


@register_measure("embedding_uniformity", needs=("transformer", "ordered_inputs"))
def embedding_uniformity(model, data: EvalData) -> dict:
    """Main embedding difference (Gu et al.): MED = mean_i ‖E[i+1] − E[i]‖₂ over consecutive
    token embeddings, no normalisation. Modular: operands 0..p−1, whose order is the group's;
    bursty: the label embeddings in label-id order, an arbitrary order, so there MED tracks the
    spacing of the label embeddings rather than a learned ordering. `embedding_uniformity_cv`
    is the coefficient of variation of the consecutive distances (0 = perfectly uniform)."""
    E = token_embeddings(model, data.task)
    d = consecutive_distances(E)
    return {"embedding_med": main_embedding_difference(E), "embedding_uniformity_cv": d.std() / d.mean().clamp_min(1e-300)}


def orthonormal_frame(dim: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` orthonormal directions in R^dim [count, dim], fixed by `seed`."""
    if count > dim:
        raise ValueError(f"a frame of {count} orthonormal directions needs dim >= {count}, got {dim}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, count, generator=gen, dtype=torch.float64))
    return q.T.contiguous()


def crossings(pre: torch.Tensor) -> torch.Tensor:
    """pre [points, vertices, units] -> [points]: units whose pre-activation sign is not the
    same at every vertex (their hyperplane cuts the neighbourhood)."""
    pos = pre > 0
    return (pos.any(1) & ~pos.all(1)).sum(-1)


@register_measure("local_complexity", needs=("probe_set",))
def local_complexity(model, data: EvalData, directions: int = 25, radius: float = 0.01, points: int = 64, seed: int = 0) -> dict:
    """Local complexity (Humayun et al. 2024, "Deep networks always grok"): the number of
    ReLU neurons whose hyperplane intersects a small neighbourhood of an input, summed over
    layers and averaged over the first `points` probe inputs.

    The neighbourhood of x is the cross-polytope with the 2P vertices x ± r·v_p, v_1..v_P a
    fixed orthonormal frame (P = 25 as the paper; one seeded frame for every point and
    checkpoint, as their code); a neuron counts when its pre-activation sign differs between
    vertices. x lives in the network's first continuous space: the input vector (MLP) or the
    token embeddings `hook_embed` [positions × d_model] (transformer). r = `radius` × the mean
    norm of the probe points there (the paper's absolute r = 0.005 on [0, 1] pixels is about
    0.0005 of an MNIST image's norm). `local_complexity.<hook>` per layer; an attention-only
    transformer has no ReLU neurons and returns nothing.
    """
    hooks = [h.replace("hook_post", "hook_pre") for h in neuron_hooks(model)]
    if not hooks:
        return {}
    batch = data.batches[data.task.probe_set].slice(0, points)
    space = "hook_input" if is_mlp_model(model) else "hook_embed"
    _, cache = model.run_with_cache(batch.inputs, batch.positions, names=[space], batch=batch)
    x = cache[space]  # [n, ...]
    n, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(n, -1).double()
    frame = orthonormal_frame(flat.shape[1], directions, seed).to(flat.device)
    r = radius * flat.norm(dim=1).mean()
    offsets = torch.cat([frame, -frame]) * r  # [2P, D]
    vertices = (flat[:, None, :] + offsets[None]).reshape(n * 2 * directions, *shape).to(x.dtype)

    def rep(t):
        return t.repeat_interleave(2 * directions, dim=0)

    def replace(act, hook):
        return vertices

    pre: dict[str, torch.Tensor] = {}

    def keep(name):
        def save(act, hook):
            pre[name] = act.detach()
            return act

        return save

    fwd = [(space, replace)] + [(h, keep(h)) for h in hooks]
    with model.hooks(fwd_hooks=fwd):
        model(rep(batch.inputs), rep(batch.positions), batch=None)
    out = {}
    total = torch.zeros(n, dtype=torch.float64, device=flat.device)
    for h in hooks:
        act = pre[h].reshape(n, 2 * directions, -1)
        count = crossings(act).double()
        out[f"local_complexity.{h}"] = count.mean()
        total += count
    out["local_complexity"] = total.mean()
    return out
