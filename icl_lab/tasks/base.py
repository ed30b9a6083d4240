"""What every task hands to the model and the trainer: a batch of sequences and its shape."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class ModelIO:
    """What a model must accept and produce for a task.

    input_kind: "continuous" (vectors of `d_input` per token, entering through the model's
    input map) or "tokens" (integer ids below `d_vocab`, through the bridge's own embedding).
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
    def where(mask: torch.Tensor, a: "TaskBatch", b: "TaskBatch") -> "TaskBatch":
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

    def slice(self, start: int, stop: int) -> "TaskBatch":
        return TaskBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop])
                for f in fields(TaskBatch)
            }
        )
