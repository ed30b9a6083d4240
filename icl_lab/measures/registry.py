"""The measures registry: functions `(model, eval data) -> {metric name: value}`.

A measure is registered under a name with what it needs from a task: capabilities (see
icl_lab/tasks/base.py: `transformer`, `probe_set`, `ideal_attention`, `modular_arithmetic`, ...)
and eval sets by name; it applies to every task that offers them. The trainer calls the
run's measures every `eval_every` steps; `icl-lab measure` (`icl_lab/posthoc.py`) calls the same functions on
checkpoints, so live and post-hoc values agree. Values are 0-d tensors (kept on the device
until the evaluation ends) or floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from collections.abc import Callable

import torch

from icl_lab.config import ConfigError, did_you_mean


class EvalData:
    """The evaluation sets of one evaluation, with forward passes memoised.

    Several measures read the same forward pass (ICL accuracy and the induction score both
    need the model on the ICL set); `logits` and `activations` run each pass once.
    """

    def __init__(self, task, batches: dict, options: dict | None = None):
        self.task = task
        self.batches = batches
        # per-measure settings beyond the model and data, by measure name (the `llc` measure's
        # LLCContext: sampler settings, step, clamps); a measure uses its defaults without one
        self.options = dict(options or {})
        self._logits: dict[str, torch.Tensor] = {}
        self._acts: dict[str, dict[str, torch.Tensor]] = {}
        self.wanted_hooks: dict[str, set[str]] = {}

    def want(self, set_name: str, hook_names: list[str]) -> None:
        """Declare activations a measure will read, so one pass caches them all."""
        self.wanted_hooks.setdefault(set_name, set()).update(hook_names)

    def _run(self, model, set_name: str) -> None:
        batch = self.batches[set_name]
        names = sorted(self.wanted_hooks.get(set_name, ()))
        if names:
            logits, cache = model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)
        else:
            logits, cache = model.forward_batch(batch), {}
        self._logits[set_name] = logits
        self._acts[set_name] = cache

    def logits(self, model, set_name: str) -> torch.Tensor:
        if set_name not in self._logits:
            self._run(model, set_name)
        return self._logits[set_name]

    def activations(self, model, set_name: str, hook_name: str) -> torch.Tensor:
        if set_name not in self._acts or hook_name not in self._acts[set_name]:
            self.want(set_name, [hook_name])
            self._run(model, set_name)
        return self._acts[set_name][hook_name]


class MeasureFn(Protocol):
    def __call__(self, model, data: EvalData) -> dict[str, torch.Tensor | float]: ...


@dataclass(frozen=True)
class Measure:
    name: str
    fn: MeasureFn
    needs: tuple[str, ...] = ()  # task capabilities (icl_lab.tasks.CAPABILITIES)
    # (model, task) -> {set name: hook names} the measure will read, for one shared pass
    reads: Callable | None = None
    doc: str = ""
    eval_sets: tuple[str, ...] = ()  # eval sets it reads by name

    def missing(self, task_name: str) -> list[str]:
        """What the task lacks for this measure (empty: the measure applies)."""
        from icl_lab.tasks import task_capabilities, task_class

        caps = task_capabilities(task_name)
        sets = task_class(task_name).eval_set_names
        return [f"capability {c!r}" for c in self.needs if c not in caps] + [
            f"eval set {s!r}" for s in self.eval_sets if s not in sets
        ]


MEASURES: dict[str, Measure] = {}


def register_measure(name: str, needs: tuple[str, ...] = (), eval_sets: tuple[str, ...] = (), reads: Callable | None = None):
    """Decorator: add a measure under `name`, for every task with the capabilities `needs`
    and the eval sets `eval_sets`. A name another function holds is refused, naming its module
    (the same function registered again, e.g. its module reloaded, replaces itself)."""
    from icl_lab.tasks import CAPABILITIES

    unknown = [c for c in needs if c not in CAPABILITIES]
    if unknown:
        raise ValueError(f"measure {name!r} needs unknown capabilities {unknown}; known: {', '.join(CAPABILITIES)}")

    def wrap(fn: MeasureFn) -> MeasureFn:
        taken = MEASURES.get(name)
        if taken is not None and (taken.fn.__module__, taken.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"measure {name!r} is already registered by {taken.fn.__module__}; choose another name")
        MEASURES[name] = Measure(name=name, fn=fn, needs=tuple(needs), reads=reads, doc=fn.__doc__ or "", eval_sets=tuple(eval_sets))
        return fn

    return wrap


def measures_for_task(task_name: str) -> list[str]:
    """The registered measures whose needs the task meets, in registration order."""
    return [name for name, m in MEASURES.items() if not m.missing(task_name)]


# The progress-measure suite from the literature (issue 6): `progress` in a measures list
# expands to the members defined for the run's task.
PROGRESS_SUITE = (
    "htsr",
    "activation_sparsity",
    "weight_entropy",
    "local_circuit_complexity",
    "embedding_uniformity",
    "mutual_information",
    "local_complexity",
)
MEASURE_GROUPS = {"progress": PROGRESS_SUITE}


def expand_measures(names: list[str], task_name: str) -> list[str]:
    """Replace group names (`progress`) by their members defined for the task; keep order,
    drop repeats."""
    valid = set(measures_for_task(task_name))
    out: list[str] = []
    for name in names:
        members = [m for m in MEASURE_GROUPS[name] if m in valid] if name in MEASURE_GROUPS else [name]
        out += [m for m in members if m not in out]
    return out


def validate_measures(names: list[str], task_name: str) -> None:
    valid = measures_for_task(task_name)
    for name in names:
        if name not in valid:
            why = f" (it needs {', '.join(MEASURES[name].missing(task_name))})" if name in MEASURES else ""
            raise ConfigError(
                f"unknown measure {name!r} for task {task_name!r}{why}.{did_you_mean(name, valid + list(MEASURE_GROUPS))} "
                f"Valid measures: {', '.join(valid)}; groups: {', '.join(MEASURE_GROUPS)}"
            )


def evaluate(model, task, batches: dict, names: list[str], options: dict | None = None) -> dict[str, torch.Tensor]:
    """Run the named measures once on fixed evaluation sets; values stay on the device.
    `options`: per-measure settings by measure name (EvalData.options)."""
    data = EvalData(task, batches, options)
    for name in names:
        measure = MEASURES[name]
        if measure.reads is not None:
            for set_name, hook_names in measure.reads(model, task).items():
                data.want(set_name, hook_names)
    results: dict[str, torch.Tensor] = {}
    with model.eval_mode():
        for name in names:
            for metric, value in MEASURES[name].fn(model, data).items():
                results[metric] = torch.as_tensor(value, dtype=torch.float64)
    return results
