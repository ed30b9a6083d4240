"""Heavy-tailed self-regularisation (HTSR): layer quality α and correlation traps.

Martin & Mahoney's WeightWatcher, as used by Prakash & Martin (2025, "Grokking and
generalization collapse: insights from HTSR theory"):

- **Empirical spectral density.** For a weight matrix W (N × M after transposing so N ≥ M),
  the eigenvalues of X = WᵀW / N, i.e. λ_i = σ_i(W)² / N. (WeightWatcher leaves out the 1/N;
  α does not depend on the scale.)
- **α.** A power law p(λ) ∝ λ^(−α) for λ ≥ λ_min fitted by maximum likelihood (Clauset, Shalizi
  & Newman 2009): α̂ = 1 + n / Σ_{λ_i ≥ λ_min} ln(λ_i / λ_min) over the n tail eigenvalues. Every
  eigenvalue but the largest is tried as λ_min and the one whose fit has the smallest
  Kolmogorov–Smirnov distance D = max |F_emp(λ) − (1 − (λ/λ_min)^(1−α̂))| over the tail is kept,
  as WeightWatcher's default (`fit='PL'`), with its KS form. Eigenvalues ≤ 1e-5 are dropped
  first, and a matrix with fewer than `min_evals` = 10 eigenvalues is not analysed
  (WeightWatcher's defaults).
  Reading: α ≈ 2–4 well trained; α > 6 under-trained / random-like; α < 2 over-fit ("very
  heavy-tailed"), the anti-grokking signature.
- **Correlation traps.** Shuffle W's entries (a fixed seeded permutation, so live and post-hoc
  values agree), compute the same spectrum, and count eigenvalues above the Marchenko–Pastur
  bulk edge λ₊ = σ²(1 + √(M/N))² plus a Tracy–Widom margin. σ² is estimated as the mean of the
  randomized eigenvalues without the spikes (the mean eigenvalue of an MP bulk is σ²);
  WeightWatcher instead fits σ to a kernel density of the bulk. The margin is
  WeightWatcher's √TW with TW = (M/N)^(1/2) (λ₊/σ²)^(2/3) M^(−2/3), in units of σ². A trap is a
  large localized spike left by a few outsized weights: it survives the shuffle because it does
  not come from correlations.

The estimator is implemented here (vectorised, float64, ~1 ms per matrix) rather than through
the `weightwatcher` package, which changes global state on import; the tests check it against
known power laws and against the `powerlaw` package's fit on the same eigenvalues.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl_lab.measures.registry import EvalData, register_measure
from icl_lab.measures.sites import weight_matrices

MIN_EVALS = 10


def spectrum(W: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of WᵀW / N (N the larger dimension), ascending, float64."""
    W = W.detach().double()
    if W.shape[0] < W.shape[1]:
        W = W.T
    N = W.shape[0]
    return torch.linalg.svdvals(W).flip(0) ** 2 / N


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    sigma: float  # standard error (α − 1)/√n


def fit_power_law(eigenvalues: torch.Tensor, min_tail: int = 2) -> PowerLawFit:
    """Continuous power-law fit with λ_min chosen by the smallest KS distance, exactly as
    WeightWatcher's default (`fit='PL'`, Clauset et al.'s method).

    Eigenvalues ≤ 1e-5 are dropped (WeightWatcher's cut, on WᵀW/N here). For every candidate k
    (λ_min = λ_(k), ascending order, all but the largest min_tail − 1; tail size n = M − k):
    α_k = 1 + n / (Σ_{i≥k} ln λ_i − n ln λ_k) and
    D_k = max_{j≥k} |1 − (λ_j/λ_k)^(1−α_k) − (j−k)/n| (the fitted CDF against the empirical one
    at its lower steps, as WeightWatcher computes it).
    """
    lam = eigenvalues.detach().double().flatten().sort().values
    lam = lam[lam > 1e-5]
    M = lam.shape[0]
    if M < max(min_tail, 2) + 1:
        raise ValueError(f"need at least {max(min_tail, 2) + 1} eigenvalues above 1e-5, got {M}")
    logs = lam.log()
    suffix = logs.flip(0).cumsum(0).flip(0)  # Σ_{i≥k} ln λ_i
    k = torch.arange(M - min_tail + 1, dtype=torch.long)  # candidates (each keeps ≥ min_tail)
    n = (M - k).double()
    denom = suffix[k] - n * logs[k]
    alpha = 1 + n / denom.clamp_min(1e-300)
    # KS distance per candidate: rows k, columns j (j ≥ k in the tail)
    j = torch.arange(M)
    in_tail = j[None, :] >= k[:, None]
    fitted = 1 - ((logs[None, :] - logs[k][:, None]) * (1 - alpha[:, None])).exp()
    empirical = (j[None, :] - k[:, None]).double() / n[:, None]
    gap = torch.where(in_tail, (fitted - empirical).abs(), torch.zeros_like(fitted))
    ks = gap.amax(1)
    ks = torch.where(denom > 0, ks, torch.full_like(ks, float("inf")))
    best = int(ks.argmin())
    a, nt = float(alpha[best]), int(n[best])
    return PowerLawFit(alpha=a, xmin=float(lam[k[best]]), ks_distance=float(ks[best]), n_tail=nt, sigma=(a - 1) / nt**0.5)


