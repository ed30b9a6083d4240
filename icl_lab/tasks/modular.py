"""Modular arithmetic a ∘ b mod p (Nanda et al. 2023; Mallinar et al. 2024).

Operations: add (a + b), sub (a − b), mul (a · b), div (a · b⁻¹, b ≠ 0, b⁻¹ the modular
inverse, p prime). Every pair (a, b) with a, b ∈ Z_p (b ≠ 0 for div) is one example; a seeded
permutation splits them into ⌊train_fraction · N⌋ training pairs and the rest for testing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl_lab.config import ConfigError

OPERATIONS = ("add", "sub", "mul", "div")


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
