"""Task registry: one `register_task` line per task, checked against the Task protocol.

Adding a task touches its own module, its registration line below and its presets
(icl_lab/presets.py); the measures it gets follow from its capabilities and eval sets.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from icl_lab.config import ConfigError, did_you_mean
from icl_lab.tasks.base import (
    CAPABILITIES,
    CorruptedTwin,
    IdealAttention,
    Milestone,
    ModelIO,
    OrderedInputs,
    PositionRoles,
    ProbeSet,
    Task,
    TaskBatch,
    capabilities_of,
    check_task_class,
)
from icl_lab.tasks.bursty import BurstyConfig, BurstyTask
from icl_lab.tasks.digits import DigitsConfig, DigitsTask
from icl_lab.tasks.modular import ModularTask, ModularTaskConfig
from icl_lab.tasks.pairs import PairsConfig, PairsTask


class RegisteredTask(NamedTuple):
    config_class: type
    task_class: type
    default_preset: str  # the preset `icl-lab train <task>` uses without --preset


TASKS: dict[str, RegisteredTask] = {}


def register_task(name: str, config_class: type, task_class: type, default_preset: str) -> None:
    """Add a task under `name`, after checking its class against the Task protocol (a
    TypeError names what is missing). Registering the same class again is a no-op; another
    class under a taken name is refused, naming the module that owns the name."""
    check_task_class(name, config_class, task_class)
    if name in TASKS and TASKS[name].task_class is not task_class:
        owner = TASKS[name].task_class
        raise ValueError(f"task {name!r} is already registered to {owner.__qualname__} by {owner.__module__}; choose another name")
    TASKS[name] = RegisteredTask(config_class, task_class, default_preset)


register_task("bursty", BurstyConfig, BurstyTask, default_preset="small")
register_task("modular", ModularTaskConfig, ModularTask, default_preset="cpu")
register_task("digits", DigitsConfig, DigitsTask, default_preset="cpu")
register_task("pairs", PairsConfig, PairsTask, default_preset="cpu")


def task_names() -> list[str]:
    return sorted(TASKS)


def registered(name: str) -> RegisteredTask:
    if name not in TASKS:
        raise ConfigError(
            f"unknown task {name!r}.{did_you_mean(name, task_names())} "
            f"Valid tasks: {', '.join(task_names())}"
        )
    return TASKS[name]


def task_config_class(name: str) -> type:
    return registered(name).config_class


def task_class(name: str) -> type:
    return registered(name).task_class


def task_capabilities(task: str | type | Task) -> frozenset[str]:
    """What a task offers (see icl_lab/tasks/base.py: CAPABILITIES), by name, class or instance."""
    if isinstance(task, str):
        return capabilities_of(task_class(task))
    return capabilities_of(task if isinstance(task, type) else type(task))


def make_task(name: str, config: Any, seed: int, device) -> Task:
    entry = registered(name)
    if not isinstance(config, entry.config_class):
        raise ConfigError(f"task {name!r} needs a {entry.config_class.__name__}, got {type(config).__name__}")
    return entry.task_class(config, seed=seed, device=device)


__all__ = [
    "CAPABILITIES",
    "TASKS",
    "BurstyConfig",
    "BurstyTask",
    "CorruptedTwin",
    "DigitsConfig",
    "DigitsTask",
    "IdealAttention",
    "Milestone",
    "ModelIO",
    "ModularTask",
    "ModularTaskConfig",
    "OrderedInputs",
    "PairsConfig",
    "PairsTask",
    "PositionRoles",
    "ProbeSet",
    "RegisteredTask",
    "Task",
    "TaskBatch",
    "make_task",
    "register_task",
    "registered",
    "task_capabilities",
    "task_class",
    "task_config_class",
    "task_names",
]
