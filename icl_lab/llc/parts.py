"""Which weights a refined LLC samples: parameter masks for one head, one layer, the input side
or the readout of a lab transformer (Wang et al. 2024, the weight-refined LLC).

A head's weights in TL4's native attention: rows h·d_head … (h+1)·d_head of the Q, K and V
projections ([n_heads·d_head, d_model] weights, nn.Linear's (out, in) layout) and of their
biases, and the same columns of the output projection O ([d_model, n_heads·d_head]). O's bias
is shared by the heads and belongs to the layer, not to any head.
"""

from __future__ import annotations

import re

import torch

from icl_lab.config import ConfigError

HEAD = re.compile(r"^L(\d+)H(\d+)$")
LAYER = re.compile(r"^L(\d+)$")
INPUT_SIDE = ("input_map.", "bridge.embed.", "bridge.pos_embed.")
READOUT_SIDE = ("readout.", "bridge.unembed.", "bridge.ln_final.")


def parameter_names(model) -> dict[str, str]:
    """{clean name (`bridge.blocks.0.attn.q.weight`): the name in model.named_parameters()}."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {clean: by_id[id(p)] for clean, p in model.checkpoint_state(keep_vars=True).items() if id(p) in by_id}


def check_parts(model_config, parts: tuple[str, ...]) -> None:
    """Refuse a part a model of `model_config` (a ModelConfig) does not have, naming its layers
    and heads."""
    n_layers, n_heads = model_config.n_layers, model_config.n_heads
    for part in parts:
        head, layer = HEAD.match(part), LAYER.match(part)
        index = head or layer
        if index and int(index.group(1)) >= n_layers:
            raise ConfigError(f"llc.parts: {part!r} names layer {index.group(1)}, but the model has layers 0..{n_layers - 1}")
        if head and int(head.group(2)) >= n_heads:
            raise ConfigError(f"llc.parts: {part!r} names head {head.group(2)}, but the model has heads 0..{n_heads - 1} per layer")


def parameter_masks(model, part: str | None) -> dict[str, torch.Tensor | None] | None:
    """devinterp's `param_masks` for `part`: {named_parameters name: mask or None (the whole
    tensor)}; None for the whole model."""
    if part is None:
        return None
    check_parts(model.config, (part,))
    names = parameter_names(model)
    head, layer = HEAD.match(part), LAYER.match(part)
    if layer:
        prefix = f"bridge.blocks.{layer.group(1)}."
        return {names[c]: None for c in names if c.startswith(prefix)}
    if part in ("embed", "unembed"):
        prefixes = INPUT_SIDE if part == "embed" else READOUT_SIDE
        return {names[c]: None for c in names if c.startswith(prefixes)}
    l, h = int(head.group(1)), int(head.group(2))
    d_head = model.config.head_dim
    rows = slice(h * d_head, (h + 1) * d_head)
    params = dict(model.checkpoint_state(keep_vars=True))
    masks: dict[str, torch.Tensor | None] = {}
    for proj in ("q", "k", "v", "o"):
        for kind in ("weight", "bias"):
            clean = f"bridge.blocks.{l}.attn.{proj}.{kind}"
            if clean not in names or (proj == "o" and kind == "bias"):
                continue
            tensor = params[clean]
            mask = torch.zeros_like(tensor, dtype=torch.bool)
            if proj == "o":  # [d_model, n_heads·d_head]: the head's columns
                mask[:, rows] = True
            else:  # [n_heads·d_head, d_model] or [n_heads·d_head]: the head's rows
                if tensor.shape[0] != model.config.n_heads * d_head:
                    raise ConfigError(f"llc.parts: {part!r}: {clean} has {tensor.shape[0]} rows, not n_heads·d_head (grouped K/V heads are not split)")
                mask[rows] = True
            masks[names[clean]] = mask
    return masks


def masked_size(model, masks: dict[str, torch.Tensor | None] | None) -> int:
    """How many weights the sampler moves (d: a regular model's LLC would be d/2)."""
    params = dict(model.named_parameters())
    if masks is None:
        return sum(p.numel() for p in params.values() if p.requires_grad)
    return sum(params[n].numel() if m is None else int(m.sum()) for n, m in masks.items())
