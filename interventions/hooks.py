"""Adding and removing forward hooks on a model's TransformerLens hook points, as one group.

    group = HookGroup(model)
    group.add("blocks.1.attn.hook_pattern", clamp)   # permanent, at the group's level
    ...
    group.remove()                                    # removes this group's hooks only

    with added_hooks(model, [(name, fn), ...]):       # a group for the length of a block
        model.run_with_cache(...)

TransformerLens removes hooks by `level`; its `hooks()` contexts count 1, 2, ... so ours are
negative, one per group, and removing a group touches no one else's hooks (a user's, another
engine's, TL's own contexts). Hooks are permanent so that `model.reset_hooks()` and TL's
contexts leave them alone: only their group removes them. At one hook point, hooks run in the
order they were added.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator

import torch

from interventions.protocols import HookedModel

# fn(activation, hook=the HookPoint) -> the activation the model continues with (TL passes
# the HookPoint by keyword, so the parameter must be called `hook`)
HookFn = Callable[[torch.Tensor, object], torch.Tensor]

_LEVELS = itertools.count(-1, -1)


class HookGroup:
    """Forward hooks added to one model under one level of their own, removed together."""

    def __init__(self, model: HookedModel):
        self.model = model
        self.level = next(_LEVELS)
        self.names: dict[str, None] = {}  # hook names this group has hooks at, in order added

    def add(self, name: str, fn: HookFn) -> None:
        """Append `fn` to hook point `name`: it runs after the hooks already there."""
        self.model.hook_point(name).add_hook(fn, dir="fwd", is_permanent=True, level=self.level)
        self.names[name] = None

    def remove(self) -> None:
        """Remove every hook of this group (and none other); a second call does nothing."""
        for name in self.names:
            self.model.hook_point(name).remove_hooks("fwd", including_permanent=True, level=self.level)
        self.names.clear()


@contextlib.contextmanager
def added_hooks(model: HookedModel, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[HookGroup]:
    """`hooks` (hook name, fn) added as one group for the block, removed after it, also on error."""
    group = HookGroup(model)
    try:
        for name, fn in hooks:
            group.add(name, fn)
        yield group
    finally:
        group.remove()
