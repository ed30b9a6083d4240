"""The intervention engine: specs -> TransformerLens forward hooks, switched by step windows.

    engine = InterventionEngine(model, task, specs)   # validates every spec; adds every hook
    engine.set_step(step, "train")                    # switches specs on and off (no hook moves)
    ... model.forward_batch(batch) ...                # active specs act on the activations
    engine.close()                                    # removes every hook of this engine

Each spec's target is an object of the class registered under its `target` name
(`interventions.targets`); the engine builds the selection mask, asks the target to validate
itself and, in the hook, for its value. For each selected entry (heads × positions of the
hook's activation) the hook computes

    mixed = (1 − α) · act + α · target

and returns `where(mask, mixed.detach(), act)` (gradient "detach") or
`where(mask, act + (mixed − act).detach(), act)` (gradient "through": forward value `mixed`,
gradient of `act`). Strength 0 returns the activation untouched (a bitwise no-op).
Training step convention: the forward/backward that takes the model from step s to s + 1
happens at step s; evaluation at step s sees the model after s updates.

Hook order: the engine adds all its hooks when it is built, so their place among other hooks
is fixed and does not depend on the step: at each hook point, first every spec's clamp in spec
order, then the hooks targets add to read other activations (`Target.hooks`, e.g. the
recorders of `perfect_copying`), which thus see what the clamps left. A spec inactive at the
current (step, phase) passes the activation through, and counts no call. Hooks added to the
model before the engine is built run before its clamps (they see the unclamped activation);
hooks added after it run after them (they see the clamped one). `close` removes the engine's
hooks and no others (`interventions.hooks`).

State: `state_dict()` / `load_state_dict()` hold the call counts and what the targets
accumulate (`running_mean`), under the string keys of the lab's checkpoints.

Validation refuses a hook that cannot change the model's output (one whose returned value
TransformerLens discards, such as `hook_attn_scores` in TL4's native bridge, which fires after
the softmax), a hook that is switched off (`hook_result` until `set_use_attn_result(True)`),
and a hook carrying integer indices rather than activations.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator

import torch

from interventions.errors import ConfigError, did_you_mean
from interventions.hooks import HookFn, HookGroup, added_hooks
from interventions.protocols import (
    ForwardCallbacks,
    HookedModel,
    LoadReference,
    PositionRoles,
    Task,
    missing,
)
from interventions.selection import Site, layout_of, selection_mask
from interventions.spec import Intervention
from interventions.targets import TARGET_CLASSES


class InterventionEngine:
    """Applies a list of Intervention specs to a HookedModel as forward hooks.

    `load_reference(run, step, device)` loads another run's model, for `checkpoint` targets.
    """

    def __init__(
        self,
        model: HookedModel,
        task: Task,
        specs: list[Intervention] | tuple[Intervention, ...],
        *,
        load_reference: LoadReference | None = None,
    ):
        for obj, protocol in ((model, HookedModel), (task, Task)):
            if not isinstance(obj, protocol):
                raise TypeError(
                    f"{type(obj).__name__} is not an interventions.protocols.{protocol.__name__}: "
                    f"it lacks {', '.join(missing(obj, protocol))}"
                )
        self.model = model
        self.task = task
        self.specs = list(specs)
        self.load_reference = load_reference
        self.targets = [TARGET_CLASSES[spec.target](spec) for spec in self.specs]
        self.device = next(model.parameters()).device
        self.example = task.sample_batch(2, task.make_generator(0))  # for dry runs
        self.calls: Counter = Counter()  # (spec index, hook name, phase) -> hook calls
        self.sites: dict[tuple[int, str], Site] = {}
        self._masks: dict[tuple[int, str], torch.Tensor] = {}
        self._active: tuple[int, ...] = ()
        self._on = [False] * len(self.specs)  # spec index -> active at the current (step, phase)
        self.other_input = None
        self._bypass = False  # True while the engine runs the model for its own targets
        self.phase = "train"
        # False while a compiled forward runs the hooks (a Python counter bumped inside the
        # graph would recompile it every step): `count_forward` counts after each call instead
        self.count_in_hooks = True
        self.validate()
        self._hooks = HookGroup(model)
        self._add_hooks()
        if isinstance(model, ForwardCallbacks):
            model.pre_forward_callbacks.append(self._before_forward)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Check every spec against the model before any training; raise ConfigError."""
        valid = self.model.hook_names()
        for spec in self.specs:
            for name in spec.hook_names:
                if name not in valid:
                    self._refuse_unlisted(spec, name, valid)
        first_spec = {name: spec for spec in reversed(self.specs) for name in spec.hook_names}
        example = self.example
        with torch.no_grad():
            output, cache = self.model.run_with_cache(
                example.inputs, example.positions, names=sorted(first_spec), batch=example
            )
        for name, spec in first_spec.items():
            self._check_hook_acts(spec, name, cache[name], output)
        roles = self.task.position_roles() if isinstance(self.task, PositionRoles) else {}
        for i, spec in enumerate(self.specs):
            for name in spec.hook_names:
                layout = layout_of(name, tuple(cache[name].shape[1:]))
                site = Site(name, layout, f"intervention {spec.label} on {layout.describe(name)}")
                self._masks[(i, name)] = selection_mask(spec, site, roles, self.device)
                self.targets[i].validate(site, self)
                self.sites[(i, name)] = site

    def _refuse_unlisted(self, spec: Intervention, name: str, valid: list[str]) -> None:
        """A hook name the model does not list: switched off, silent, or unknown."""
        example = self.example
        try:
            with torch.no_grad():
                _, cache = self.model.run_with_cache(example.inputs, example.positions, names=[name], batch=example)
        except ValueError as err:  # TransformerLens refuses a gated hook and says how to enable it
            raise ConfigError(f"intervention {spec.label}: hook {name!r} is switched off in this model: {err}") from None
        except KeyError:
            cache = None
        if cache is not None:
            raise ConfigError(
                f"intervention {spec.label}: hook {name!r} never fires in this model's forward pass, "
                f"so a clamp there would do nothing.{did_you_mean(name, valid)}"
            )
        raise ConfigError(
            f"intervention {spec.label}: unknown hook name {name!r}.{did_you_mean(name, valid)} "
            f"(`model.hook_names()` lists all {len(valid)})"
        )

    def _check_hook_acts(self, spec: Intervention, name: str, act: torch.Tensor, output: torch.Tensor) -> None:
        """Refuse a hook whose returned value cannot change the model's output: perturb the
        whole activation on the dry-run batch and compare the outputs bitwise."""
        if not act.is_floating_point():
            raise ConfigError(
                f"intervention {spec.label}: hook {name!r} carries {act.dtype} values (indices, not "
                "activations); interventions act on floating-point activations"
            )
        noise = torch.randn(act.shape, generator=torch.Generator().manual_seed(0)).to(act)
        probe = (name, lambda a, hook: a + noise * (1 + a.abs()))
        # TL warns when it discards a hook's edit; the comparison below turns that into an error
        with added_hooks(self.model, [probe]), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            probed, _ = self.model.run_with_cache(
                self.example.inputs, self.example.positions, names=[], batch=self.example
            )
        if torch.equal(probed, output):
            hint = ""
            if name.endswith("hook_attn_scores"):
                hint = (
                    " In TransformerLens 4's native bridge hook_attn_scores fires after the softmax, "
                    "with the attention pattern, and no hook sees the pre-softmax scores; clamp "
                    f"{name.replace('hook_attn_scores', 'hook_pattern')!r} instead."
                )
            raise ConfigError(
                f"intervention {spec.label}: a clamp on hook {name!r} would do nothing: changing its "
                f"activation leaves the model's output unchanged (the model discards what this hook "
                f"returns).{hint}"
            )

    # -- switching ------------------------------------------------------------------------
    def set_step(self, step: int, phase: str) -> None:
        """Make exactly the specs active at (step, phase) act; adds and removes no hook."""
        self.phase = phase
        self._active = tuple(i for i, s in enumerate(self.specs) if s.active(step, phase))
        self._on = [i in self._active for i in range(len(self.specs))]

    @property
    def active(self) -> tuple[int, ...]:
        return self._active

    def _add_hooks(self) -> None:
        """Every spec's clamps in spec order, then the targets' own hooks (see the module
        docstring); each passes activations through while its spec is inactive."""
        for i, spec in enumerate(self.specs):
            for name in spec.hook_names:
                self._hooks.add(name, self._while_active(i, self._make_hook(i, name)))
        for i, target in enumerate(self.targets):
            for name, fn in target.hooks():
                self._hooks.add(name, self._while_active(i, fn))

    def _while_active(self, i: int, fn: HookFn) -> HookFn:
        """`fn` while spec i is active; a pass-through while it is not, and during the
        engine's own forwards for its targets (`bypassed`)."""

        def hook(act: torch.Tensor, hook) -> torch.Tensor:  # TL passes the HookPoint as hook=
            if self._bypass or not self._on[i]:
                return act
            return fn(act, hook)

        return hook

    def close(self) -> None:
        """Remove every hook and callback of this engine; the model is as before it."""
        self._hooks.remove()
        self._active = ()
        self._on = [False] * len(self.specs)
        if isinstance(self.model, ForwardCallbacks) and self._before_forward in self.model.pre_forward_callbacks:
            self.model.pre_forward_callbacks.remove(self._before_forward)

    def __enter__(self) -> InterventionEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the hook -------------------------------------------------------------------------
    def _make_hook(self, i: int, name: str) -> HookFn:
        """Spec i's clamp at hook `name` (counted in `calls`); installed behind `_while_active`."""
        spec, target = self.specs[i], self.targets[i]
        site, mask = self.sites[(i, name)], self._masks[(i, name)]

        def hook(act: torch.Tensor, hook) -> torch.Tensor:
            if self.count_in_hooks:
                self.calls[(i, name, self.phase)] += 1
            if spec.strength == 0.0:
                return act  # bitwise no-op
            value, row_mask = target.value(act, site, self)
            selected = mask if row_mask is None else mask & row_mask
            if spec.strength == 1.0:
                mixed = value.to(act.dtype).expand_as(act)
            else:
                mixed = (1.0 - spec.strength) * act + spec.strength * value.to(act.dtype)
            if spec.gradient == "value":  # the target's value carries its own gradient
                return torch.where(selected, mixed, act)
            if spec.gradient == "detach":
                return torch.where(selected, mixed.detach(), act)
            return torch.where(selected, act + (mixed - act).detach(), act)

        return hook

    def count_forward(self) -> None:
        """Count one call of every active spec's clamp at each of its hooks: what the hooks
        count themselves in a forward that fires each hook once (every forward of the lab's
        models), for a forward run with `count_in_hooks` off."""
        for i in self._active:
            for name in self.specs[i].hook_names:
                self.calls[(i, name, self.phase)] += 1

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Run the model with this engine's hooks passing activations through untouched."""
        previous, self._bypass = self._bypass, True
        try:
            yield
        finally:
            self._bypass = previous

    def set_other_input(self, batch) -> None:
        """The paired input whose activations `other_input` targets patch in (same shape)."""
        self.other_input = batch

    def _before_forward(self, model, inputs, positions, batch) -> None:
        if self._bypass:
            return
        for i in self._active:
            self.targets[i].before_forward(self, inputs, positions, batch)

    # -- state and reporting --------------------------------------------------------------
    def state_dict(self) -> dict[str, dict]:
        """Everything the engine accumulates, under the string keys of the lab's checkpoints:

            {"intervention_calls":   {"<spec index>|<hook name>|<phase>": hook calls},
             "intervention_running": {"<spec index>|<hook name>": tensor}}

        the second holding each target's `state()` (the `running_mean` targets' means). The
        tensors are the engine's own, on its device (no copy, no host transfer)."""
        return {
            "intervention_calls": {f"{i}|{name}|{phase}": n for (i, name, phase), n in self.calls.items()},
            "intervention_running": self.running_means_state(),
        }

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Replace the call counts and the targets' state with `state_dict()`'s (resume, or
        evaluation of a stored checkpoint); a key naming no spec of this engine is refused."""
        calls = {}
        for key, n in state.get("intervention_calls", {}).items():
            index, name, phase = self._parse_key(key, "<spec index>|<hook name>|<phase>", parts=3)
            calls[(index, name, phase)] = n
        self.load_running_means_state(state.get("intervention_running", {}))
        self.calls.clear()
        self.calls.update(calls)

    def _parse_key(self, key: str, form: str, parts: int) -> tuple:
        fields = key.split("|")
        if len(fields) != parts or not fields[0].isdigit() or int(fields[0]) >= len(self.specs):
            raise ValueError(f"intervention state key {key!r} is not '{form}' for one of this engine's {len(self.specs)} specs")
        return (int(fields[0]), *fields[1:])

    def running_means(self) -> dict[tuple[int, str], torch.Tensor]:
        """{(spec index, hook name): tensor}: what the targets accumulated in training (the
        `running_mean` targets), saved with each checkpoint."""
        return {(i, name): t for i, target in enumerate(self.targets) for name, t in target.state().items()}

    def set_running_means(self, state: dict[tuple[int, str], torch.Tensor]) -> None:
        """Replace the accumulated targets (resume, or post-hoc evaluation of a checkpoint)."""
        for i, target in enumerate(self.targets):
            target.load_state({name: t for (j, name), t in state.items() if j == i})

    def running_means_state(self) -> dict[str, torch.Tensor]:
        """`running_means()` under string keys "<spec index>|<hook name>" (for safetensors)."""
        return {f"{i}|{name}": t.contiguous() for (i, name), t in self.running_means().items()}

    def load_running_means_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `running_means_state`; tensors are moved to the engine's device."""
        parsed = {}
        for key, tensor in state.items():
            index, name = self._parse_key(key, "<spec index>|<hook name>", parts=2)
            parsed[(index, name)] = tensor.to(self.device)
        self.set_running_means(parsed)

    def call_counts(self) -> dict[str, dict[str, int]]:
        """{spec label/hook: {phase: calls}}: evidence that every clamp fired."""
        out: dict[str, dict[str, int]] = {}
        for (i, name, phase), n in sorted(self.calls.items()):
            out.setdefault(f"{i}:{self.specs[i].name or name}@{name}", {})[phase] = n
        return out
