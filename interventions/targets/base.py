"""The base class of targets, and the capability check several of them share.

A target checks the spec fields it needs (`check_spec`, when the spec is made), checks once,
before any training, that it can act at a hook of this model and task (`validate`), may ask
for hooks of its own beside the clamp (`hooks`: recorders of other activations of the same
forward), may compute activations ahead of each forward (`before_forward`: another
checkpoint, or this model on another input), and gives the tensor the selected entries are
mixed towards (`value`). The engine calls only these; a new target is one class and
`@register` (`interventions.targets.registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from interventions.errors import ConfigError
from interventions.hooks import HookFn
from interventions.protocols import EngineView
from interventions.selection import Site

if TYPE_CHECKING:
    from interventions.spec import Intervention


class Target:
    """Base class: one instance per spec, shared by the hooks the spec expands to."""

    name: ClassVar[str]

    def __init__(self, spec: Intervention):
        self.spec = spec

    @classmethod
    def check_spec(cls, spec: Intervention) -> None:
        """Raise ConfigError if the spec lacks a field this target needs."""

    def validate(self, site: Site, engine: EngineView) -> None:
        """Raise ConfigError if this target cannot act at `site` of the engine's model."""

    def hooks(self) -> list[tuple[str, HookFn]]:
        """(hook name, fn) this target needs beside its clamps, e.g. recorders of activations
        it reads; the engine adds them once, after every clamp, and runs them only while the
        spec is active."""
        return []

    def before_forward(self, engine: EngineView, inputs, positions, batch) -> None:
        """Runs before each forward while the spec is active."""

    def value(self, act: torch.Tensor, site: Site, engine: EngineView):
        """(target broadcastable to act, extra mask broadcastable to act or None)."""
        raise NotImplementedError(f"target {self.name!r} defines no value")

    def state(self) -> dict[str, torch.Tensor]:
        """{hook name: tensor} this target accumulates across forwards (saved with checkpoints)."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace what `state()` returns (resume, or evaluation of a stored checkpoint)."""


def require_capability(engine: EngineView, capability: type, site: Site, target: str, what: str) -> None:
    """Refuse a model without `capability` (an interventions.protocols class) for `target`."""
    if not isinstance(engine.model, capability):
        raise ConfigError(
            f"{site.where}: target {target!r} needs a model that provides {what} "
            f"(interventions.protocols.{capability.__name__}); {type(engine.model).__name__} does not"
        )
