"""The task contract: what every task provides, what some tasks offer, and the batch it hands over.

`Task` lists what the trainer, the models and the measures call on every task; the small
capability protocols below list what only some tasks offer (interventions, ablations and
measures ask for them by name). `register_task` (icl_lab/tasks/__init__.py) checks a task class
against both once, when it is registered, so a task missing a method fails there with the
method named, not mid-run.

Why `typing.Protocol` rather than an ABC: tasks stay plain classes (no base class to inherit,
nothing to call in `__init__`), and each optional part is its own protocol, so "can this task
do X" is `isinstance(task, CorruptedTwin)`, answered by what the class defines. With an ABC the
optional methods would be either abstract (every task writes them) or inherited no-ops (and
then nothing can tell whether a task really has them). `runtime_checkable` isinstance only
checks that the names exist, which is what `check_task_class` checks, with a clear error.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from icl_lab.phases import Reading


@dataclass(frozen=True)
class ModelIO:
    """What a model must accept and produce for a task.

    input_kind: "continuous" (vectors of `d_input` per token, entering through the model's
    input map), "tokens" (integer ids below `d_vocab`, through the bridge's own embedding) or
    "features" (one vector of `d_input` per example, for the MLP).
    """

    input_kind: str
    n_ctx: int  # positions the model must embed
    n_outputs: int  # classes read out at the last position
    seq_len: int
    d_input: int = 0
    d_vocab: int = 0


@dataclass(frozen=True)
class TaskBatch:
    """A batch of sequences, everything on one device.

    inputs: [batch, pos, d_input] float (continuous tasks) or [batch, pos] long (token tasks).
    positions: [batch, pos] position index of each token.
    targets: [batch] class to predict at the last position.
    The optional fields carry the task's structure, for measures and ideal attention patterns:
    context_labels / context_classes: [batch, N] label and class of each exemplar;
    query_class: [batch] the query's class.
    """

    inputs: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    context_labels: torch.Tensor | None = None
    context_classes: torch.Tensor | None = None
    query_class: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.targets.shape[0]

    @staticmethod
    def where(mask: torch.Tensor, a: TaskBatch, b: TaskBatch) -> TaskBatch:
        """Row-wise choice: rows where mask [batch] is True come from a, the rest from b."""
        out = {}
        for f in fields(TaskBatch):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if x is None or y is None:
                out[f.name] = None
                continue
            m = mask.view(-1, *([1] * (x.dim() - 1)))
            out[f.name] = torch.where(m, x, y)
        return TaskBatch(**out)

    def slice(self, start: int, stop: int) -> TaskBatch:
        return TaskBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop])
                for f in fields(TaskBatch)
            }
        )


@dataclass(frozen=True)
class Milestone:
    """A level a metric reaches for the first time, recorded in summary.json's `first_steps`
    under `key` and marked in the app with `label` (grokking's s₁: train_accuracy >= 1)."""

    metric: str
    level: float
    label: str

    @property
    def key(self) -> str:
        """summary.json's `first_steps` key, e.g. "train_accuracy>=1" (stored runs use it)."""
        return f"{self.metric}>={self.level:g}"


def position_numbers(batch: TaskBatch) -> list[str]:
    """Position labels "0", "1", ... for tasks whose positions have no names."""
    return [str(t) for t in range(batch.positions.shape[1])]


# -- the contract -------------------------------------------------------------------------
# A task's input kind decides its model (icl_lab.models.build_model): sequences of tokens or of
# vectors get a TransformerBridge, feature vectors a ReLU MLP.
MODEL_FAMILY = {"tokens": "transformer", "continuous": "transformer", "features": "mlp"}


@runtime_checkable
class Task(Protocol):
    """What every task provides. A task class is built as `cls(config, seed=seed, device=device)`:
    whatever is random about the task itself (class means, a train/test split) comes from `seed`.

    name: the name it is registered under; input_kind: tokens | continuous | features (the
    model family follows, see MODEL_FAMILY); eval_set_names: the keys of `eval_sets()`, which
    measures select on (`icl`, `iwl`, `label_swap`: the bursty sets; `train`, `test`: a held-out
    classification; `grid`: every modular pair).

    What generic code must not guess from a task's name, the task declares:
    milestones: levels whose first step summary.json records (`first_steps`) and the app marks
    (modular: s₁, s₂; most tasks: ()); transition_readings: how summary.json reads a tracked
    metric's transition, by metric name (`phases.Reading`; {}: the default reading for every
    metric); x_axis: what the training step counts, for axis titles ("training step").
    """

    name: ClassVar[str]
    input_kind: ClassVar[str]
    eval_set_names: ClassVar[tuple[str, ...]]
    milestones: ClassVar[tuple[Milestone, ...]]
    transition_readings: ClassVar[dict[str, Reading]]
    x_axis: ClassVar[str]
    config: Any  # the task's frozen config dataclass (an instance attribute)

    @property
    def io(self) -> ModelIO:
        """What the model must accept and produce (`io.input_kind == input_kind`)."""

    def make_generator(self, seed: int) -> torch.Generator:
        """A generator on the task's device, for `sample_batch`."""

    def sample_batch(self, batch_size: int, gen: torch.Generator) -> TaskBatch:
        """One training batch, drawn with `gen` only (a run is reproducible from its seed)."""

    def eval_sets(self, size: int | None = None) -> dict[str, TaskBatch]:
        """The fixed evaluation sets by name (the same batches at every evaluation)."""

    def loss(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """The training loss of logits [batch, n_outputs] on `batch`, in the logits' dtype."""

    def token_labels(self, batch: TaskBatch, example: int) -> list[str]:
        """One label per position of example `example` of `batch` (the attention view's axes)."""


# -- capabilities: what only some tasks offer ------------------------------------------------
@runtime_checkable
class PositionRoles(Protocol):
    def position_roles(self) -> dict[str, list[int]]:
        """Named positions of the sequence layout ({"query": [T-1], "labels": [...], ...});
        intervention specs name them, the previous-token score reads `labels`."""


@runtime_checkable
class IdealAttention(Protocol):
    def ideal_attention(self, kind: str, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """A perfect head's pattern [batch, query_pos, key_pos] of `kind` (previous_token,
        induction) and the rows where it is defined [batch, query_pos]."""


@runtime_checkable
class CorruptedTwin(Protocol):
    def corrupted_twin(self, batch: TaskBatch, gen: torch.Generator) -> TaskBatch:
        """The same sequences with another answer and the same structure (activation patching)."""


@runtime_checkable
class ProbeSet(Protocol):
    probe_set: ClassVar[str]  # the eval set whose inputs activation measures read


@runtime_checkable
class OrderedInputs(Protocol):
    def ordered_inputs(self) -> torch.Tensor:
        """Inputs whose order means something, for embedding uniformity: token ids [n]
        (input_kind tokens) or vectors [n, d_input] (continuous)."""


CAPABILITY_PROTOCOLS: dict[str, type] = {
    "position_roles": PositionRoles,
    "ideal_attention": IdealAttention,
    "corrupted_twin": CorruptedTwin,
    "probe_set": ProbeSet,
    "ordered_inputs": OrderedInputs,
}
# Data contracts a task declares in its `provides` tuple (no method shows them).
DECLARED_CAPABILITIES = {
    "modular_arithmetic": "config.p and config.op; a `grid` eval set of every (a, b) pair in "
    "row-major order; `labels`, `train_idx`, `test_idx` indexing it",
}
CAPABILITIES = (*CAPABILITY_PROTOCOLS, *DECLARED_CAPABILITIES, *sorted(set(MODEL_FAMILY.values())))


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a protocol lists (what `isinstance` checks)."""
    names = [k for k in vars(protocol) if not k.startswith("_")]
    names += [k for k in getattr(protocol, "__annotations__", {}) if k not in names]
    return names


INSTANCE_MEMBERS = ("config",)  # set in __init__, so not visible on the class
TASK_MEMBERS = [m for m in protocol_members(Task) if m not in INSTANCE_MEMBERS]


def check_task_class(name: str, config_class: type, task_class: type) -> None:
    """Refuse a task class that does not satisfy `Task`, naming what is wrong."""
    where = f"task {name!r} ({task_class.__qualname__})"
    missing = [m for m in TASK_MEMBERS if not hasattr(task_class, m)]
    if missing:
        raise TypeError(f"{where} lacks {', '.join(missing)}, required by the Task protocol (icl_lab/tasks/base.py)")
    if task_class.name != name:
        raise TypeError(f"{where} is registered as {name!r} but its `name` is {task_class.name!r}")
    if task_class.input_kind not in MODEL_FAMILY:
        raise TypeError(f"{where}: input_kind={task_class.input_kind!r} is not one of {', '.join(MODEL_FAMILY)}")
    names = task_class.eval_set_names
    if not isinstance(names, tuple) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{where}: eval_set_names must be a non-empty tuple of names, got {names!r}")
    if not (isinstance(config_class, type) and is_dataclass(config_class)):
        raise TypeError(f"{where}: its config class {config_class!r} must be a dataclass")
    params = inspect.signature(task_class).parameters
    absent = [p for p in ("seed", "device") if p not in params]
    if absent or len(params) < 3:
        raise TypeError(f"{where}: the constructor must be (config, seed, device), got {tuple(params)}")
    unknown = [c for c in getattr(task_class, "provides", ()) if c not in DECLARED_CAPABILITIES]
    if unknown:
        raise TypeError(f"{where}: provides unknown {', '.join(unknown)}; declarable: {', '.join(DECLARED_CAPABILITIES)}")
    check_declarations(where, task_class)
    probe = getattr(task_class, "probe_set", None)
    if probe is not None and probe not in names:
        raise TypeError(f"{where}: probe_set={probe!r} is not one of its eval sets {', '.join(names)}")


def check_declarations(where: str, task_class: type) -> None:
    """The declared members' types: milestones, transition_readings, x_axis."""
    milestones = task_class.milestones
    if not isinstance(milestones, tuple) or not all(isinstance(m, Milestone) for m in milestones):
        raise TypeError(f"{where}: milestones must be a tuple of Milestone (icl_lab.tasks.base), got {milestones!r}")
    readings = task_class.transition_readings
    if not isinstance(readings, dict) or not all(isinstance(k, str) and isinstance(v, Reading) for k, v in readings.items()):
        raise TypeError(f"{where}: transition_readings must be a dict of metric name -> icl_lab.phases.Reading, got {readings!r}")
    if not isinstance(task_class.x_axis, str) or not task_class.x_axis:
        raise TypeError(f"{where}: x_axis must be a non-empty string (what a step counts), got {task_class.x_axis!r}")


def capabilities_of(task_class: type) -> frozenset[str]:
    """The capability protocols a task class implements, the model family its inputs get,
    and what it declares in `provides`."""
    caps = {cap for cap, proto in CAPABILITY_PROTOCOLS.items() if all(hasattr(task_class, m) for m in protocol_members(proto))}
    caps.add(MODEL_FAMILY[task_class.input_kind])
    caps.update(getattr(task_class, "provides", ()))
    return frozenset(caps)
