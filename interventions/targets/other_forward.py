"""Targets computed by another forward that runs just before this one: the same hook in
another run's model (`checkpoint`), in this model on another sequence of the batch
(`resample`) or on a paired input (`other_input`), and a layer's pattern on an ideal
previous-token input (`previous_token_input_pattern`, after Singh et al.)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from interventions.errors import ConfigError
from interventions.hooks import added_hooks
from interventions.protocols import EngineView, ForwardCallbacks
from interventions.targets.base import Target, require_capability
from interventions.targets.registry import register

if TYPE_CHECKING:
    from interventions.spec import Intervention


class Reference(Target):
    """The same hook's activation in another forward that runs just before this one (on
    another model, or on another input); subclasses say which."""

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.cache: dict[str, torch.Tensor] = {}

    def validate(self, site, engine):
        require_capability(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")

    def reference(self, engine: EngineView, inputs, positions, batch):
        """(model, inputs, positions, batch) of the reference forward."""
        raise NotImplementedError

    def before_forward(self, engine, inputs, positions, batch):
        model, inputs, positions, batch = self.reference(engine, inputs, positions, batch)
        with engine.bypassed(), torch.no_grad():
            _, self.cache = model.run_with_cache(inputs, positions, names=self.spec.hook_names, batch=batch)

    def value(self, act, site, engine):
        return self.cache[site.hook], None


@register
class Checkpoint(Reference):
    """Another run's model (`checkpoint_run` at `checkpoint_step`) on the same input; the
    engine's `load_reference` loads it."""

    name = "checkpoint"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.model = None

    @classmethod
    def check_spec(cls, spec):
        if not spec.checkpoint_run:
            raise ConfigError(f"intervention {spec.label}: target 'checkpoint' needs checkpoint_run")

    def validate(self, site, engine):
        super().validate(site, engine)
        if engine.load_reference is None:
            raise ConfigError(
                f"{site.where}: target 'checkpoint' needs a way to load another run's model: "
                "pass InterventionEngine(..., load_reference=...)"
            )
        if self.model is None:
            run, step = self.spec.checkpoint_run, self.spec.checkpoint_step
            try:
                self.model = engine.load_reference(run, step, engine.device)
            except FileNotFoundError as err:
                raise ConfigError(f"{site.where}: checkpoint_run {run!r}: {err}") from None
            for p in self.model.parameters():
                p.requires_grad_(False)
        if site.hook not in self.model.hook_names():
            raise ConfigError(f"{site.where}: the checkpoint's model has no hook {site.hook!r}")
        example = engine.example
        try:
            with torch.no_grad():
                _, cache = self.model.run_with_cache(example.inputs, example.positions, names=[site.hook], batch=example)
        except RuntimeError as err:  # e.g. a model of another task, whose input map has other sizes
            raise ConfigError(f"{site.where}: the checkpoint's model cannot run this task's inputs: {err}") from None
        theirs = tuple(cache[site.hook].shape[1:])
        if theirs != site.layout.shape:
            raise ConfigError(
                f"{site.where}: the checkpoint's model gives it shape [batch, {', '.join(map(str, theirs))}]"
            )

    def reference(self, engine, inputs, positions, batch):
        return self.model, inputs, positions, batch


@register
class Resample(Reference):
    """This model on another sequence of the batch: the batch rolled by one."""

    name = "resample"

    def reference(self, engine, inputs, positions, batch):
        rolled_positions = None if positions is None else positions.roll(1, dims=0)
        return engine.model, inputs.roll(1, dims=0), rolled_positions, None


@register
class OtherInput(Reference):
    """This model on the paired input given with `engine.set_other_input(batch)` (activation
    patching from a clean into a corrupted run)."""

    name = "other_input"

    def reference(self, engine, inputs, positions, batch):
        other = engine.other_input
        if other is None:
            raise RuntimeError(f"intervention {self.spec.label}: target 'other_input' needs engine.set_other_input(batch)")
        if tuple(other.inputs.shape) != tuple(inputs.shape):
            raise ValueError(
                f"intervention {self.spec.label}: the paired input has shape {list(other.inputs.shape)}, "
                f"the model's input {list(inputs.shape)}"
            )
        return engine.model, other.inputs, other.positions, other


_PATTERN = re.compile(r"blocks\.(\d+)\.attn\.hook_pattern")


@register
class PreviousTokenInputPattern(Target):
    """The attention-pattern half of Singh et al.'s `perfect_prev_token_input`: layer L's
    pattern as it is when the layer's input at each inner position t (0 < t < T − 1) is the
    token embedding at t − 1 (`blocks.0.hook_resid_pre`) and nothing else, while the first and
    last (query) positions keep their own embedding: every key at a label position holds
    exactly its item, the query exactly itself, so matching needs only the QK weights. The
    pattern comes from a second forward of this model with that input at
    `blocks.L.hook_resid_pre` (the engine's clamps off), and carries its gradient to layer L's
    QK weights (gradient = "value"). Pair it with a `zero` clamp on the earlier layers'
    `hook_attn_out`, so layer L's values read the embeddings alone, as theirs do."""

    name = "previous_token_input_pattern"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.patterns: dict[str, torch.Tensor] = {}

    @classmethod
    def check_spec(cls, spec):
        if spec.gradient != "value":
            raise ConfigError(f"intervention {spec.label}: target 'previous_token_input_pattern' needs gradient = \"value\" (layer L's QK weights learn through the pattern), got {spec.gradient!r}")

    def validate(self, site, engine):
        match = _PATTERN.fullmatch(site.hook)
        if match is None or int(match.group(1)) < 1:
            raise ConfigError(f"{site.where}: target 'previous_token_input_pattern' replaces a later layer's attention pattern; use it on blocks.L.attn.hook_pattern with L >= 1")
        require_capability(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")
        absent = [n for n in ("blocks.0.hook_resid_pre", self.layer_input(site.hook)) if n not in engine.model.hook_names()]
        if absent:
            raise ConfigError(f"{site.where}: target 'previous_token_input_pattern' reads {', '.join(absent)}, which this model does not fire")

    @staticmethod
    def layer_input(hook: str) -> str:
        return f"blocks.{_PATTERN.fullmatch(hook).group(1)}.hook_resid_pre"

    def before_forward(self, engine, inputs, positions, batch):
        embedding: list[torch.Tensor] = []

        def record(act, hook):
            embedding.append(act)
            return act

        def shifted(act, hook):  # [batch, pos, d_model]: inner positions hold their predecessor's embedding
            x = embedding[0]
            return torch.cat([x[:, :1], x[:, :-2], x[:, -1:]], dim=1)

        def keep(name):
            def hook(act, hook):
                self.patterns[name] = act
                return act

            return hook

        hooks = [("blocks.0.hook_resid_pre", record)]
        for name in self.spec.hook_names:
            hooks += [(self.layer_input(name), shifted), (name, keep(name))]
        with added_hooks(engine.model, hooks), engine.bypassed():
            engine.model.run_with_cache(inputs, positions, names=[], batch=batch)

    def value(self, act, site, engine):
        return self.patterns.pop(site.hook), None
