"""The intervention spec: a declarative, serialisable description of one clamp or ablation.

    [[intervention]]
    hook = "blocks.{layer}.attn.hook_pattern"   # a TL hook name, or a pattern over layers
    layers = [1]                                 # fills {layer}; omit for a plain hook name
    heads = [0]                                  # omit for every head
    query_positions = "query"                    # attention patterns: query and key axes
    key_positions = "all"
    target = "induction"                         # what the selected entries become: a TARGETS name
    strength = 1.0                               # act <- (1 - strength) * act + strength * target
    gradient = "detach"                          # one of GRADIENTS
    steps = [0, 2000]                            # training-step window [start, end); end -1 = open
    apply = "train_and_eval"                     # train_and_eval | train | eval

Positions are `"all"`, an index, a list of indices, a slice `"start:stop[:step]"` (Python
semantics, negative indices allowed) or a role name the task defines (bursty: `query`,
`labels`, `items`, `context`). For activations with a position axis other than attention
patterns (`hook_resid_pre`, `hook_z`, ...) use `positions`.

Targets: every name registered in `interventions.targets` (`TARGETS` here);
`interventions.targets.describe_targets()` gives each with its one-line description, and each
target's class docstring says what it needs (fields such as `value`, `momentum`, `file`/`key`,
`checkpoint_run`/`checkpoint_step`; hooks; capabilities of the model and task).

Gradient: one of `GRADIENTS`, each described there.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from interventions.errors import ConfigError, did_you_mean
from interventions.targets.registry import TARGET_CLASSES

TARGETS = TARGET_CLASSES.keys()  # the registered target names (a live view of the registry)
GRADIENTS = {  # gradient mode -> how gradients flow through the clamped entries
    "detach": "the clamped entries are constants: no gradient flows through them into what "
    "produced the activation",
    "through": "straight-through: the forward value is the clamped one, the gradient that of "
    "the unclamped activation",
    "value": "the gradient flows through the mix into what the target computed its value from "
    "(targets that compute their value from the model, such as perfect_copying)",
}
APPLY = ("train_and_eval", "train", "eval")

# A position selector: "all", an int, a list of ints, a "start:stop:step" slice, or a role.
Positions = Any


@dataclass(frozen=True)
class Intervention:
    """One intervention: which activation, which heads and positions, what it becomes,
    when, how much, and how gradients flow. See the module docstring for every field."""

    hook: str
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()  # () = every head
    positions: Positions = "all"
    query_positions: Positions = "all"
    key_positions: Positions = "all"
    target: str = "zero"
    value: float = 0.0  # constant target
    momentum: float = 0.99  # running_mean target
    checkpoint_run: str = ""  # checkpoint target: a run directory
    checkpoint_step: int = -1  # checkpoint target: step (-1 = the run's last checkpoint)
    file: str = ""  # file target
    key: str = ""  # file target: tensor name in a .safetensors file
    strength: float = 1.0
    gradient: str = "detach"
    steps: tuple[int, int] = (0, -1)  # [start, end) in training steps; end -1 = to the end
    apply: str = "train_and_eval"
    name: str = ""

    def __post_init__(self) -> None:
        label = self.label
        if self.target not in TARGETS:
            raise ConfigError(
                f"intervention {label}: target {self.target!r} is not valid."
                f"{did_you_mean(self.target, list(TARGETS))} Valid targets: {', '.join(TARGETS)}"
            )
        if self.gradient not in GRADIENTS:
            raise ConfigError(
                f"intervention {label}: gradient {self.gradient!r} is not one of {', '.join(GRADIENTS)}"
            )
        if self.apply not in APPLY:
            raise ConfigError(
                f"intervention {label}: apply {self.apply!r} is not one of {', '.join(APPLY)}"
            )
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"intervention {label}: strength must be in [0, 1], got {self.strength}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"intervention {label}: momentum must be in [0, 1), got {self.momentum}")
        if len(self.steps) != 2:
            raise ConfigError(f"intervention {label}: steps must be [start, end], got {self.steps!r}")
        start, end = self.steps
        if start < 0 or (end != -1 and end <= start):
            raise ConfigError(
                f"intervention {label}: steps window [{start}, {end}) is empty or negative; "
                "write [start, end] with end > start, or end = -1 for open-ended"
            )
        if "{layer}" in self.hook and not self.layers:
            raise ConfigError(f"intervention {label}: hook {self.hook!r} has {{layer}}; give layers = [...]")
        if self.layers and "{layer}" not in self.hook:
            raise ConfigError(
                f"intervention {label}: layers given but hook {self.hook!r} has no {{layer}} to fill"
            )
        TARGET_CLASSES[self.target].check_spec(self)
        for field_name in ("positions", "query_positions", "key_positions"):
            _check_position_syntax(getattr(self, field_name), f"intervention {label}: {field_name}")

    @property
    def label(self) -> str:
        return repr(self.name or self.hook)

    @property
    def hook_names(self) -> list[str]:
        """The concrete hook names this spec acts on."""
        if self.layers:
            return [self.hook.replace("{layer}", str(layer)) for layer in self.layers]
        return [self.hook]

    def active(self, step: int, phase: str) -> bool:
        """Whether the spec applies at training `step` in `phase` ('train' or 'eval')."""
        if self.apply == "train" and phase != "train":
            return False
        if self.apply == "eval":
            return phase == "eval"
        start, end = self.steps
        return start <= step and (end == -1 or step < end)

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-able dict (tuples as lists) of the fields that differ from the defaults,
        plus the hook."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) != f.default or f.name == "hook"
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "intervention") -> Intervention:
        """Inverse of `to_dict`; refuses unknown keys and values of the wrong type."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table/dict, got {data!r}")
        if "hook" not in data:
            raise ConfigError(f"{where}: missing required key 'hook'")
        types = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            if key not in types:
                raise ConfigError(
                    f"unknown key {f'{where}.{key}'!r}.{did_you_mean(key, list(types))} "
                    f"Valid keys: {', '.join(types)}"
                )
            kwargs[key] = _field_value(value, types[key], f"{where}.{key}")
        return cls(**kwargs)  # the types are right; __post_init__ raises ConfigError


