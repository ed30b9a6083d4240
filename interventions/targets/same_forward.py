"""Targets that read other activations of the same forward, recorded by hooks of their own:
`previous_token_input` (a layer's input, shifted by one position) and `perfect_copying` (a
head's attention scores as the output logits), both after Singh et al."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from interventions.errors import ConfigError
from interventions.protocols import CarriesBatch, ForwardCallbacks, PositionRoles
from interventions.targets.base import Target, require_capability
from interventions.targets.registry import register

if TYPE_CHECKING:
    from interventions.spec import Intervention


class SameForward(Target):
    """Reads other hooks' activations from the same forward: a recording hook at each source
    (`sources`), which the engine adds with its own hooks (`hooks`, after every clamp, so a
    recording is the activation as the engine's clamps left it); `value` takes the recording.
    Subclasses give the sources of a site and the value."""

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.recorded: dict[str, torch.Tensor] = {}

    def sources(self, hook: str) -> list[str]:
        raise NotImplementedError

    def validate(self, site, engine):
        require_capability(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")
        absent = [n for n in self.sources(site.hook) if n not in engine.model.hook_names()]
        if absent:
            raise ConfigError(f"{site.where}: target {self.name!r} reads {', '.join(absent)}, which this model does not fire")

    def hooks(self):
        names = dict.fromkeys(name for hook in self.spec.hook_names for name in self.sources(hook))
        return [(name, self._recorder(name)) for name in names]

    def _recorder(self, name: str):
        def record(act, hook):
            self.recorded[name] = act  # with its gradient: value() decides what flows
            return act

        return record

    def before_forward(self, engine, inputs, positions, batch):
        self.recorded = {}  # nothing left from a forward that stopped before its clamp

    def take(self, name: str) -> torch.Tensor:
        """The source's activation in this forward (released once taken)."""
        if name not in self.recorded:
            raise RuntimeError(f"intervention {self.spec.label}: {name} did not fire before the clamped hook in this forward")
        return self.recorded.pop(name)


_ATTN_OUT = re.compile(r"blocks\.(\d+)\.hook_attn_out")


@register
class PreviousTokenInput(SameForward):
    """An ideal previous-token layer (Singh et al.'s `perfect_prev_token_input`): at
    `blocks.L.hook_attn_out` each position t receives the layer's own input at t − 1
    (`blocks.L.hook_resid_pre`; position 0 receives 0), so after the layer each token's
    residual holds its own input plus its predecessor's, as an identity-OV head attending
    perfectly to the previous token would write it."""

    name = "previous_token_input"

    def sources(self, hook):
        match = _ATTN_OUT.fullmatch(hook)
        return [f"blocks.{match.group(1)}.hook_resid_pre"] if match else []

    def validate(self, site, engine):
        if not _ATTN_OUT.fullmatch(site.hook):
            raise ConfigError(f"{site.where}: target 'previous_token_input' replaces a layer's attention output; use it on blocks.L.hook_attn_out")
        super().validate(site, engine)

    def value(self, act, site, engine):
        x = self.take(self.sources(site.hook)[0])  # [batch, pos, d_model]
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1), None


_HEAD = re.compile(r"L(\d+)H(\d+)")


@register
class PerfectCopying(SameForward):
    """Perfect copying (Singh et al.): the output logits at the query (last position) become
    the pre-softmax attention scores of head `key` = "L<layer>H<head>" from the query to the
    context labels, each on its label's id; every other label gets −∞. The scores are read as
    log A[q, k] of the head's pattern: log A = score − logsumexp over the row, and that
    constant cancels in the softmax over the labels (TL4's hook_attn_scores fires after the
    softmax, and with rotary positions no hook carries the rotated q and k). Needs
    gradient = "value", so the loss trains the head's scores through the clamp."""

    name = "perfect_copying"

    @classmethod
    def check_spec(cls, spec):
        if not _HEAD.fullmatch(spec.key):
            raise ConfigError(f"intervention {spec.label}: target 'perfect_copying' needs key = \"L<layer>H<head>\" (the head whose scores become the logits), got {spec.key!r}")
        if spec.gradient != "value":
            raise ConfigError(f"intervention {spec.label}: target 'perfect_copying' needs gradient = \"value\" (the loss must reach the head's scores), got {spec.gradient!r}")

    def head(self) -> tuple[str, int]:
        layer, head = _HEAD.fullmatch(self.spec.key).groups()
        return f"blocks.{layer}.attn.hook_pattern", int(head)

    def sources(self, hook):
        return [self.head()[0]]

    def validate(self, site, engine):
        super().validate(site, engine)
        require_capability(engine, CarriesBatch, site, self.name, "the task batch of each forward (model.current_batch)")
        roles = engine.task.position_roles() if isinstance(engine.task, PositionRoles) else {}
        if "labels" not in roles or getattr(engine.example, "context_labels", None) is None:
            raise ConfigError(f"{site.where}: target 'perfect_copying' needs a task with `labels` positions and context_labels in its batches")
        example = engine.example
        with torch.no_grad():
            output, cache = engine.model.run_with_cache(example.inputs, example.positions, names=[site.hook, self.head()[0]], batch=example)
        if cache[site.hook].dim() != 3 or not torch.equal(cache[site.hook][:, -1], output):
            raise ConfigError(f"{site.where}: target 'perfect_copying' replaces the output logits; its hook must carry them at the last position (hook_unembed)")
        n_heads = cache[self.head()[0]].shape[1]
        if self.head()[1] >= n_heads:
            raise ConfigError(f"{site.where}: key {self.spec.key!r} names head {self.head()[1]}, but the layer has {n_heads} heads (0..{n_heads - 1})")
        # on the device once: built from the list in each forward it would be a host copy per step
        self.label_positions = torch.as_tensor(roles["labels"], device=engine.device)

    def value(self, act, site, engine):
        name, head = self.head()
        pattern = self.take(name)[:, head, -1]  # [batch, key_pos], the query's row
        scores = pattern[:, self.label_positions].clamp_min(torch.finfo(pattern.dtype).tiny).log()  # [batch, N]
        context_labels = engine.model.current_batch.context_labels  # [batch, N] label ids
        logits = torch.full_like(act[:, -1], float("-inf")).scatter(1, context_labels, scores.to(act.dtype))
        return torch.cat([act[:, :-1], logits[:, None]], dim=1), None
