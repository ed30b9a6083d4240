"""What a clamp's selected entries become: one class per spec `target`, found in a registry.

    @register
    class Zero(Target):
        name = "zero"

        def value(self, act, site, engine):
            return torch.zeros((), device=act.device), None

A target checks the spec fields it needs (`check_spec`, when the spec is made), checks once,
before any training, that it can act at a hook of this model and task (`validate`), may
compute activations ahead of each forward (`before_forward`: another checkpoint, or this
model on another input), and gives the tensor the selected entries are mixed towards
(`value`). The engine calls only these; a new target is one class and `@register`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from interventions.errors import ConfigError
from interventions.protocols import CarriesBatch, ForwardCallbacks, IdealAttention, PositionRoles
from interventions.selection import Site

if TYPE_CHECKING:
    from interventions.engine import InterventionEngine
    from interventions.spec import Intervention

TARGET_CLASSES: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    """Class decorator: make `cls` the target called `cls.name` in specs."""
    TARGET_CLASSES[cls.name] = cls
    return cls


class Target:
    """Base class: one instance per spec, shared by the hooks the spec expands to."""

    name: ClassVar[str]

    def __init__(self, spec: Intervention):
        self.spec = spec

    @classmethod
    def check_spec(cls, spec: Intervention) -> None:
        """Raise ConfigError if the spec lacks a field this target needs."""

    def validate(self, site: Site, engine: InterventionEngine) -> None:
        """Raise ConfigError if this target cannot act at `site` of the engine's model."""

    def before_forward(self, engine: InterventionEngine, inputs, positions, batch) -> None:
        """Runs before each forward while the spec is active."""

    def value(self, act: torch.Tensor, site: Site, engine: InterventionEngine):
        """(target broadcastable to act, extra mask broadcastable to act or None)."""
        raise NotImplementedError(f"target {self.name!r} defines no value")

    def state(self) -> dict[str, torch.Tensor]:
        """{hook name: tensor} this target accumulates across forwards (saved with checkpoints)."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace what `state()` returns (resume, or evaluation of a stored checkpoint)."""


@register
class Zero(Target):
    name = "zero"

    def value(self, act, site, engine):
        return torch.zeros((), device=act.device), None


@register
class Constant(Target):
    """Every selected entry becomes the spec's `value`."""

    name = "constant"

    def value(self, act, site, engine):
        return torch.full((), self.spec.value, device=act.device), None


@register
class Mean(Target):
    """The mean over the batch of this forward's activation."""

    name = "mean"

    def value(self, act, site, engine):
        return act.detach().mean(dim=0, keepdim=True), None


@register
class RunningMean(Target):
    """m <- momentum · m + (1 − momentum) · (batch mean), updated on training forwards only;
    the first forward sets m to its batch mean."""

    name = "running_mean"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.means: dict[str, torch.Tensor] = {}  # hook name -> [1, *shape]

    def value(self, act, site, engine):
        batch_mean = act.detach().mean(dim=0, keepdim=True)
        if site.hook not in self.means:
            self.means[site.hook] = batch_mean
        elif engine.phase == "train":
            momentum = self.spec.momentum
            self.means[site.hook] = momentum * self.means[site.hook] + (1 - momentum) * batch_mean
        return self.means[site.hook], None

    def state(self):
        return dict(self.means)

    def load_state(self, state):
        self.means = dict(state)


@register
class File(Target):
    """A tensor from `file` (.safetensors, tensor `key`; or a torch .pt file), broadcast to
    the activation."""

    name = "file"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.tensors: dict[str, torch.Tensor] = {}  # hook name -> tensor on the model's device

    @classmethod
    def check_spec(cls, spec):
        if not spec.file:
            raise ConfigError(f"intervention {spec.label}: target 'file' needs file")

    def validate(self, site, engine):
        tensor = _load_tensor_file(self.spec.file, self.spec.key, site.where)
        full = (1, *site.layout.shape)
        try:
            ok = torch.broadcast_shapes(tuple(tensor.shape), full) == full
        except RuntimeError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{site.where}: target tensor from {self.spec.file} has shape {list(tensor.shape)}, which does "
                f"not broadcast to the activation's [batch, {', '.join(map(str, site.layout.shape))}]"
            )
        self.tensors[site.hook] = tensor.to(device=engine.device, dtype=torch.float32)

    def value(self, act, site, engine):
        return self.tensors[site.hook], None


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
        _require(engine, CarriesBatch, site, self.name, "the task batch of each forward (model.current_batch)")

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
    name = "previous_token"


@register
class Induction(IdealPattern):
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


