"""RunConfig: everything needed to rerun a run, with a dict/JSON round trip."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from icl_lab.config import (
    ConfigError,
    TrainConfig,
    _coerce,
    did_you_mean,
    from_dict,
    leaf_keys,
    replace_path,
    to_dict,
)
from icl_lab.llc.config import LLCConfig
from icl_lab.model_config import ModelConfig
from icl_lab.provenance import RECORD_KEYS
from icl_lab.tasks import task_config_class
from interventions.spec import Intervention


# torch generators take seeds below 2**64; the lab derives seeds up to seed + 7919 from a run's seed
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class RunConfig:
    """A whole run: task and its parameters, model, training, measures, seed.

    `track` lists the metrics whose phase transition is found and recorded at the end.
    """

    task: str
    task_config: Any
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measures: tuple[str, ...] = ()
    track: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    preset: str = ""
    interventions: tuple[Intervention, ...] = ()
    llc: LLCConfig = field(default_factory=LLCConfig)  # the `llc` measure's sampler settings

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in 0..{MAX_SEED} (the generators' range less the lab's offsets), got {self.seed!r}")
        cls = task_config_class(self.task)
        if not isinstance(self.task_config, cls):
            raise ConfigError(
                f"task_config for task {self.task!r} must be a {cls.__name__}, "
                f"got {type(self.task_config).__name__}"
            )
        from icl_lab.measures import expand_measures, validate_measures

        # groups (`progress`) are stored expanded, so config.json lists what was computed
        object.__setattr__(self, "measures", tuple(expand_measures(list(self.measures), self.task)))
        validate_measures(list(self.measures), self.task)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The config of `to_dict`, or of a run's config.json: the keys a run records beside its
        config (provenance.RECORD_KEYS: device, versions, git commit, creation time, extensions)
        are read past; any other unknown key is refused, naming the valid ones."""
        data = {k: v for k, v in data.items() if k not in RECORD_KEYS}
        if "task" not in data:
            raise ConfigError("a run config needs a 'task'")
        if not isinstance(data["task"], str):
            raise ConfigError(f"'task' must be a task's name, got {data['task']!r}")
        task_cls = task_config_class(data["task"])
        task_data = data.pop("task_config", {}) or {}
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"unknown key {key!r}.{did_you_mean(key, names)} Valid keys: {', '.join(names)}"
                )
        hints = typing.get_type_hints(cls)
        values = {
            key: _coerce(value, hints[key], key)
            for key, value in data.items()
            if key not in ("task", "task_config")
        }
        return cls(
            task=data["task"],
            task_config=from_dict(task_cls, task_data, where="task_config"),
            **values,
        )

    def settable_keys(self) -> list[str]:
        """Every key `with_overrides` accepts (`section.field`)."""
        keys = [f"task.{k}" for k in leaf_keys(self.task_config)]
        keys += [f"model.{k}" for k in leaf_keys(self.model)]
        keys += [f"train.{k}" for k in leaf_keys(self.train)]
        keys += [f"llc.{k}" for k in leaf_keys(self.llc)]
        keys += ["measures", "track", "seed", "device"]
        return keys

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """Apply `key=value` edits. Keys are `task.K`, `model.K`, `train.K`, a top-level field,
        or a bare field name that exists in exactly one section."""
        config = self
        for key, value in overrides.items():
            config = config._set(key, value)
        return config

    def _edited_measures(self, value: Any) -> tuple[str, ...]:
        """`measures=a,b` adds a and b to the measures already chosen (the preset's); `-a`
        removes a (a group such as `-progress` removes its members); `-*` removes them all, so
        `measures=-*,a` keeps a alone; an empty list (`measures=[]`) measures nothing."""
        from icl_lab.measures import expand_measures, validate_measures

        names = _coerce(value, tuple[str, ...], "measures")
        if not names:
            return ()
        measures = list(self.measures)
        for name in names:
            if name == "-*":
                measures = []
            elif name.startswith("-"):
                gone = expand_measures([name[1:]], self.task)
                validate_measures(gone, self.task)
                if not set(gone) & set(measures):
                    raise ConfigError(f"measures: cannot remove {name[1:]!r}, it is not measured; measured: {', '.join(measures) or 'none'}")
                measures = [m for m in measures if m not in gone]
            else:
                measures += [m for m in expand_measures([name], self.task) if m not in measures]
        return tuple(measures)

    def _set(self, key: str, value: Any) -> RunConfig:
        sections = {"task": "task_config", "model": "model", "train": "train", "llc": "llc"}
        head, _, rest = key.partition(".")
        if rest and head in sections:
            attr = sections[head]
            return dataclasses.replace(
                self, **{attr: replace_path(getattr(self, attr), rest, value, where=head)}
            )
        if not rest and key == "measures":
            return dataclasses.replace(self, measures=self._edited_measures(value))
        if not rest and key in ("measures", "track", "seed", "device"):
            return dataclasses.replace(self, **{key: _coerce(value, typing.get_type_hints(RunConfig)[key], key)})
        if not rest:
            owners = [
                sec
                for sec, attr in sections.items()
                if sec != "llc"  # llc.* is always written in full (lr, batch_size, seed: also train's)
                if key in [f.name for f in dataclasses.fields(getattr(self, attr))]
            ]
            if len(owners) == 1:
                return self._set(f"{owners[0]}.{key}", value)
            if len(owners) > 1:
                raise ConfigError(
                    f"key {key!r} is ambiguous: it exists in {', '.join(owners)}; "
                    f"write {' or '.join(f'{o}.{key}' for o in owners)}"
                )
        valid = self.settable_keys()
        near = did_you_mean(key, valid + [k.split(".", 1)[-1] for k in valid])
        raise ConfigError(f"unknown key {key!r}.{near} Valid keys: {', '.join(valid)}")
