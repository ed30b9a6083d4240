"""Bursty in-context classification (Reddy, ICLR 2024; Chan et al., NeurIPS 2022).

Symbols are the papers': K classes with Gaussian means μ_k ~ N(0, I/D) in D dimensions,
L labels (vectors drawn the same way), class k carries label k mod L (K a multiple of L),
N item–label exemplars then a query item: x₁, ℓ₁, …, x_N, ℓ_N, x_q (T = 2N + 1 tokens).
An item of class k is x = (μ_k + ε η) / √(1 + ε²), η ~ N(0, I/D) fresh per item; a label token
is its label vector, without noise.

Training sequences, as in Reddy's generator (`generate_input_seqs` in his code):
- bursty (probability p_B): N/B classes drawn i.i.d. from the Zipf distribution
  P(k) ∝ (k+1)^(−α), each repeated B times, shuffled; the query's class is one of them;
- otherwise: N context classes and the query class drawn i.i.d. from P;
- novel (probability p_C, always bursty): N/B classes with means drawn fresh for the sequence.

Evaluation sets (fixed, seeded):
- `icl`: novel classes, bursty, labels drawn fresh per sequence (distinct within it): only the
  context can tell the answer. Chance 1/L; copying a random context label gives B/N.
- `iwl`: trained classes; no context item shares the query's *label* (so not its class either):
  only memory can answer.
- `label_swap`: trained classes, bursty, every label (context and target) shifted by a random
  s ∈ {1, …, L−1} per sequence: the trained assignment is always wrong, the context right.
- `flip`, `ciwl`: the strategy probes of tasks/probes.py (ICL vs IWL vs CIWL, Singh et al. 2025).

Where we differ from Reddy's code (all deliberate, see docs/tasks.md):
- bursty sequences draw their classes from P (as his `datasets_v2.py`), and so does the query;
- novel classes get labels drawn fresh per sequence and distinct within it (his: class index
  mod L over 128 fresh classes per batch, which can give two context classes the same label);
- the IWL set excludes the query's label from the context (his: i.i.d., so it may be present);
- the label-swap set shifts by a random nonzero amount per sequence (his: always +1);
- positions: tokens carry a position index in [0, position_slots); when position_slots > T
  each sequence starts at a random offset (his one-hot position slots, 2·Nmax + 1 = 65).
  The model embeds it with its own learned table rather than concatenating a one-hot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icl_lab.config import ConfigError
from icl_lab.tasks.probes import flip_classes, match_exemplars, relabel_one_slot
from icl_lab.tasks.base import ModelIO, TaskBatch


@dataclass(frozen=True)
class BurstyConfig:
    """Parameters of the bursty task (paper symbols in brackets)."""

    num_classes: int = 2048  # K
    num_labels: int = 32  # L
    dim: int = 63  # D
    context_pairs: int = 8  # N
    burstiness: int = 4  # B: copies of each class in a bursty context
    within_class_noise: float = 0.1  # ε
    zipf_alpha: float = 0.0  # α: P(k) ∝ (k+1)^-α over trained classes
    p_bursty: float = 1.0  # p_B
    p_novel: float = 0.0  # p_C
    position_slots: int = 0  # 0 = exactly 2N+1 positions, no offset; > 2N+1: random offsets
    eval_size: int = 1024  # sequences per evaluation set
    # Singh et al. 2025's persistent-ICL data: in training sequences every copy of a class is
    # one item and the query is an exact copy of it (tasks/probes.py `match_exemplars`)
    match_exemplars: bool = False

    def __post_init__(self) -> None:
        K, L, N, B = self.num_classes, self.num_labels, self.context_pairs, self.burstiness
        if L < 2:
            raise ConfigError(f"task.num_labels (L) must be >= 2, got {L}")
        if K < L or K % L != 0:
            raise ConfigError(
                f"task.num_classes (K={K}) must be a multiple of task.num_labels (L={L}), "
                "so that each label covers K/L classes"
            )
        if N < 1 or B < 1 or N % B != 0:
            raise ConfigError(
                f"task.context_pairs (N={N}) must be a positive multiple of "
                f"task.burstiness (B={B})"
            )
        if N // B > L:
            raise ConfigError(
                f"a bursty context holds N/B={N // B} classes but there are only L={L} labels "
                "to give novel classes distinct labels"
            )
        for name in ("p_bursty", "p_novel"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"task.{name} must be in [0, 1], got {p}")
        if self.within_class_noise < 0 or self.zipf_alpha < 0:
            raise ConfigError("task.within_class_noise and task.zipf_alpha must be >= 0")
        if self.dim < 1 or self.eval_size < 1:
            raise ConfigError("task.dim and task.eval_size must be >= 1")
        if self.position_slots and self.position_slots < self.seq_len:
            raise ConfigError(
                f"task.position_slots={self.position_slots} is shorter than the sequence "
                f"(2N+1={self.seq_len}); use 0 for exactly 2N+1"
            )

    @property
    def seq_len(self) -> int:
        return 2 * self.context_pairs + 1

    @property
    def n_positions(self) -> int:
        return self.position_slots or self.seq_len


def cluster_items(means: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Items of the classes `means` [..., D]: x = (μ + ε η)/√(1+ε²), η ~ N(0, I/D) fresh per
    item, ε = `noise` (shared with the pairs task, icl_lab/tasks/pairs.py)."""
    eta = torch.randn(means.shape, generator=gen, device=means.device) / math.sqrt(means.shape[-1])
    return (means + noise * eta) / math.sqrt(1.0 + noise**2)