def shuffled(W: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """W with its entries permuted by a fixed seeded permutation (correlations destroyed)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    flat = W.detach().double().cpu().flatten()
    return flat[torch.randperm(flat.numel(), generator=gen)].reshape(W.shape)


def trap_threshold(sigma2: float, N: int, M: int) -> float:
    """MP bulk edge λ₊ = σ²(1 + √(M/N))² plus WeightWatcher's Tracy–Widom margin σ²·√TW,
    TW = (M/N)^(1/2) (λ₊/σ²)^(2/3) M^(−2/3)."""
    q = M / N
    edge = sigma2 * (1 + q**0.5) ** 2
    tw = q**0.5 * (edge / sigma2) ** (2 / 3) * M ** (-2 / 3)
    return edge + sigma2 * tw**0.5


def bulk_variance(eigenvalues: torch.Tensor, N: int, M: int) -> float:
    """σ² of the MP bulk: the mean eigenvalue (= σ² for a pure MP spectrum), recomputed once
    without the eigenvalues beyond the threshold that the first estimate gives (spikes would
    otherwise inflate it; a second pass is enough and cannot spiral into the bulk's edge)."""
    first = float(eigenvalues.mean())
    bulk = eigenvalues[eigenvalues <= trap_threshold(first, N, M)]
    return float(bulk.mean()) if bulk.numel() else first


def correlation_traps(W: torch.Tensor, seed: int = 0) -> int:
    """Eigenvalues of the shuffled W's spectrum beyond the MP edge + √TW margin (see module).
    Outsized weights that land in one row or column of the shuffled matrix make one spike."""
    N, M = max(W.shape), min(W.shape)
    rand = spectrum(shuffled(W, seed))
    sigma2 = bulk_variance(rand, N, M)
    return int((rand > trap_threshold(sigma2, N, M)).sum())


@register_measure("htsr")
def htsr(model, data: EvalData) -> dict:
    """HTSR per weight matrix (Martin & Mahoney; Prakash & Martin 2025): `alpha.<matrix>`, the
    power-law exponent of the ESD tail of WᵀW/N (MLE, λ_min by KS); `alpha_mean` over the
    analysed matrices (≥ 10 eigenvalues) and, for an MLP, `alpha_hidden_mean` over its hidden
    layers (not the output layer); `correlation_traps.<matrix>`, spikes of the
    element-shuffled W's ESD beyond the Marchenko–Pastur edge, and their total."""
    out: dict[str, float] = {}
    alphas, traps = [], 0
    for name, W in weight_matrices(model).items():
        if min(W.shape) < MIN_EVALS:
            continue
        fit = fit_power_law(spectrum(W))
        out[f"alpha.{name}"] = fit.alpha
        alphas.append(fit.alpha)
        n_traps = correlation_traps(W)
        out[f"correlation_traps.{name}"] = float(n_traps)
        traps += n_traps
    if alphas:
        out["alpha_mean"] = sum(alphas) / len(alphas)
        out["correlation_traps_total"] = float(traps)
    hidden = [v for k, v in out.items() if k.startswith("alpha.layers.")]
    if hidden:  # an MLP's hidden layers (Prakash & Martin's mean α)
        out["alpha_hidden_mean"] = sum(hidden) / len(hidden)
    return out