class SameForward(Target):
    """Reads other hooks' activations from the same forward: before each forward it adds a
    recording hook at each source (`sources`), and `value` takes the recording and removes
    that hook. Subclasses give the sources of a site and the value."""

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.recorded: dict[str, torch.Tensor] = {}
        self.level: int | None = None

    def sources(self, hook: str) -> list[str]:
        raise NotImplementedError

    def validate(self, site, engine):
        _require(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")
        absent = [n for n in self.sources(site.hook) if n not in engine.model.hook_names()]
        if absent:
            raise ConfigError(f"{site.where}: target {self.name!r} reads {', '.join(absent)}, which this model does not fire")

    def before_forward(self, engine, inputs, positions, batch):
        from interventions.engine import _LEVELS

        self._release(engine)
        self.recorded, self.level = {}, next(_LEVELS)
        for hook in self.spec.hook_names:
            for name in self.sources(hook):
                engine.model.hook_point(name).add_hook(self._recorder(name), dir="fwd", is_permanent=True, level=self.level)

    def _recorder(self, name: str):
        def record(act, hook):
            self.recorded[name] = act  # with its gradient: value() decides what flows
            return act

        return record

    def _release(self, engine) -> None:
        if self.level is not None:
            for hook in self.spec.hook_names:
                for name in self.sources(hook):
                    engine.model.hook_point(name).remove_hooks("fwd", including_permanent=True, level=self.level)
        self.level = None

    def take(self, name: str, engine) -> torch.Tensor:
        """The source's activation in this forward (and stop recording once all are taken)."""
        if name not in self.recorded:
            raise RuntimeError(f"intervention {self.spec.label}: {name} did not fire before the clamped hook in this forward")
        act = self.recorded.pop(name)
        if not self.recorded:
            self._release(engine)
        return act


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
        x = self.take(self.sources(site.hook)[0], engine)  # [batch, pos, d_model]
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1), None


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
        _require(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")
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

        from interventions.engine import _LEVELS

        hooks = [("blocks.0.hook_resid_pre", record)]
        for name in self.spec.hook_names:
            hooks += [(self.layer_input(name), shifted), (name, keep(name))]
        level = next(_LEVELS)
        for name, fn in hooks:
            engine.model.hook_point(name).add_hook(fn, dir="fwd", is_permanent=True, level=level)
        try:
            with engine.bypassed():
                engine.model.run_with_cache(inputs, positions, names=[], batch=batch)
        finally:
            for name, _ in hooks:
                engine.model.hook_point(name).remove_hooks("fwd", including_permanent=True, level=level)

    def value(self, act, site, engine):
        return self.patterns.pop(site.hook), None


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
        _require(engine, CarriesBatch, site, self.name, "the task batch of each forward (model.current_batch)")
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
        pattern = self.take(name, engine)[:, head, -1]  # [batch, key_pos], the query's row
        scores = pattern[:, self.label_positions].clamp_min(torch.finfo(pattern.dtype).tiny).log()  # [batch, N]
        context_labels = engine.model.current_batch.context_labels  # [batch, N] label ids
        logits = torch.full_like(act[:, -1], float("-inf")).scatter(1, context_labels, scores.to(act.dtype))
        return torch.cat([act[:, :-1], logits[:, None]], dim=1), None


class Reference(Target):
    """The same hook's activation in another forward that runs just before this one (on
    another model, or on another input); subclasses say which."""

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.cache: dict[str, torch.Tensor] = {}

    def validate(self, site, engine):
        _require(engine, ForwardCallbacks, site, self.name, "callables run before each forward (pre_forward_callbacks)")

    def reference(self, engine: InterventionEngine, inputs, positions, batch):
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


def _require(engine: InterventionEngine, capability: type, site: Site, target: str, what: str) -> None:
    if not isinstance(engine.model, capability):
        raise ConfigError(
            f"{site.where}: target {target!r} needs a model that provides {what} "
            f"(interventions.protocols.{capability.__name__}); {type(engine.model).__name__} does not"
        )


def _load_tensor_file(path: str, key: str, where: str) -> torch.Tensor:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where}: target file {path} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        if not key and len(tensors) == 1:
            return next(iter(tensors.values()))
        if key not in tensors:
            raise ConfigError(f"{where}: {path} has no tensor {key!r}; it has {', '.join(sorted(tensors))}")
        return tensors[key]
    tensor = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(tensor, dict):
        if key not in tensor:
            raise ConfigError(f"{where}: {path} has no tensor {key!r}; it has {', '.join(sorted(tensor))}")
        tensor = tensor[key]
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"{where}: {path} does not hold a tensor")
    return tensor
