"""Modular arithmetic a ∘ b mod p (Nanda et al. 2023; Mallinar et al. 2024).

Operations: add (a + b), sub (a − b), mul (a · b), div (a · b⁻¹, b ≠ 0, b⁻¹ the modular
inverse, p prime). Every pair (a, b) with a, b ∈ Z_p (b ≠ 0 for div) is one example; a seeded
permutation splits them into ⌊train_fraction · N⌋ training pairs and the rest for testing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl_lab.config import ConfigError
from icl_lab.tasks.base import Milestone, ModelIO, TaskBatch

OPERATIONS = ("add", "sub", "mul", "div")


MAX_P = 2003  # p² ≈ 4e6 pairs: the largest modulus whose full pair grid fits comfortably


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def modular_inverse(b: int, p: int) -> int:
    return pow(b, -1, p)


def primitive_root(p: int) -> int:
    """The smallest generator g of the multiplicative group Z_p^*."""
    order = p - 1
    factors = {d for d in range(2, order + 1) if order % d == 0 and is_prime(d)}
    for g in range(2, p):
        if all(pow(g, order // f, p) != 1 for f in factors):
            return g
    if p == 2:
        return 1
    raise ValueError(f"no primitive root mod {p}")


def discrete_log_order(p: int) -> list[int]:
    """[g^0, g^1, …, g^(p−2)] mod p: the residues 1..p−1 in the order of their logarithms.

    Reordering rows/columns by it turns a · b structure into log a + log b (mod p − 1)."""
    g = primitive_root(p)
    return [pow(g, k, p) for k in range(p - 1)]


@dataclass(frozen=True)
class ModularConfig:
    """a ∘ b mod p with a seeded train/test split (p prime)."""

    p: int = 61
    op: str = "add"
    train_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise ConfigError(f"op {self.op!r} is not one of {', '.join(OPERATIONS)}")
        if not isinstance(self.p, int) or not 2 <= self.p <= MAX_P:
            raise ConfigError(f"p={self.p!r} is out of range: a prime in 2..{MAX_P} (all p² pairs are built in memory)")
        if not is_prime(self.p):
            raise ConfigError(f"p={self.p} must be prime (division and the Fourier analysis need Z_p a field)")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")


def all_pairs(p: int, op: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, label) over every valid pair, in row-major order of (a, b)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if op == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
    if op == "add":
        label = (a + b) % p
    elif op == "sub":
        label = (a - b) % p
    elif op == "mul":
        label = (a * b) % p
    elif op == "div":
        inverse = torch.tensor([0] + [modular_inverse(int(x), p) for x in range(1, p)])
        label = (a * inverse[b]) % p
    else:
        raise ConfigError(f"op {op!r} is not one of {', '.join(OPERATIONS)}")
    return a, b, label


@dataclass(frozen=True)
class ModularSplit:
    """Index tensors into all_pairs(p, op)."""

    a: torch.Tensor
    b: torch.Tensor
    label: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor


def split_pairs(config: ModularConfig, seed: int) -> ModularSplit:
    a, b, label = all_pairs(config.p, config.op)
    n = a.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(config.train_fraction * n)
    return ModularSplit(a, b, label, train_idx=perm[:n_train].sort().values, test_idx=perm[n_train:].sort().values)


@dataclass(frozen=True)
class ModularTaskConfig:
    """a ∘ b mod p as tokens `a b =`, the answer read at `=` (Nanda et al. 2023).

    batch_size 0 means full batch (every training pair at every step, as the paper);
    otherwise each step draws `batch_size` training pairs with replacement."""

    p: int = 113
    op: str = "add"
    train_fraction: float = 0.3
    batch_size: int = 0

    def __post_init__(self) -> None:
        ModularConfig(p=self.p, op=self.op, train_fraction=self.train_fraction)
        if self.batch_size < 0:
            raise ConfigError(f"task.batch_size must be >= 0 (0 = full batch), got {self.batch_size}")


class ModularTask:
    """Token batches for a ∘ b mod p: inputs [batch, 3] = (a, b, =) with `=` the token p."""

    name = "modular"
    input_kind = "tokens"
    eval_set_names = ("grid",)
    probe_set = "grid"  # every pair, train and test
    provides = ("modular_arithmetic",)
    # grokking's s₁ (memorised) and s₂ (generalised), Nanda et al. 2023
    milestones = (
        Milestone("train_accuracy", 1.0, "s₁ train acc = 1"),
        Milestone("test_accuracy", 0.95, "s₂ test acc ≥ 0.95"),
    )
    transition_readings: dict = {}
    x_axis = "training step"  # one update (on the full training set when task.batch_size is 0)

    def __init__(self, config: ModularTaskConfig, seed: int, device="cpu"):
        self.config = config
        self.device = torch.device(device)
        self.split = split_pairs(ModularConfig(config.p, config.op, config.train_fraction), seed=seed)
        p = config.p
        s = self.split
        self.tokens = torch.stack([s.a, s.b, torch.full_like(s.a, p)], dim=1).to(self.device)  # [N, 3]
        self.labels = s.label.to(self.device)
        self.train_idx = s.train_idx.to(self.device)
        self.test_idx = s.test_idx.to(self.device)
        self.train_batch = self._batch(self.train_idx)  # the full batch, built once

    @property
    def io(self) -> ModelIO:
        p = self.config.p
        return ModelIO(input_kind=self.input_kind, n_ctx=3, n_outputs=p, seq_len=3, d_vocab=p + 1)

    def _batch(self, idx: torch.Tensor) -> TaskBatch:
        tokens = self.tokens[idx]
        positions = torch.arange(3, device=self.device).expand(idx.shape[0], -1)
        return TaskBatch(inputs=tokens, positions=positions, targets=self.labels[idx])

    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample_batch(self, batch_size: int, gen: torch.Generator):
        """The full training set (task.batch_size 0), or task.batch_size pairs drawn from it.
        (The trainer's train.batch_size is ignored by this task.)"""
        if self.config.batch_size == 0:
            return self.train_batch
        pick = torch.randint(0, self.train_idx.shape[0], (self.config.batch_size,), generator=gen, device=self.device)
        return self._batch(self.train_idx[pick])

    def loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        """Cross-entropy at `=` (computed in the logits' dtype: the trainer can cast to float64,
        as Nanda et al. recommend against late-training loss spikes)."""
        return torch.nn.functional.cross_entropy(logits, batch.targets)

    def eval_sets(self, size: int | None = None) -> dict:
        """`grid`: every pair in (a, b) row-major order (train ∪ test); measures slice it with
        `train_idx` / `test_idx`, so one forward pass serves every measure."""
        return {"grid": self.full_grid()}

    def full_grid(self):
        """Every pair in (a, b) row-major order, for Fourier measures (div: b ≥ 1 only)."""
        return self._batch(torch.arange(self.tokens.shape[0], device=self.device))

    def token_labels(self, batch: TaskBatch, example: int) -> list[str]:
        """The operands and the `=` position where the answer is read."""
        a, b = int(batch.inputs[example, 0]), int(batch.inputs[example, 1])
        return [f"a={a}", f"b={b}", "query ="]

    def ordered_inputs(self) -> torch.Tensor:
        """The operand tokens 0..p−1, whose order is the group's."""
        return torch.arange(self.config.p, device=self.device)
