"""The post-run registry: steps that work on a finished run (every checkpoint written), keyed
by the task capabilities they need, as measures are.

A step is `(run_dir, device) -> {summary key: value}`: it may append metrics through the store
(the caller holds the run's lock) and returns a small JSON-able dict for summary.json. The
trainer runs the steps that apply to the run's task when a run ends (before summary.json is
written); `icl-lab measure RUN --post-run` runs them again on a stored run. A step registered
by a lab module lives beside its subject (icl_lab/grokking/posthoc.py: `final_key_losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

PostRunFn = Callable[[Path, str], dict[str, Any]]


@dataclass(frozen=True)
class PostRunStep:
    name: str
    fn: PostRunFn
    needs: tuple[str, ...] = ()  # task capabilities (icl_lab.tasks.CAPABILITIES)
    doc: str = ""

    @property
    def module(self) -> str:
        """The module that registered it (named when another registration wants its name)."""
        return self.fn.__module__

    def applies_to(self, task_name: str) -> bool:
        from icl_lab.tasks import task_capabilities

        return set(self.needs) <= task_capabilities(task_name)


POST_RUN_STEPS: dict[str, PostRunStep] = {}


def register_post_run_step(name: str, needs: tuple[str, ...] = ()):
    """Decorator: add a post-run step under `name`, for every task with the capabilities
    `needs`. A name already registered by another function is refused, naming its module."""
    from icl_lab.tasks import CAPABILITIES

    unknown = [c for c in needs if c not in CAPABILITIES]
    if unknown:
        raise ValueError(f"post-run step {name!r} needs unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}")

    def wrap(fn: PostRunFn) -> PostRunFn:
        taken = POST_RUN_STEPS.get(name)
        if taken is not None and (taken.fn.__module__, taken.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"post-run step {name!r} is already registered by {taken.module}; choose another name")
        POST_RUN_STEPS[name] = PostRunStep(name, fn, tuple(needs), fn.__doc__ or "")
        return fn

    return wrap


def post_run_steps_for(task_name: str) -> list[str]:
    """The registered post-run steps whose needs the task meets, in registration order."""
    return [name for name, step in POST_RUN_STEPS.items() if step.applies_to(task_name)]


def run_post_run_steps(run_dir: str | Path, task_name: str, device: str = "cpu") -> dict[str, Any]:
    """Run every step that applies to `task_name` on the run; their summary entries merged."""
    entries: dict[str, Any] = {}
    for name in post_run_steps_for(task_name):
        entries.update(POST_RUN_STEPS[name].fn(Path(run_dir), device))
    return entries
