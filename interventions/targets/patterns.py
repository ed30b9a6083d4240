"""Targets that are the task's ideal attention patterns (`interventions.protocols.IdealAttention`)
on the batch of the forward in progress: `previous_token`, `induction`, and Singh et al.'s
strength-s mixtures `previous_token_or_self` and `induction_or_other`."""

from __future__ import annotations

import torch

from interventions.errors import ConfigError
from interventions.protocols import CarriesBatch, IdealAttention
from interventions.targets.base import Target, require_capability
from interventions.targets.registry import register


class IdealPattern(Target):
    """The task's ideal attention pattern of kind `name` on the current batch; query rows the
    task leaves undefined for a sequence are not touched."""

    def validate(self, site, engine):
        if not site.hook.endswith("hook_pattern"):
            raise ConfigError(
                f"{site.where}: target {self.name!r} is an attention pattern; use it on a *.attn.hook_pattern hook"
            )
        if not isinstance(engine.task, IdealAttention):
            raise ConfigError(
                f"{site.where}: target {self.name!r} needs the task's ideal attention patterns, and task "
                f"{getattr(engine.task, 'name', type(engine.task).__name__)!r} defines no ideal attention "
                "patterns (interventions.protocols.IdealAttention)"
            )
        require_capability(engine, CarriesBatch, site, self.name, "the task batch of each forward (model.current_batch)")

    def value(self, act, site, engine):
        batch = engine.model.current_batch
        if batch is None:
            raise RuntimeError(
                f"intervention {self.spec.label} (target {self.name!r}) needs the task batch: call "
                "model.forward_batch(batch) or pass batch= to the model"
            )
        pattern, defined = engine.task.ideal_attention(self.name, batch)  # [b, q, k], [b, q]
        return pattern[:, None, :, :], defined[:, None, :, None]


@register
class PreviousToken(IdealPattern):
    """The task's ideal previous-token pattern: each query row on the token before it."""

    name = "previous_token"


@register
class Induction(IdealPattern):
    """The task's ideal induction pattern: the query on the context label of its class."""

    name = "induction"


@register
class PreviousTokenOrSelf(IdealPattern):
    """Singh et al.'s previous-token clamp of strength s: s of each row's attention on the
    previous token (the task's `previous_token` pattern), 1 − s on the token itself. The
    engine mixes (1 − s)·act + s·value, so value = prev + ((1 − s)/s)·(I − act) gives exactly
    s·prev + (1 − s)·I (strength 0 leaves the head alone, as every target)."""

    name = "previous_token_or_self"

    def value(self, act, site, engine):
        prev, defined = engine.task.ideal_attention("previous_token", engine.model.current_batch)
        s = self.spec.strength
        itself = torch.eye(act.shape[-1], device=act.device, dtype=act.dtype)
        return prev[:, None].to(act.dtype) + (1 - s) / s * (itself - act.detach()), defined[:, None, :, None]


@register
class InductionOrOther(IdealPattern):
    """Singh et al.'s induction clamp of strength s: s of the query's attention on the correct
    context label (the task's `induction` pattern), 1 − s on the other context label(s) (its
    `other_labels` pattern). As `previous_token_or_self`, value = ind + ((1 − s)/s)·(other − act)
    so that the engine's (1 − s)·act + s·value is exactly s·ind + (1 − s)·other."""

    name = "induction_or_other"

    def value(self, act, site, engine):
        batch = engine.model.current_batch
        induction, defined = engine.task.ideal_attention("induction", batch)
        other, _ = engine.task.ideal_attention("other_labels", batch)
        s = self.spec.strength
        value = induction[:, None].to(act.dtype) + (1 - s) / s * (other[:, None].to(act.dtype) - act.detach())
        return value, defined[:, None, :, None]
