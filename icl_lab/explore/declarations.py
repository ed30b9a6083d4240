"""What a run's maker declares about it, for the explorer: what its x axis counts, the milestones
its summary records, what it offers (capabilities). Read here, and only here, from the task
registry (a training run's config.json `task` names a registered Task class: its `x_axis`,
`milestones`, capabilities) or from `icl_lab.rfm` (an RFM run, config.json "kind": "rfm", is
not a registered task: it declares RUN_KIND, X_AXIS, CAPABILITIES). Pages ask these
declarations, never a task's name.

A run whose task is not registered (an old run directory, a task since removed, an unreadable
config) still displays: it gets `UNKNOWN_TASK` (training steps, no milestones, no
capabilities), so its curves are drawn but no page offers views that need the task's code;
its attention view, were it asked for, could not load the model anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from icl_lab import rfm
from icl_lab.tasks import TASKS, Milestone, capabilities_of

TRAINING_STEP = "training step"  # what the step of any run icl_lab.train made counts, whatever its task


@dataclass(frozen=True)
class Declarations:
    """x_axis: what the store's `step` counts (a task's `x_axis`, RFM's "iteration"), the
    curves' x title; milestones: the task's Milestones (`.key` is summary.json's first_steps
    key, `.label` the mark's text); capabilities: what the run offers (icl_lab.tasks
    CAPABILITIES such as "transformer", "modular_arithmetic"; icl_lab.rfm.CAPABILITIES); watched:
    the metrics its `transition_readings` and milestones name (pairs: train_loss, icl_accuracy;
    modular: train_accuracy, test_accuracy), which a first view draws."""

    x_axis: str = TRAINING_STEP
    milestones: tuple[Milestone, ...] = ()
    capabilities: frozenset[str] = frozenset()
    watched: tuple[str, ...] = ()  # the metrics its transition readings and milestones are about: a first view's panels


UNKNOWN_TASK = Declarations()


def declarations_of(config: dict) -> Declarations:
    """The declarations of the run whose config.json is `config`: RFM's, its registered task's,
    or UNKNOWN_TASK for a config that names no registered task."""
    if config.get("kind") == rfm.RUN_KIND:
        return Declarations(x_axis=rfm.X_AXIS, capabilities=rfm.CAPABILITIES)
    task = config.get("task")
    if not isinstance(task, str) or task not in TASKS:
        return UNKNOWN_TASK
    task_class = TASKS[task].task_class
    watched = tuple(dict.fromkeys([*task_class.transition_readings, *(m.metric for m in task_class.milestones)]))
    return Declarations(x_axis=task_class.x_axis, milestones=task_class.milestones, capabilities=capabilities_of(task_class),
                        watched=watched)