class BurstyTask:
    """Generator of bursty in-context classification batches, on one device, from seeds.

    The class means and label vectors are drawn once from `seed`; every training batch comes
    from the `generator` passed to `sample_batch`, so a run is reproducible from its seed.
    """

    name = "bursty"
    input_kind = "continuous"
    eval_set_names = ("icl", "iwl", "label_swap", "flip", "ciwl")
    probe_set = "icl"  # the ability whose emergence the activation measures watch
    milestones = ()
    transition_readings: dict = {}  # the default reading for every tracked metric
    x_axis = "training step"

    def __init__(self, config: BurstyConfig, seed: int, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        c = config
        gen = torch.Generator(device="cpu").manual_seed(seed)
        # Drawn on CPU then moved, so the task is the same on every device.
        self.class_means = (torch.randn(c.num_classes, c.dim, generator=gen) / math.sqrt(c.dim)).to(
            self.device
        )
        self.label_vectors = (
            torch.randn(c.num_labels, c.dim, generator=gen) / math.sqrt(c.dim)
        ).to(self.device)
        self.class_labels = torch.arange(c.num_classes, device=self.device) % c.num_labels
        ranks = torch.arange(1, c.num_classes + 1, dtype=torch.float64)
        weights = ranks ** (-c.zipf_alpha)
        self.class_probs = (weights / weights.sum()).to(torch.float32).to(self.device)
        self._eval_seed = seed + 7919  # eval sets: fixed, independent of the training stream

    # -- what a model needs to know about this task ---------------------------------------
    @property
    def io(self) -> ModelIO:
        c = self.config
        return ModelIO(input_kind=self.input_kind, d_input=c.dim, n_ctx=c.n_positions, n_outputs=c.num_labels, seq_len=c.seq_len)

    def loss(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """Cross-entropy of the query's label: −log softmax(logits)[target], batch mean."""
        return F.cross_entropy(logits, batch.targets)

    def token_labels(self, batch: TaskBatch, example: int) -> list[str]:
        """x_i with its class, ℓ_i with its label id, then the query with its class."""
        labels = []
        for i in range(batch.context_labels.shape[1]):
            labels += [f"x{i + 1} c{int(batch.context_classes[example, i])}", f"ℓ{i + 1}={int(batch.context_labels[example, i])}"]
        return labels + [f"query c{int(batch.query_class[example])}"]

    # -- structure, for interventions and measures -------------------------------------
    def ordered_inputs(self) -> torch.Tensor:
        """The label vectors [L, D] in label-id order (an arbitrary order: embedding
        uniformity then tracks their spacing, not a learned ordering)."""
        return self.label_vectors

    def position_roles(self) -> dict[str, list[int]]:
        """Named positions of the layout x₁ ℓ₁ … x_N ℓ_N x_q."""
        N = self.config.context_pairs
        return {
            "items": list(range(0, 2 * N, 2)),
            "labels": list(range(1, 2 * N, 2)),
            "query": [2 * N],
            "context": list(range(2 * N)),
        }

    def ideal_attention(self, kind: str, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Ideal attention pattern [batch, query_pos, key_pos] and the rows where it is defined
        [batch, query_pos] (rows where it is not defined are left to the model).

        previous_token: every position attends to the one before it (position 0 to itself), so
            each label attends to its item. Defined on every row.
        induction: the query attends uniformly to the labels that follow items of its class,
            A[q, 2i+1] = [class_i = class_q] / #{i: class_i = class_q}. Defined on the query row
            of sequences whose query class occurs in the context.
        other_labels: the query attends uniformly to the labels that follow items of *other*
            classes (the wrong answers on offer); where every context item is of the query's
            class, the induction pattern. Defined where induction is.
        """
        T = batch.inputs.shape[1]
        b = batch.size
        device = batch.inputs.device
        if kind == "previous_token":
            # row t puts 1 on key max(t - 1, 0); built by comparison, not by assigning a Python
            # scalar through an index (a host-to-device copy on CUDA, in every clamped step)
            pos = torch.arange(T, device=device)
            pattern = (pos[None, :] == (pos - 1).clamp(min=0)[:, None]).float()  # [T, T]
            return pattern.expand(b, T, T), torch.ones(b, T, dtype=torch.bool, device=device)
        if kind == "induction":
            N = batch.context_classes.shape[1]
            match = (batch.context_classes == batch.query_class[:, None]).float()  # [b, N]
            count = match.sum(dim=1, keepdim=True)
            pattern = match.new_zeros(b, T, T)  # new_*: batched under torch.func.vmap (train_group)
            pattern[:, T - 1, 1 : 2 * N : 2] = match / count.clamp(min=1)
            defined = match.new_zeros(b, T, dtype=torch.bool)
            defined[:, T - 1] = count[:, 0] > 0
            return pattern, defined
        if kind == "other_labels":
            induction, defined = self.ideal_attention("induction", batch)
            N = batch.context_classes.shape[1]
            other = (batch.context_classes != batch.query_class[:, None]).float()  # [b, N]
            count = other.sum(dim=1, keepdim=True)
            pattern = other.new_zeros(b, T, T)
            pattern[:, T - 1, 1 : 2 * N : 2] = other / count.clamp(min=1)
            none_other = (count[:, 0] == 0)[:, None, None]
            return torch.where(none_other, induction, pattern), defined
        raise ValueError(f"unknown ideal pattern {kind!r}; valid: previous_token, induction, other_labels")

    def corrupted_twin(self, batch: TaskBatch, gen: torch.Generator) -> TaskBatch:
        """The same sequences relabelled: every label (context and target) shifted by a random
        s ∈ {1, …, L−1} per sequence, items untouched. The answer changes; the structure does
        not (for clean → corrupted activation patching)."""
        L = self.config.num_labels
        shift = 1 + self._randint(L - 1, (batch.size,), gen)
        labels = (batch.context_labels + shift[:, None]) % L
        inputs = batch.inputs.clone()
        inputs[:, 1:-1:2] = self.label_vectors[labels]
        return TaskBatch(
            inputs=inputs, positions=batch.positions, targets=(batch.targets + shift) % L,
            context_labels=labels, context_classes=batch.context_classes, query_class=batch.query_class,
        )

    # -- sampling -------------------------------------------------------------------------
    def _zipf(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        n = math.prod(shape)
        draws = torch.multinomial(self.class_probs, n, replacement=True, generator=gen)
        return draws.view(shape)

    def _randint(self, high: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=gen, device=self.device)

    def _bursty_choice(
        self, chosen: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[b, N/B] classes -> ([b, N] each repeated B times and shuffled, [b] query column)."""
        b, n_distinct = chosen.shape
        B = self.config.burstiness
        tiled = chosen.repeat(1, B)  # [b, N]
        order = torch.rand(tiled.shape, generator=gen, device=self.device).argsort(dim=1)
        context = tiled.gather(1, order)
        query_col = self._randint(n_distinct, (b,), gen)
        return context, query_col

    def _items(self, means: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return cluster_items(means, self.config.within_class_noise, gen)

    def _assemble(self, context_means: torch.Tensor, query_means: torch.Tensor, context_labels: torch.Tensor,
                  target: torch.Tensor, context_classes: torch.Tensor, query_class: torch.Tensor, gen: torch.Generator) -> TaskBatch:
        """Sequences from class means [b, N, D] and [b, D], label ids [b, N], targets [b], classes [b, N] and [b]."""
        c = self.config
        b, N = context_labels.shape
        items = self._items(context_means, gen)
        query = self._items(query_means, gen)
        labels = self.label_vectors[context_labels]  # [b, N, D]
        pairs = torch.stack([items, labels], dim=2).reshape(b, 2 * N, c.dim)
        inputs = torch.cat([pairs, query[:, None, :]], dim=1)  # [b, 2N+1, D]
        positions = torch.arange(c.seq_len, device=self.device).expand(b, -1)
        if c.n_positions > c.seq_len:
            offsets = self._randint(c.n_positions - c.seq_len + 1, (b, 1), gen)
            positions = positions + offsets
        return TaskBatch(inputs=inputs, positions=positions, targets=target, context_labels=context_labels,
                         context_classes=context_classes, query_class=query_class)

    def _novel(self, b: int, gen: torch.Generator) -> TaskBatch:
        """Bursty sequences of N/B fresh classes with fresh, distinct labels."""
        c = self.config
        n_distinct = c.context_pairs // c.burstiness
        means = torch.randn(b, n_distinct, c.dim, generator=gen, device=self.device) / math.sqrt(
            c.dim
        )
        labels = torch.rand(b, c.num_labels, generator=gen, device=self.device).argsort(dim=1)
        labels = labels[:, :n_distinct]  # distinct labels per sequence
        slot = torch.arange(n_distinct, device=self.device).expand(b, -1)
        context_slot, query_col = self._bursty_choice(slot, gen)
        rows = torch.arange(b, device=self.device)[:, None]
        query_slot = query_col
        # Novel class ids are K + slot: unique within a sequence, never a trained class.
        return self._assemble(context_means=means[rows, context_slot], query_means=means[rows[:, 0], query_slot],
                              context_labels=labels[rows, context_slot], target=labels[rows[:, 0], query_slot],
                              context_classes=c.num_classes + context_slot, query_class=c.num_classes + query_slot, gen=gen)

    def _trained(self, b: int, gen: torch.Generator, bursty: torch.Tensor) -> TaskBatch:
        """Trained classes; bursty rows ([b] bool) bursty, the others i.i.d. from P."""
        c = self.config
        N, B = c.context_pairs, c.burstiness
        chosen = self._zipf((b, N // B), gen)
        bursty_ctx, query_col = self._bursty_choice(chosen, gen)
        bursty_query = chosen.gather(1, query_col[:, None])[:, 0]
        iid_ctx = self._zipf((b, N), gen)
        iid_query = self._zipf((b,), gen)
        context = torch.where(bursty[:, None], bursty_ctx, iid_ctx)
        query = torch.where(bursty, bursty_query, iid_query)
        return self._from_classes(context, query, gen)

    def _from_classes(
        self, context: torch.Tensor, query: torch.Tensor, gen: torch.Generator, shift=None
    ) -> TaskBatch:
        context_labels = self.class_labels[context]
        target = self.class_labels[query]
        if shift is not None:
            L = self.config.num_labels
            context_labels = (context_labels + shift[:, None]) % L
            target = (target + shift) % L
        return self._assemble_classes(context, query, context_labels, target, gen)

    def _assemble_classes(self, context, query, context_labels, target, gen) -> TaskBatch:
        """Sequences of trained classes [b, N] and [b] with the labels given."""
        return self._assemble(context_means=self.class_means[context], query_means=self.class_means[query],
                              context_labels=context_labels, target=target, context_classes=context, query_class=query, gen=gen)

    def sample_batch(self, batch_size: int, gen: torch.Generator) -> TaskBatch:
        """One training batch: a p_C fraction novel, the rest trained (a p_B fraction bursty)."""
        c = self.config
        bursty = torch.rand(batch_size, generator=gen, device=self.device) < c.p_bursty
        batch = self._trained(batch_size, gen, bursty)
        if c.p_novel > 0:
            novel = self._novel(batch_size, gen)
            use_novel = torch.rand(batch_size, generator=gen, device=self.device) < c.p_novel
            batch = TaskBatch.where(use_novel, novel, batch)
        return match_exemplars(batch) if c.match_exemplars else batch

    # -- evaluation sets ------------------------------------------------------------------
    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def icl_set(self, size: int, gen: torch.Generator) -> TaskBatch:
        return self._novel(size, gen)

    def label_swap_set(self, size: int, gen: torch.Generator) -> TaskBatch:
        c = self.config
        chosen = self._zipf((size, c.context_pairs // c.burstiness), gen)
        context, query_col = self._bursty_choice(chosen, gen)
        query = chosen.gather(1, query_col[:, None])[:, 0]
        shift = 1 + self._randint(c.num_labels - 1, (size,), gen)
        return self._from_classes(context, query, gen, shift=shift)

    def iwl_set(self, size: int, gen: torch.Generator, rounds: int = 16) -> TaskBatch:
        return self._from_classes(*self._iwl_classes(size, gen, rounds), gen)

    def ciwl_set(self, size: int, gen: torch.Generator) -> TaskBatch:
        """The iwl set's classes with one context slot relabelled with the query's trained label
        (bound to an item of another class): CIWL and IWL answer it, ICL cannot."""
        context, query = self._iwl_classes(size, gen)
        target = self.class_labels[query]
        labels = relabel_one_slot(self.class_labels[context], target, gen)
        return self._assemble_classes(context, query, labels, target, gen)

    def flip_set(self, size: int, gen: torch.Generator) -> TaskBatch:
        """Bursty sequences of max(2, N/B) trained classes with distinct labels, the query's and a
        distractor's trained labels swapped: ICL answers the distractor's label, IWL and CIWL the
        query's own (absent from its items). Classes are drawn uniformly, whatever α."""
        c = self.config
        drawn = flip_classes(size, c.num_classes, c.num_labels, max(2, c.context_pairs // c.burstiness),
                                    c.context_pairs, gen, self.device)
        return self._assemble_classes(drawn["context_classes"], drawn["query_class"], drawn["context_labels"], drawn["target"], gen)

    def _iwl_classes(self, size: int, gen: torch.Generator, rounds: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """[size, N] context classes and [size] query classes, no context class sharing the query's label."""
        c = self.config
        query = self._zipf((size,), gen)
        query_label = self.class_labels[query][:, None]
        context = self._zipf((size, c.context_pairs), gen)
        # Redraw context classes that share the query's label (rejection, fixed rounds, no
        # host sync); any left after that move to the next class, whose label differs.
        for _ in range(rounds):
            clash = self.class_labels[context] == query_label
            context = torch.where(clash, self._zipf(context.shape, gen), context)
        clash = self.class_labels[context] == query_label
        context = torch.where(clash, (context + 1) % c.num_classes, context)
        return context, query

    def eval_sets(self, size: int | None = None) -> dict[str, TaskBatch]:
        """The fixed evaluation sets (same sequences at every evaluation of a run)."""
        size = size or self.config.eval_size
        gen = self.make_generator(self._eval_seed)
        return {
            "icl": self.icl_set(size, gen),
            "iwl": self.iwl_set(size, gen),
            "label_swap": self.label_swap_set(size, gen),
            # strategy probes (tasks/probes.py), drawn after the sets above so those stay as they were
            "flip": self.flip_set(size, gen),
            "ciwl": self.ciwl_set(size, gen),
        }
