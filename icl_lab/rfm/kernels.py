"""Mahalanobis kernels and the AGOP of a kernel predictor (Mallinar et al. 2024, §2).

With a feature matrix M (d × d, symmetric PSD) and ‖u‖²_M = uᵀ M u:

    gaussian:  K(x, z) = exp(−‖x − z‖²_M / (2 L²))
    laplace:   K(x, z) = exp(−‖x − z‖_M / L)
    quadratic: K(x, z) = (xᵀ M z)²

(The Gaussian's 2L² follows the authors' code; the paper's text writes ‖·‖²_M / L.)

The predictor is f(x) = Σ_i α_i K(x, x_i) with α ∈ R^{n×c}. Its gradient at x has the form

    ∇f_c(x) = s · M Σ_i W(x, x_i) α_ic (x − x_i)        gaussian: W = K, s = −1/L²
                                                         laplace:  W = K/‖x − x_i‖_M, s = −1/L
    ∇f_c(x) = 2 M Σ_i (xᵀ M x_i) α_ic x_i               quadratic

and the AGOP over points x_1..x_n is (1/n) Σ_j Σ_c ∇f_c(x_j) ∇f_c(x_j)ᵀ, optionally with the
gradients centred over j first (the authors' code centres).
"""

from __future__ import annotations

import torch

KERNELS = ("gaussian", "laplace", "quadratic")


def mahalanobis_sq(x: torch.Tensor, z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """[n, m] matrix of (x_j − z_i)ᵀ M (x_j − z_i), clamped at 0 against round-off."""
    xm = x @ M
    sq = (xm * x).sum(-1)[:, None] + ((z @ M) * z).sum(-1)[None, :] - 2 * xm @ z.T
    return sq.clamp_min(0.0)


def kernel_matrix(x: torch.Tensor, z: torch.Tensor, M: torch.Tensor, kind: str, bandwidth: float) -> torch.Tensor:
    if kind == "gaussian":
        return torch.exp(-mahalanobis_sq(x, z, M) / (2 * bandwidth**2))
    if kind == "laplace":
        return torch.exp(-mahalanobis_sq(x, z, M).sqrt() / bandwidth)
    if kind == "quadratic":
        return (x @ M @ z.T) ** 2
    raise ValueError(f"unknown kernel {kind!r}; valid: {', '.join(KERNELS)}")


def predictor_gradients(
    x: torch.Tensor, centers: torch.Tensor, alpha: torch.Tensor, M: torch.Tensor, kind: str, bandwidth: float
) -> torch.Tensor:
    """∇f_c at each x_j: [n_points, n_outputs, d], for f(x) = Σ_i α_i K(x, centers_i)."""
    if kind == "quadratic":
        weights = 2 * (x @ M @ centers.T)  # [n, m]: ∂K/∂x = 2 (xᵀMz) M z
        # Σ_i W_ji α_ic z_i  -> [n, c, d]
        return _weighted_center_sum(weights, alpha, centers) @ M  # M symmetric: (M v)ᵀ = vᵀ M
    sq = mahalanobis_sq(x, centers, M)
    if kind == "gaussian":
        weights, scale = torch.exp(-sq / (2 * bandwidth**2)), -1.0 / bandwidth**2
    elif kind == "laplace":
        dist = sq.sqrt()
        k = torch.exp(-dist / bandwidth)
        weights = torch.where(dist > 1e-10, k / dist.clamp_min(1e-10), torch.zeros_like(k))
        scale = -1.0 / bandwidth
    else:
        raise ValueError(f"unknown kernel {kind!r}; valid: {', '.join(KERNELS)}")
    # Σ_i W_ji α_ic (x_j − z_i) = (Σ_i W_ji α_ic) x_j − Σ_i W_ji α_ic z_i
    weight_alpha = weights @ alpha  # [n, c]
    summed = _weighted_center_sum(weights, alpha, centers)  # [n, c, d]
    diff = weight_alpha[:, :, None] * x[:, None, :] - summed
    return scale * (diff @ M)


def _weighted_center_sum(weights: torch.Tensor, alpha: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Σ_i W_ji α_ic z_i as one matrix product: [n, m] @ [m, c·d] -> [n, c, d]."""
    m, c = alpha.shape
    d = centers.shape[1]
    stacked = (alpha[:, :, None] * centers[:, None, :]).reshape(m, c * d)
    return (weights @ stacked).reshape(weights.shape[0], c, d)


def agop(gradients: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """(1/n) Σ_j Σ_c g_jc g_jcᵀ for gradients [n, c, d]; centred over j first if asked."""
    if centered:
        gradients = gradients - gradients.mean(dim=0, keepdim=True)
    n = gradients.shape[0]
    flat = gradients.reshape(-1, gradients.shape[-1])
    return flat.T @ flat / n


def matrix_power_psd(A: torch.Tensor, power: float) -> torch.Tensor:
    """A^power for a symmetric PSD matrix, via its eigendecomposition (negative round-off
    eigenvalues clamped to 0): the real part of scipy's sqrtm for power 1/2."""
    sym = (A + A.T) / 2
    values, vectors = torch.linalg.eigh(sym)
    return (vectors * values.clamp_min(0.0) ** power) @ vectors.T
