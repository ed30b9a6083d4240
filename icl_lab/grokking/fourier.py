"""The Fourier basis of Z_p and the progress measures of Nanda et al. (ICLR 2023).

Fourier basis: rows [1/√p, cos_1, sin_1, …, cos_K, sin_K] (K = (p−1)/2), each of unit norm,
cos_k(x) ∝ cos(2πkx/p) and sin_k(x) ∝ sin(2πkx/p); frequency k's rows are 2k−1 and 2k.

Gini coefficient (Hurley & Rickard) of non-negative values c sorted ascending, N of them:

    G = Σ_k (2k − N − 1) c_k / (N Σ_k c_k)        (0: all equal; (N−1)/N: one non-zero)

taken here over the N = K per-frequency norms ‖(cos_k, sin_k) component‖ (constant excluded).

Restricted / excluded loss (for a + b and a − b): with logits ℓ_c over the full input grid and
unit directions u_{k,cos}(a, b) ∝ cos(2πk(a ± b)/p), u_{k,sin} likewise,
    restricted logits = mean_c + Σ_{k ∈ key} Σ_{u} ⟨ℓ_c, u⟩ u     -> loss over all pairs,
    excluded logits   = ℓ_c − Σ_{k ∈ key} Σ_{u} ⟨ℓ_c, u⟩ u        -> loss over training pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fourier_basis(p: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """[p, p]: rows constant, cos_1, sin_1, …; unit norm (an orthonormal basis for odd p)."""
    x = torch.arange(p, dtype=dtype, device=device)
    rows = [torch.ones(p, dtype=dtype, device=device)]
    for k in range(1, p // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        rows.append(torch.sin(2 * math.pi * k * x / p))
    basis = torch.stack(rows[:p])
    return basis / basis.norm(dim=1, keepdim=True)


def frequency_norms(W: torch.Tensor, p: int) -> torch.Tensor:
    """Per-frequency norms [K] of W [p, d] (rows indexed by a residue), k = 1..K:
    ‖F W‖ restricted to the cos_k and sin_k rows."""
    coeffs = fourier_basis(p, dtype=torch.float64, device=W.device) @ W[:p].double()  # [p, d]
    K = p // 2
    sq = coeffs[1 : 2 * K + 1].pow(2).sum(dim=1).view(K, 2).sum(dim=1)
    return sq.sqrt()


def gini(values: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of non-negative values (Hurley & Rickard)."""
    c = values.double().flatten().sort().values
    n = c.numel()
    k = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    return ((2 * k - n - 1) * c).sum() / (n * c.sum())


def key_frequencies_from_embedding(W_E: torch.Tensor, p: int, relative_threshold: float = 0.25) -> list[int]:
    """Frequencies k whose embedding norm is at least `relative_threshold` of the largest."""
    norms = frequency_norms(W_E, p)
    keep = norms >= relative_threshold * norms.max()
    return [int(k) + 1 for k in torch.nonzero(keep).flatten()]


def neuron_frequencies(activations: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nanda et al.'s neuron clustering: activations [p, p, n_neurons] over the full (a, b)
    grid. Each neuron's activation is centred, 2D-Fourier transformed (F A Fᵀ), and assigned
    the frequency k whose terms (rows/columns 0, 2k−1, 2k, except the constant) explain most
    of its variance. Returns (frequency per neuron [n] in 1..K, that fraction of variance [n])."""
    A = activations.double()
    A = A - A.mean(dim=(0, 1), keepdim=True)
    Fb = fourier_basis(p, device=A.device)
    coeffs = torch.einsum("ia,abn,jb->ijn", Fb, A, Fb)  # [p, p, n]
    total = coeffs.pow(2).sum(dim=(0, 1)).clamp_min(1e-30)
    K = p // 2
    fractions = []
    for k in range(1, K + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k], device=A.device)
        block = coeffs[idx][:, idx].pow(2).sum(dim=(0, 1)) - coeffs[0, 0].pow(2)
        fractions.append(block / total)
    fractions = torch.stack(fractions)  # [K, n]
    best = fractions.max(dim=0)
    return best.indices + 1, best.values


def sum_directions(p: int, frequencies: list[int], sign: int = 1, device=None) -> torch.Tensor:
    """[2·len(frequencies), p²] unit vectors cos/sin(2πk(a + sign·b)/p) over the (a, b) grid."""
    a = torch.arange(p, dtype=torch.float64, device=device).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64, device=device).repeat(p)
    dirs = []
    for k in frequencies:
        angle = 2 * math.pi * k * (a + sign * b) / p
        dirs += [torch.cos(angle), torch.sin(angle)]
    if not dirs:
        return torch.zeros(0, p * p, dtype=torch.float64, device=device)
    D = torch.stack(dirs)
    return D / D.norm(dim=1, keepdim=True)


def restricted_and_excluded_logits(
    logits: torch.Tensor, p: int, frequencies: list[int], op: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [p², p] over the full (a, b) grid in row-major order -> (restricted, excluded)."""
    if op not in ("add", "sub"):
        raise ValueError(f"restricted/excluded loss is defined here for add and sub, not {op!r}")
    D = sum_directions(p, frequencies, sign=1 if op == "add" else -1, device=logits.device)  # [m, p²]
    L = logits.double()
    projection = D.T @ (D @ L)  # [p², p]
    restricted = projection + L.mean(dim=0, keepdim=True)
    excluded = L - projection
    return restricted, excluded


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.double(), labels)
