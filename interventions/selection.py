"""Which entries of an activation a spec selects: its axes by name, heads and positions.

An activation's `Layout` names its axes, batch first, from TransformerLens's hook-name
conventions:

    *.hook_pattern, *.hook_attn_scores      batch head query_pos key_pos
    *.hook_q/k/v/z/result/rot_q/rot_k       batch pos head d_head
    other [batch, pos, ...] activations     batch pos d ...
    [batch, d] activations                  batch d

`selection_mask` turns a spec's heads and positions into a boolean mask [1, *shape] that
broadcasts over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from einops import rearrange

from interventions.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from interventions.spec import Intervention

HEAD_FIRST = ("hook_pattern", "hook_attn_scores")
HEAD_AFTER_POS = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_rot_q", "hook_rot_k")


@dataclass(frozen=True)
class Layout:
    """An activation's axis names (batch first) and its shape without the batch axis."""

    axes: tuple[str, ...]
    shape: tuple[int, ...]

    def describe(self, hook: str) -> str:
        return f"{hook} with shape [batch, {', '.join(str(s) for s in self.shape)}]"

    def size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis) - 1]


def layout_of(hook_name: str, shape: tuple[int, ...]) -> Layout:
    suffix = hook_name.rsplit(".", 1)[-1]
    if suffix in HEAD_FIRST:
        return Layout(("batch", "head", "query_pos", "key_pos"), shape)
    if suffix in HEAD_AFTER_POS and len(shape) == 3:
        return Layout(("batch", "pos", "head", "d_head"), shape)
    if len(shape) >= 2:
        return Layout(("batch", "pos", *(f"d{i}" for i in range(len(shape) - 1))), shape)
    return Layout(("batch", *(f"d{i}" for i in range(len(shape)))), shape)


@dataclass(frozen=True)
class Site:
    """One hook a spec acts on: its name, its activation's layout, and the error prefix."""

    hook: str
    layout: Layout
    where: str


def resolve_positions(sel, length: int, roles: dict[str, list[int]], where: str) -> list[int] | None:
    """A position selector -> sorted indices in [0, length), or None for all."""
    if sel == "all":
        return None
    if isinstance(sel, str) and ":" in sel:
        parts = [int(p) if p.strip() else None for p in sel.split(":")]
        return list(range(length))[slice(*parts)]
    if isinstance(sel, str):
        if sel not in roles:
            raise ConfigError(
                f"{where}: unknown position role {sel!r}.{did_you_mean(sel, sorted(roles))} "
                f"Valid roles: {', '.join(sorted(roles))}, or indices / slices"
            )
        return list(roles[sel])
    indices = [sel] if isinstance(sel, int) else list(sel)
    bad = [i for i in indices if not -length <= i < length]
    if bad:
        raise ConfigError(f"{where}: positions {bad} out of range for {length} positions (0..{length - 1})")
    return sorted({i % length for i in indices})


def selection_mask(spec: Intervention, site: Site, roles: dict[str, list[int]], device) -> torch.Tensor:
    """Boolean mask [1, *shape]: the entries of `site`'s activation that `spec` selects."""
    layout, where = site.layout, site.where
    chosen: dict[str, list[int]] = {}  # axis name -> selected indices (absent = all)
    if spec.heads:
        if "head" not in layout.axes:
            raise ConfigError(f"{where}: has no head axis, but heads={list(spec.heads)} given")
        n_heads = layout.size("head")
        bad = [h for h in spec.heads if not 0 <= h < n_heads]
        if bad:
            raise ConfigError(f"{where}: heads {bad} out of range; it has {n_heads} heads (0..{n_heads - 1})")
        chosen["head"] = list(spec.heads)
    if "query_pos" in layout.axes:
        if spec.positions != "all":
            raise ConfigError(f"{where}: attention patterns take query_positions / key_positions, not positions")
        for axis, field in (("query_pos", "query_positions"), ("key_pos", "key_positions")):
            idx = resolve_positions(getattr(spec, field), layout.size(axis), roles, f"{where}: {field}")
            if idx is not None:
                chosen[axis] = idx
    else:
        if spec.query_positions != "all" or spec.key_positions != "all":
            raise ConfigError(f"{where}: query_positions / key_positions apply to attention patterns only; use positions")
        if spec.positions != "all":
            if "pos" not in layout.axes:
                raise ConfigError(f"{where}: has no position axis, but positions={spec.positions!r} given")
            idx = resolve_positions(spec.positions, layout.size("pos"), roles, f"{where}: positions")
            if idx is not None:
                chosen["pos"] = idx
    mask = torch.ones((1, *layout.shape), dtype=torch.bool, device=device)
    for axis, indices in chosen.items():
        along = torch.zeros(layout.size(axis), dtype=torch.bool, device=device)
        along[indices] = True
        # e.g. axis "head" of "batch head query_pos key_pos": [head] -> [1, head, 1, 1]
        mask = mask & rearrange(along, f"{axis} -> {' '.join(a if a == axis else '1' for a in layout.axes)}")
    if not mask.any():
        raise ConfigError(f"{where}: the selection is empty")
    return mask
