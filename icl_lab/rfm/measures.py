"""Progress measures of RFM feature matrices (Mallinar et al. 2024, §3).

Circulant deviation. For a p × p block A of the feature matrix, let S(A) shift row ℓ
cyclically by ℓ places. For a circulant A (A_{ℓk} = c_{k−ℓ}) a left shift makes every column
of S(A) constant; for an anti-circulant one (A_{ℓk} = c_{k+ℓ}, the a + b structure) a right
shift does. With Var(v) = Σ_j (v_j − mean v)²,

    D(A) = (1 / ‖A‖²_F) Σ_k Var(S(A)[:, k]),

and we report the smaller of the two shift directions, so the measure is 0 for either
structure. The block is M's off-diagonal (b-rows × a-columns) block; for × and ÷ its rows and
columns are first reordered by discrete logarithm (residues g⁰, g¹, …, g^(p−2) for the
smallest generator g, dropping 0), which turns a·b structure into log a + log b mod p − 1.

AGOP alignment: ρ(A, B) = ⟨vec A, vec B⟩ / (‖vec A‖ ‖vec B‖), between the feature matrix at an
iteration and the final one.
"""

from __future__ import annotations

import torch

from icl_lab.tasks.modular import discrete_log_order


def shift_rows(A: torch.Tensor, direction: int) -> torch.Tensor:
    """Row ℓ rolled by direction·ℓ places (direction −1: left, +1: right)."""
    n = A.shape[0]
    rows = torch.arange(n)[:, None]
    cols = (torch.arange(A.shape[1])[None, :] - direction * rows) % A.shape[1]
    return A[rows, cols]


def circulant_deviation(A: torch.Tensor) -> torch.Tensor:
    """min over shift directions of (1/‖A‖²_F) Σ_k Σ_ℓ (S(A)_{ℓk} − mean_ℓ S(A)_{ℓk})²."""
    norm = (A**2).sum()
    values = []
    for direction in (-1, 1):
        shifted = shift_rows(A, direction)
        values.append(((shifted - shifted.mean(dim=0, keepdim=True)) ** 2).sum() / norm)
    return torch.stack(values).min()


def operand_block(M: torch.Tensor, p: int, op: str) -> torch.Tensor:
    """The b × a block of a 2p × 2p feature matrix, reordered by discrete log for mul/div."""
    block = M[p:, :p]
    if op in ("mul", "div"):
        order = torch.tensor(discrete_log_order(p))
        block = block[order][:, order]
    return block


def alignment(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened matrices."""
    a, b = A.flatten(), B.flatten()
    return (a @ b) / (a.norm() * b.norm())
