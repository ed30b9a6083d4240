"""The neural feature ansatz (NFA) measure (Radhakrishnan et al. 2024; Mallinar et al. 2024 §5).

For a network f whose first layer is x ↦ W₁x, the neural feature matrix W₁ᵀW₁ is compared with
the network's AGOP over inputs x_1..x_n,

    AGOP = (1/n) Σ_j Σ_c ∇_x f_c(x_j) ∇_x f_c(x_j)ᵀ      (uncentred, as the authors' code)

by the Pearson correlation of the flattened matrices:

    NFA = corr(vec(W₁ᵀW₁), vec(AGOP^s)),   s = 1/2 by default.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import jacrev, vmap

from icl_lab.rfm.kernels import agop, matrix_power_psd


def network_agop(f: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, chunk: int = 512, centered: bool = False) -> torch.Tensor:
    """AGOP of f (a function of one input vector [d] -> outputs [c]) over inputs [n, d]."""
    jac = vmap(jacrev(f))
    grads = torch.cat([jac(inputs[i : i + chunk]) for i in range(0, inputs.shape[0], chunk)])  # [n, c, d]
    return agop(grads.detach(), centered=centered)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return (a @ b) / (a.norm() * b.norm())


def nfa_correlation(W1: torch.Tensor, agop_matrix: torch.Tensor, power: float = 0.5, drop_diagonal: bool = False) -> torch.Tensor:
    """corr(vec(W₁ᵀW₁), vec(AGOP^power)); with drop_diagonal the diagonals are left out."""
    nfm = W1.T @ W1
    target = matrix_power_psd(agop_matrix.double(), power)
    if drop_diagonal:
        off = ~torch.eye(nfm.shape[0], dtype=torch.bool, device=nfm.device)
        return pearson(nfm[off], target[off])
    return pearson(nfm, target)