def _field_value(value: Any, annotation: Any, where: str) -> Any:
    """A TOML/JSON value as the field's type: str, int, float, a tuple of ints, or (Positions)
    anything, with lists made tuples."""
    if annotation is Any:
        return tuple(value) if isinstance(value, list) else value
    if typing.get_origin(annotation) is tuple:
        if isinstance(value, str):  # "0,2" from a command line
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_field_value(v, int, where) for v in value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    kind = "an integer" if annotation is int else "a number"
    try:
        number = float(value)  # a command line gives numeric text
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or (annotation is int and not number.is_integer()):
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if annotation is float:
        return number
    return value if isinstance(value, int) else int(number)


def _check_position_syntax(sel: Positions, where: str) -> None:
    if isinstance(sel, bool):
        raise ConfigError(f"{where}: {sel!r} is not a position selector")
    if isinstance(sel, int) or sel == "all":
        return
    if isinstance(sel, (list, tuple)):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in sel):
            raise ConfigError(f"{where}: a list of positions must hold integers, got {sel!r}")
        return
    if isinstance(sel, str):
        if ":" in sel:
            parts = sel.split(":")
            if len(parts) > 3 or not all(p.strip().lstrip("-").isdigit() or p.strip() == "" for p in parts):
                raise ConfigError(f"{where}: {sel!r} is not a slice 'start:stop[:step]'")
        return  # a role name: checked against the task at validation
    raise ConfigError(f"{where}: {sel!r} is not a position selector")


def interventions_to_toml(specs: list[Intervention]) -> str:
    return tomli_w.dumps({"intervention": [_toml_safe(s.to_dict()) for s in specs]})


def _toml_safe(data: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def interventions_from_toml(text: str, source: str = "<string>") -> list[Intervention]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    unknown = [k for k in data if k != "intervention"]
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key {unknown[0]!r}; write [[intervention]] tables"
        )
    tables = data.get("intervention", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{source}: no [[intervention]] tables found")
    return [
        Intervention.from_dict(table, where=f"{source}: intervention #{i + 1}")
        for i, table in enumerate(tables)
    ]


def load_interventions(path: str | Path) -> list[Intervention]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"intervention file {path} does not exist")
    return interventions_from_toml(path.read_text(), source=str(path))

