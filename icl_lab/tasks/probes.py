"""Strategy probes: evaluation sets that tell apart how a model answers (Singh et al., ICML 2025).

Three strategies solve the training sequences of the bursty and pairs tasks, where the query's
class sits in the context with its label:
- ICL, in-context learning: find the context item of the query's class, copy its label;
- IWL, in-weights learning: answer the label memorised for the query's class;
- CIWL, context-constrained in-weights learning: answer, among the labels present in the
  context, the one the weights associate with the query's class.

Each probe is solved by some strategies and failed by the others (a class's *trained label* is
the one the weights can learn: k mod L in both tasks):

| probe  | sequence                                                                   | ICL | IWL | CIWL |
|--------|----------------------------------------------------------------------------|-----|-----|------|
| `icl`  | novel classes, labels drawn per sequence (the tasks' own ICL set)          | 1   | ~1/L| ~context chance |
| `flip` | the query's class and a distractor class, their trained labels swapped     | 1   | 0   | 0    |
| `ciwl` | no item of the query's class; its trained label bound to another item      | ~chance | 1 | 1  |
| `iwl`  | no item of the query's class, and its trained label absent                 | ~chance | 1 | 0  |

The target is the label bound to the query's class in the context for `flip` (the distractor's
trained label), and the query's trained label for `ciwl` and `iwl`. So flip accuracy reads ICL,
iwl accuracy reads IWL, and ciwl accuracy high with iwl accuracy low reads CIWL (Singh et al.:
"Flip = 0 means perfect CIWL"; their `flip_icl`, `iwl_copy_avail` and `pure_iwl` evaluators,
there over Omniglot classes whose label is the class index).

`match_exemplars` is their persistent-ICL data condition (`match_query_and_distractors`):
every copy of a class in a sequence is one and the same item, and the query is an exact copy
of its class's context item.
"""

from __future__ import annotations

import dataclasses

import torch

from icl_lab.tasks.base import TaskBatch


def other_labels(label: torch.Tensor, num_labels: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """[b] labels -> [b, count] labels, distinct within a row and all different from that
    row's `label` (count <= num_labels - 1)."""
    b = label.shape[0]
    offsets = 1 + torch.rand(b, num_labels - 1, generator=gen, device=label.device).argsort(dim=1)[:, :count]
    return (label[:, None] + offsets) % num_labels


def classes_with_labels(labels: torch.Tensor, num_classes: int, num_labels: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly drawn class k in 0..K−1 with trained label k mod L = each entry of `labels`
    (any shape; K >= L so that every label has a class)."""
    per_label = (num_classes - 1 - labels) // num_labels + 1  # classes ℓ, ℓ + L, ... below K
    pick = (torch.rand(labels.shape, generator=gen, device=labels.device) * per_label).long()
    return labels + num_labels * pick.clamp(max=per_label - 1)


def shuffled_columns(rows: int, positions: int, columns: int, gen: torch.Generator, device) -> torch.Tensor:
    """[rows, positions] column ids 0..columns−1, each as often as the positions allow
    (positions % columns spread over the first ones), shuffled within each row."""
    tiled = (torch.arange(positions, device=device) % columns).expand(rows, -1)
    order = torch.rand(rows, positions, generator=gen, device=device).argsort(dim=1)
    return tiled.gather(1, order)


def flip_classes(size: int, num_classes: int, num_labels: int, distinct: int, positions: int,
                 gen: torch.Generator, device) -> dict[str, torch.Tensor]:
    """The `flip` probe's classes and labels: `distinct` (>= 2) trained classes with distinct
    trained labels, column 0 the query's class and column 1 the distractor, spread over
    `positions` context slots; the query's and the distractor's labels swapped in the context.
    Returns context_classes, context_labels [size, positions], query_class and target [size]."""
    query_label = torch.randint(0, num_labels, (size,), generator=gen, device=device)
    labels = torch.cat([query_label[:, None], other_labels(query_label, num_labels, distinct - 1, gen)], dim=1)
    classes = classes_with_labels(labels, num_classes, num_labels, gen)  # [size, distinct]
    shown = labels.clone()
    shown[:, 0], shown[:, 1] = labels[:, 1], labels[:, 0]  # the swap
    columns = shuffled_columns(size, positions, distinct, gen, device)
    return {"context_classes": classes.gather(1, columns), "context_labels": shown.gather(1, columns),
            "query_class": classes[:, 0], "target": labels[:, 1]}


def absent_classes(size: int, num_classes: int, num_labels: int, positions: int, gen: torch.Generator,
                   device) -> dict[str, torch.Tensor]:
    """The pairs task's `iwl` probe: a query class, and `positions` (<= L − 1) context classes
    whose trained labels are distinct and all differ from the query's (so no context item is of
    its class, and its label is absent). `relabel_one_slot` then makes the `ciwl` probe."""
    query_class = torch.randint(0, num_classes, (size,), generator=gen, device=device)
    query_label = query_class % num_labels
    labels = other_labels(query_label, num_labels, positions, gen)
    return {"context_classes": classes_with_labels(labels, num_classes, num_labels, gen), "context_labels": labels,
            "query_class": query_class, "target": query_label}


def relabel_one_slot(context_labels: torch.Tensor, label: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[b, N] labels with one slot per row, chosen at random, set to that row's `label` [b]."""
    b, n = context_labels.shape
    slot = torch.randint(0, n, (b, 1), generator=gen, device=context_labels.device)
    return context_labels.scatter(1, slot, label[:, None])


def match_exemplars(batch: TaskBatch) -> TaskBatch:
    """Every copy of a class in a sequence becomes the first copy's item, and the query becomes
    its class's context item where its class is in the context (x₁ ℓ₁ … x_N ℓ_N x_q layout)."""
    classes = batch.context_classes  # [b, N]
    b, n = classes.shape
    items = batch.inputs[:, 0 : 2 * n : 2]  # [b, N, D]
    same = classes[:, :, None] == classes[:, None, :]  # [b, N, N]
    first = same.float().argmax(dim=2)  # argmax returns the first of equal maxima: the first copy
    matched = items.gather(1, first[..., None].expand(-1, -1, items.shape[-1]))
    in_context = classes == batch.query_class[:, None]  # [b, N]
    copy_of = in_context.float().argmax(dim=1)
    rows = torch.arange(b, device=classes.device)
    query = torch.where(in_context.any(dim=1)[:, None], matched[rows, copy_of], batch.inputs[:, 2 * n])
    inputs = batch.inputs.clone()
    inputs[:, 0 : 2 * n : 2] = matched
    inputs[:, 2 * n] = query
    return dataclasses.replace(batch, inputs=inputs)
