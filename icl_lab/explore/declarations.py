"""What a run's maker declares about it, for the explorer: what its x axis counts, the milestones
its summary records, what it offers (capabilities). Read here, and only here, from the task
registry (a training run's `task` names a registered Task class) or from `icl_lab.rfm` (an RFM
run, config.json "kind": "rfm", is not a registered task). The pages ask these declarations,
never a task's name.

A run whose task is no longer registered (an old run directory) still displays: it gets the
plain defaults (x axis "step", no milestones, no capabilities), so its curves are drawn but no
page offers views that need the task's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from icl_lab import rfm
from icl_lab.tasks import TASKS, capabilities_of


class Milestone(NamedTuple):  # INTERIM: until icl_lab.tasks.base.Milestone lands (branch shape-tasks)
    metric: str
    level: float
    label: str

    @property
    def key(self) -> str:
        return f"{self.metric}>={self.level:g}"


@dataclass(frozen=True)
class Declarations:
    """x_axis: what the store's `step` counts ("step", RFM's "iteration"); milestones: the
    task's `Milestone`s (metric, level, label; `.key` is the summary.json first_steps key);
    capabilities: what the run offers (icl_lab.tasks.CAPABILITIES, or icl_lab.rfm.CAPABILITIES)."""

    x_axis: str = "step"
    milestones: tuple = ()
    capabilities: frozenset[str] = frozenset()


def declarations_of(config: dict) -> Declarations:
    """The declarations of the run whose config.json is `config` (plain defaults for a config
    that names no registered task: unreadable, foreign, or an old task's)."""
    if config.get("kind") == rfm.RUN_KIND:
        return Declarations(x_axis=rfm.X_AXIS, capabilities=rfm.CAPABILITIES)
    entry = TASKS.get(config.get("task")) if isinstance(config.get("task"), str) else None
    if entry is None:
        return Declarations()
    return task_declarations(entry.task_class)


def task_declarations(task_class: type) -> Declarations:
    """A registered task class's declarations (the Task protocol's `x_axis` and `milestones`).
    INTERIM: what the tasks will declare, until they do (branch shape-tasks)."""
    grokking = (Milestone("train_accuracy", 1, "s₁ train acc = 1"), Milestone("test_accuracy", 0.95, "s₂ test acc ≥ 0.95"))
    return Declarations(x_axis="step", milestones=grokking if task_class.name == "modular" else (),
                        capabilities=capabilities_of(task_class))
