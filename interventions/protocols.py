"""What the engine needs from a model and a task, as capabilities it checks with isinstance.

A model is a `HookedModel`: it names its hook points, hands out TransformerLens `HookPoint`s
and runs with a cache. Two further capabilities are needed only by some targets:
`CarriesBatch` (the task batch of the running forward, for targets computed from the batch)
and `ForwardCallbacks` (callables run before each forward, for targets that compute
activations on another model or input first, or read other hooks of the same forward). A
target that needs one checks for it in `validate`, and its error names the capability.

A task is a `Task` (samples a batch, for the engine's shape dry run); `PositionRoles` (named
positions such as `query`) and `IdealAttention` (ideal patterns for the pattern targets) are
optional. The lab's LabModel and tasks satisfy all of these; a bare TransformerLens model needs
a thin adapter (tests/test_interventions_standalone.py has one).

`EngineView` is what a target sees of the engine that runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # importing TransformerLens takes seconds; `icl-lab --help` must not
    from transformer_lens.hook_points import HookPoint


@runtime_checkable
class Batch(Protocol):
    inputs: torch.Tensor  # [batch, pos] token ids or [batch, pos, d_input] vectors
    positions: torch.Tensor | None  # [batch, pos] position ids, or None for 0..pos-1


@runtime_checkable
class HookedModel(Protocol):
    def hook_names(self) -> list[str]:
        """Every hook name that fires in a forward pass."""

    def hook_point(self, name: str) -> HookPoint:
        """The HookPoint called `name`; the engine adds and removes its own hooks there."""

    def run_with_cache(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor | None = None,
        names: list[str] | None = None,
        *,
        batch: Any = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(output, {hook name: activation}); raises KeyError for a hook name it does not
        have and ValueError for one that is switched off (TransformerLens's gated hooks)."""

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


@runtime_checkable
class CarriesBatch(Protocol):
    current_batch: Any  # the task batch of the forward in progress, or None


@runtime_checkable
class ForwardCallbacks(Protocol):
    # callables (model, inputs, positions, batch) the model runs before each forward
    pre_forward_callbacks: list[Callable[..., None]]


@runtime_checkable
class Task(Protocol):
    def make_generator(self, seed: int) -> torch.Generator: ...

    def sample_batch(self, n: int, generator: torch.Generator) -> Batch: ...


@runtime_checkable
class PositionRoles(Protocol):
    def position_roles(self) -> dict[str, list[int]]:
        """Named positions, e.g. {"query": [16], "labels": [1, 3, ...]}."""


@runtime_checkable
class IdealAttention(Protocol):
    def ideal_attention(self, kind: str, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(pattern [batch, query_pos, key_pos], defined [batch, query_pos]) for `kind`
        'previous_token', 'induction' or 'other_labels' (the query on the context labels of
        other classes; used by `induction_or_other`); rows where `defined` is False are left alone."""


# load_reference(run, step, device) -> the HookedModel stored in another run at `step`
# (-1 = its last checkpoint); raises FileNotFoundError when there is no such run or step.
LoadReference = Callable[[str, int, torch.device], HookedModel]


class EngineView(Protocol):
    """What a target may use of the engine that runs it (`interventions.targets`)."""

    model: HookedModel
    task: Task
    device: torch.device
    example: Batch  # a small batch of the task, for the targets' dry runs in `validate`
    phase: str  # "train" or "eval": the phase of the forward in progress
    load_reference: LoadReference | None
    other_input: Batch | None  # the paired input of `other_input` targets

    def bypassed(self) -> AbstractContextManager[None]:
        """A context in which the engine's hooks pass activations through untouched."""


def missing(obj: Any, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks (for error messages)."""
    members = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    members += list(getattr(protocol, "__annotations__", {}))
    return [n for n in members if not hasattr(obj, n)]
