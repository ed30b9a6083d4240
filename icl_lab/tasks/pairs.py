"""Two exemplar–label pairs and a query (Singh et al., ICML 2024), from Gaussian-cluster items.

A sequence is x_a, ℓ_a, x_b, ℓ_b, x_q (T = 5 tokens): two items of distinct classes, each
followed by its label, then a query item whose class is one of the two; the answer is that
class's label. Items are the bursty task's Gaussian clusters (`cluster_items`: class means
μ_k ~ N(0, I/D), x = (μ + ε η)/√(1+ε²)); label vectors are drawn the same way.

Labels are drawn afresh for every sequence: a distinct pair {ℓ_a, ℓ_b} of the L labels, in a
random order, so only the context can tell the answer (no in-weights solution). Before the
induction circuit forms the model learns to answer one of the two context labels at random:
loss ln 2, context-label accuracy 1, accuracy 1/2.

Splits, as in their code: the L(L−1)/2 unordered label pairs are shuffled with the task's seed
and `held_out_pair_fraction` of them (rounded) are held out: L = 5: 8 training / 2 held-out
pairs; L = 10: 36 / 9; L = 15: 84 / 21. Classes 0..K−1 are the training classes, K..K+K'−1
(K' = `held_out_classes`) are never trained on.

`label_binding="per_class"` is Singh et al. 2025's set-up instead: class k always carries label
k mod L (the two context classes' labels differ), so the weights can learn the answer too and
ICL competes with in-weights strategies; `match_exemplars` makes the query an exact copy of its
context item (their persistent-ICL data). The held-out label pairs then matter only to `icl`.

Evaluation sets (fixed, seeded):
- `icl`: held-out label pairs on held-out classes (pure in-context use of unseen pairs);
- `trained`: the training distribution (training pairs, or classes' own labels, on training classes);
- `flip`, `ciwl`, `iwl`: the strategy probes of tasks/probes.py (ICL vs IWL vs CIWL), on
  training classes with their trained labels k mod L (with per-sequence labels nothing is
  trained to them: ICL reads 1, 1/2, 0 on them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icl_lab.config import ConfigError
from icl_lab.phases import Reading
from icl_lab.tasks.probes import (
    absent_classes, classes_with_labels, flip_classes, match_exemplars, other_labels, relabel_one_slot,
)
from icl_lab.tasks.base import ModelIO, TaskBatch, position_numbers
from icl_lab.tasks.bursty import BurstyTask, cluster_items

SEQ_LEN = 5  # x_a ℓ_a x_b ℓ_b x_q


LABEL_ENCODINGS = ("random", "one_hot")
LABEL_BINDINGS = ("per_sequence", "per_class")


@dataclass(frozen=True)
class PairsConfig:
    """Parameters of the pairs task (Singh et al.'s defaults: 50 / 100 classes, 5 labels)."""

    num_classes: int = 50  # K: training classes
    held_out_classes: int = 100  # K': classes of the `icl` evaluation set only
    num_labels: int = 5  # L
    held_out_pair_fraction: float = 0.2  # of the L(L−1)/2 label pairs, held out of training
    dim: int = 63  # D
    within_class_noise: float = 0.1  # ε
    eval_size: int = 1024  # sequences per evaluation set
    # how a label enters the model: "random", a fixed random vector in the items' D dimensions
    # (through the same input map); "one_hot", its own dimension of L more (items are zero
    # there), so the input map's column for it is a learned label embedding, as the label
    # tokens of Singh et al.'s model are
    label_encoding: str = "random"
    # "per_sequence": a label pair drawn afresh per sequence (Singh et al. 2024: no in-weights
    # solution); "per_class": class k carries label k mod L (Singh et al. 2025, ICL vs CIWL)
    label_binding: str = "per_sequence"
    match_exemplars: bool = False  # training queries are exact copies of their context item

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.held_out_classes < 2:
            raise ConfigError(
                f"task.num_classes={self.num_classes} and task.held_out_classes={self.held_out_classes} "
                "must each be >= 2 (a sequence holds two distinct classes)"
            )
        if self.num_labels < 3:
            raise ConfigError(f"task.num_labels must be >= 3 (so that some label pairs can be held out), got {self.num_labels}")
        held, total = self.held_out_pairs, self.label_pairs
        if not 1 <= held < total:
            raise ConfigError(
                f"task.held_out_pair_fraction={self.held_out_pair_fraction} holds out {held} of the {total} "
                f"label pairs of {self.num_labels} labels; it must hold out at least 1 and keep at least 1"
            )
        if self.label_encoding not in LABEL_ENCODINGS:
            raise ConfigError(f"task.label_encoding {self.label_encoding!r} is not one of {', '.join(LABEL_ENCODINGS)}")
        if self.label_binding not in LABEL_BINDINGS:
            raise ConfigError(f"task.label_binding {self.label_binding!r} is not one of {', '.join(LABEL_BINDINGS)}")
        if self.num_classes < self.num_labels:
            raise ConfigError(f"task.num_classes={self.num_classes} must be >= task.num_labels={self.num_labels} (every label trained on a class)")
        if self.within_class_noise < 0 or self.dim < 1 or self.eval_size < 1:
            raise ConfigError("task.within_class_noise must be >= 0, task.dim and task.eval_size >= 1")

    @property
    def label_pairs(self) -> int:
        return self.num_labels * (self.num_labels - 1) // 2

    @property
    def held_out_pairs(self) -> int:
        return round(self.held_out_pair_fraction * self.label_pairs)


class PairsTask:
    """Generator of x_a ℓ_a x_b ℓ_b x_q batches on one device; means, labels and the pair
    split come from `seed`, every batch from the generator passed to `sample_batch`."""

    name = "pairs"
    input_kind = "continuous"
    eval_set_names = ("icl", "trained", "flip", "ciwl", "iwl")
    probe_set = "icl"
    milestones = ()
    x_axis = "training step"
    # summary.json's transitions (phases.Reading): the training loss's drop from its ln 2
    # plateau (one of the two context labels at random) to its best value 0, read on
    # min(loss, ln 2) so the early fall from ln L is not part of it; held-out-pair accuracy's
    # rise from 1/2, read on max(acc, 1/2), without the ceiling rule (it ends near 0.8-0.9)
    transition_readings = {
        "train_loss": Reading("down", ceiling=0.0, plateau=math.log(2)),
        "icl_accuracy": Reading("up", ceiling=None, plateau=0.5),
    }

    def __init__(self, config: PairsConfig, seed: int, device: torch.device | str = "cpu"):
        self.config = c = config
        self.device = torch.device(device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        total = c.num_classes + c.held_out_classes
        # Drawn on CPU then moved, so the task is the same on every device.
        self.class_means = (torch.randn(total, c.dim, generator=gen) / math.sqrt(c.dim)).to(self.device)
        self.label_vectors = (torch.randn(c.num_labels, c.dim, generator=gen) / math.sqrt(c.dim)).to(self.device)
        self.d_input = c.dim + (c.num_labels if c.label_encoding == "one_hot" else 0)
        if c.label_encoding == "one_hot":  # [L, D + L]: zero in the items' dimensions, one-hot after them
            self.label_vectors = F.pad(torch.eye(c.num_labels, device=self.device), (c.dim, 0))
        pairs = torch.combinations(torch.arange(c.num_labels), 2)  # [L(L−1)/2, 2], i < j
        shuffled = pairs[torch.randperm(len(pairs), generator=gen)]
        self.held_out_pairs = shuffled[: c.held_out_pairs].to(self.device)
        self.train_pairs = shuffled[c.held_out_pairs :].to(self.device)
        self._eval_seed = seed + 7919

    @property
    def io(self) -> ModelIO:
        c = self.config
        return ModelIO(self.input_kind, n_ctx=SEQ_LEN, n_outputs=c.num_labels, seq_len=SEQ_LEN, d_input=self.d_input)

    def loss(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """Cross-entropy of the query's label: −log softmax(logits)[target], batch mean."""
        return F.cross_entropy(logits, batch.targets)

    def token_labels(self, batch: TaskBatch, example: int) -> list[str]:
        """Position numbers."""
        return position_numbers(batch)

    # -- structure, for interventions and measures -------------------------------------
    def position_roles(self) -> dict[str, list[int]]:
        """Named positions of x_a ℓ_a x_b ℓ_b x_q."""
        return {"items": [0, 2], "labels": [1, 3], "query": [4], "context": [0, 1, 2, 3]}

    # The bursty layout with N = 2: previous_token (each token on the one before it, so each
    # label on its item) and induction (the query on the label whose item has its class).
    ideal_attention = BurstyTask.ideal_attention

    def ordered_inputs(self) -> torch.Tensor:
        """The label vectors [L, D] in label-id order."""
        return self.label_vectors

    # -- sampling -------------------------------------------------------------------------
    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def _randint(self, high: int, size: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, high, (size,), generator=gen, device=self.device)

    def sequences(self, size: int, gen: torch.Generator, pairs: torch.Tensor, first_class: int, classes: int) -> TaskBatch:
        """`size` sequences whose label pair is a row of `pairs` [P, 2] (in random order) and
        whose two distinct classes lie in first_class .. first_class + classes − 1."""
        labels = pairs[self._randint(len(pairs), size, gen)]  # [b, 2]
        swap = torch.rand(size, generator=gen, device=self.device) < 0.5
        labels = torch.where(swap[:, None], labels.flip(1), labels)
        a = self._randint(classes, size, gen)
        b = (a + 1 + self._randint(classes - 1, size, gen)) % classes  # distinct from a
        context_classes = first_class + torch.stack([a, b], dim=1)  # [b, 2]
        which = self._randint(2, size, gen)[:, None]  # the exemplar the query matches
        query_class = context_classes.gather(1, which)[:, 0]
        return self._assemble(context_classes, query_class, labels, labels.gather(1, which)[:, 0], gen)

    def per_class_sequences(self, size: int, gen: torch.Generator) -> TaskBatch:
        """Training classes with their own labels k mod L: a class, a second one whose label
        differs, in random order; the query matches one of them."""
        c = self.config
        a = self._randint(c.num_classes, size, gen)
        b = classes_with_labels(other_labels(a % c.num_labels, c.num_labels, 1, gen)[:, 0], c.num_classes, c.num_labels, gen)
        swap = torch.rand(size, generator=gen, device=self.device) < 0.5
        context_classes = torch.where(swap[:, None], torch.stack([b, a], dim=1), torch.stack([a, b], dim=1))
        which = self._randint(2, size, gen)[:, None]
        labels = context_classes % c.num_labels
        return self._assemble(context_classes, context_classes.gather(1, which)[:, 0], labels, labels.gather(1, which)[:, 0], gen)

    def _assemble(self, context_classes: torch.Tensor, query_class: torch.Tensor, labels: torch.Tensor,
                  targets: torch.Tensor, gen: torch.Generator) -> TaskBatch:
        """x_a ℓ_a x_b ℓ_b x_q from classes [b, 2] and [b], label ids [b, 2] and targets [b]."""
        size = query_class.shape[0]
        noise = self.config.within_class_noise
        extra = (0, self.d_input - self.config.dim)  # one-hot labels: zero label dimensions
        items = F.pad(cluster_items(self.class_means[context_classes], noise, gen), extra)  # [b, 2, d_input]
        query = F.pad(cluster_items(self.class_means[query_class], noise, gen), extra)  # [b, d_input]
        label_vectors = self.label_vectors[labels]  # [b, 2, D]
        inputs = torch.stack([items[:, 0], label_vectors[:, 0], items[:, 1], label_vectors[:, 1], query], dim=1)
        return TaskBatch(
            inputs=inputs,
            positions=torch.arange(SEQ_LEN, device=self.device).expand(size, -1),
            targets=targets,
            context_labels=labels,
            context_classes=context_classes,
            query_class=query_class,
        )

    def sample_batch(self, batch_size: int, gen: torch.Generator) -> TaskBatch:
        """Training pairs (or classes' own labels) on training classes."""
        c = self.config
        if c.label_binding == "per_class":
            batch = self.per_class_sequences(batch_size, gen)
        else:
            batch = self.sequences(batch_size, gen, self.train_pairs, 0, c.num_classes)
        return match_exemplars(batch) if c.match_exemplars else batch

    def eval_sets(self, size: int | None = None) -> dict[str, TaskBatch]:
        """`icl` (held-out pairs, held-out classes), `trained` (the training distribution), then
        the strategy probes `flip`, `ciwl`, `iwl` (drawn after, so the first two are as they were)."""
        c = self.config
        size = size or c.eval_size
        gen = self.make_generator(self._eval_seed)
        sets = {"icl": self.sequences(size, gen, self.held_out_pairs, c.num_classes, c.held_out_classes)}
        if c.label_binding == "per_class":
            sets["trained"] = self.per_class_sequences(size, gen)
        else:
            sets["trained"] = self.sequences(size, gen, self.train_pairs, 0, c.num_classes)
        L, K = c.num_labels, c.num_classes
        flip = flip_classes(size, K, L, 2, 2, gen, self.device)
        sets["flip"] = self._assemble(flip["context_classes"], flip["query_class"], flip["context_labels"], flip["target"], gen)
        for name in ("ciwl", "iwl"):
            drawn = absent_classes(size, K, L, 2, gen, self.device)
            labels = relabel_one_slot(drawn["context_labels"], drawn["target"], gen) if name == "ciwl" else drawn["context_labels"]
            sets[name] = self._assemble(drawn["context_classes"], drawn["query_class"], labels, drawn["target"], gen)
        return sets
