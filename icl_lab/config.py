"""Configuration: frozen dataclasses with a dict round trip, and `key=value` overrides.

A run is fully described by a `RunConfig`: which task (and its parameters), which model, how
to train, which measures to record, and the seed. Presets (`icl_lab.presets`) are named
`RunConfig`s; the CLI's `--set key=value` edits one field of one section.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

# re-exported: the CLI catches this ConfigError, the same class the interventions raise
from interventions.errors import ConfigError, closest, did_you_mean  # noqa: F401


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict of JSON-able values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a JSON/TOML/CLI value to a field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(annotation, type) and isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table/dict, got {value!r}")
        if hasattr(annotation, "from_dict"):
            return annotation.from_dict(value, where=where)
        return from_dict(annotation, value, where=where)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table/dict, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
            if as_float.is_integer():
                return int(as_float)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if typing.get_origin(annotation) is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
            )
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Plain dict -> dataclass, refusing unknown keys with the valid ones named."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table/dict, got {data!r}")
    hints = _field_types(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(
                f"unknown key {path!r}.{did_you_mean(key, names)} Valid keys: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def replace_path(obj: Any, path: str, value: Any, where: str = "") -> Any:
    """Return a copy of a (nested) frozen dataclass with `a.b.c` set to `value` (coerced)."""
    head, _, rest = path.partition(".")
    names = [f.name for f in fields(obj)]
    full = f"{where}.{head}" if where else head
    if head not in names:
        prefix = f"{where}." if where else ""
        qualified = [prefix + n for n in names]
        raise ConfigError(
            f"unknown key {full!r}.{did_you_mean(full, qualified)} "
            f"Valid keys: {', '.join(qualified)}"
        )
    current = getattr(obj, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{full!r} has no sub-keys (tried to set {path!r})")
        new_value = replace_path(current, rest, value, where=full)
    else:
        new_value = _coerce(value, _field_types(type(obj))[head], full)
    try:
        return dataclasses.replace(obj, **{head: new_value})
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{full}={value!r}: {err}") from None


def leaf_keys(obj: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key of a nested dataclass (for `--set` help and errors)."""
    keys = []
    for f in fields(obj):
        path = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(leaf_keys(value, prefix=path + "."))
        else:
            keys.append(path)
    return keys


def is_log_spaced(step: int, per_decade: int) -> bool:
    """Whether `step` is on the schedule round(10^(k / per_decade)), k = 0, 1, 2, ..."""
    if per_decade < 1 or step < 1:
        return False
    return step == round(10 ** (round(math.log10(step) * per_decade) / per_decade))


def check_fields(obj: Any, section: str, choices: dict[str, tuple] | None = None, at_least_one: tuple[str, ...] = ()) -> None:
    """Refuse a field outside its valid choices, or a count below 1, naming `section.field`."""
    for name, valid in (choices or {}).items():
        if getattr(obj, name) not in valid:
            raise ConfigError(f"{section}.{name}={getattr(obj, name)!r} is not one of {', '.join(valid)}")
    for name in at_least_one:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{section}.{name} must be >= 1, got {getattr(obj, name)}")


def parse_cli_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, true/false, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


MAX_STEPS = 100_000_000  # 10⁸ updates: a day at 1,000 steps/s; far past any run the papers train


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, batch, length and cadence of evaluation/checkpoints.

    `steps` counts optimizer updates; step 0 is the model before any update. Measures are
    evaluated at step 0, every `eval_every` steps and at the last step; checkpoints likewise
    with `checkpoint_every` (0 = only the first and last).
    """

    steps: int = 3000
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 3e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.0  # sgd only
    schedule: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    eval_every: int = 100
    checkpoint_every: int = 1000
    # denser checkpoints where a circuit forms (for the attention view): every evaluation step
    # in [start, end), and/or n per decade of steps (1, 2, 5, 10, 20, 50, ... for n = 3)
    checkpoint_window: tuple[int, int] = (0, 0)
    checkpoints_per_decade: int = 0
    loss_dtype: str = "float32"  # float32 | float64 (Nanda et al. compute the loss in float64)
    nonfinite_loss: str = "fail"  # fail: a NaN/inf training loss fails the run | continue (to study divergence)
    # training forwards compute the last block's MLP, final norm and unembedding at the last
    # position only (the loss reads nothing else; icl_lab/last_position.py)
    last_position_only: bool = False
    # how a training step computes the forward: "lean" (the bridge's function and hook points
    # from its weights, without its per-call Python, bit for bit the same; icl_lab/lean_forward.py),
    # "bridge" (TL4's TransformerBridge call), or "auto": lean where it covers the model, else
    # the bridge. Evaluations always run the bridge.
    forward: str = "auto"
    # torch.compile the training step's forward, loss and backward (needs forward "lean"):
    # off | default | max-autotune-no-cudagraphs | reduce-overhead (CUDA graphs, on CUDA);
    # icl_lab/train/compiled.py
    compile: str = "off"

    def __post_init__(self) -> None:
        check_fields(self, "train", at_least_one=("steps", "batch_size", "eval_every"), choices={
            "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("constant", "cosine", "linear"),
            "loss_dtype": ("float32", "float64"),
            "nonfinite_loss": ("fail", "continue"),
            "forward": ("auto", "lean", "bridge"),
            "compile": ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"),
        })
        if self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ConfigError("train.checkpoint_every and train.warmup_steps must be >= 0")
        if self.steps > MAX_STEPS:
            raise ConfigError(f"train.steps={self.steps:.3g} is more than {MAX_STEPS:,}, the most one run may train "
                              "(a typo such as 1e20 would train for ever); extend a finished run with `icl-lab resume --steps`")
        if len(self.checkpoint_window) != 2 or not 0 <= self.checkpoint_window[0] <= self.checkpoint_window[1]:
            raise ConfigError(f"train.checkpoint_window must be [start, end] with 0 <= start <= end, got {list(self.checkpoint_window)}")
        if not 0 <= self.checkpoints_per_decade <= 100:
            raise ConfigError(f"train.checkpoints_per_decade must be in 0..100, got {self.checkpoints_per_decade}")
        numbers = {name: getattr(self, name) for name in ("lr", "weight_decay", "momentum", "grad_clip")}
        numbers.update({f"betas[{i}]": beta for i, beta in enumerate(self.betas)})
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ConfigError(f"train.{name} must be a finite number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must have two values, got {self.betas!r}")

