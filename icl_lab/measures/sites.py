"""Where the progress measures look: weight matrices and neuron hooks (the probe inputs are
the task's `probe_set` eval set).

One place decides these for every model the lab builds (TL bridge transformers with or without
MLPs, the MLP readout, the plain MLP), so every measure names its metrics the same way:
`<measure>.<site>` with the site a TL hook name or a weight name without `bridge.`/`.weight`.
"""

from __future__ import annotations

import torch

def is_mlp_model(model) -> bool:
    return getattr(model.config, "arch", "transformer") == "mlp"


def site_name(key: str) -> str:
    """A weight's site name: its checkpoint/parameter key without `bridge.`, `.weight` and an
    MLP layer's `.linear` (`bridge.blocks.0.attn.q.weight` -> `blocks.0.attn.q`)."""
    return key.removeprefix("bridge.").removesuffix(".weight").removesuffix(".linear")


def weight_matrices(model, parameters: bool = False) -> dict[str, torch.Tensor]:
    """Every 2-D weight matrix that maps one representation to another, by site name.

    Transformer: token embedding (when the task has tokens), the input map, Q/K/V/O, the MLP's
    in/out, the unembedding and the MLP readout's layers, each [out, in] as nn.Linear stores
    them. Positional embeddings and 1-row token embeddings are left out (not maps between
    representations). MLP: each layer's weight and the output layer's. With `parameters`,
    the live Parameters (to edit in place) instead of detached tensors.
    """
    state = model.checkpoint_state(keep_vars=parameters)
    out = {}
    for key, value in state.items():
        if not key.endswith("weight") or value.dim() != 2 or "pos_embed" in key:
            continue
        if min(value.shape) < 2:
            continue
        out[site_name(key)] = value
    return out


def neuron_hooks(model) -> list[str]:
    """Hooks of ReLU-family neurons (pre-activations are the matching `hook_pre`):
    `layers.{i}.hook_post` of an MLP, `blocks.{l}.mlp.hook_post` of a transformer with MLPs;
    empty for an attention-only transformer."""
    if is_mlp_model(model):
        return [f"layers.{i}.hook_post" for i in range(len(model.config.mlp_widths))]
    if model.config.attn_only:
        return []
    return [f"blocks.{l}.mlp.hook_post" for l in range(model.config.n_layers)]


def representation_hooks(model) -> list[str]:
    """The hidden layers T of the information plane: an MLP's hidden layers; a transformer's
    residual stream after each block (read at the last position)."""
    if is_mlp_model(model):
        return [f"layers.{i}.hook_post" for i in range(len(model.config.mlp_widths))]
    return [f"blocks.{l}.hook_resid_post" for l in range(model.config.n_layers)]


def last_position(act: torch.Tensor, model) -> torch.Tensor:
    """[batch, units] at the answer position (transformer activations are [batch, pos, ...])."""
    if is_mlp_model(model):
        return act.reshape(act.shape[0], -1)
    return act[:, -1].reshape(act.shape[0], -1)
