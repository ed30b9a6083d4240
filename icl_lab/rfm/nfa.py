"""The neural feature ansatz (NFA) measure (Radhakrishnan et al. 2024; Mallinar et al. 2024 §5).

For a network f whose first layer is x ↦ W₁x, the neural feature matrix W₁ᵀW₁ is compared with
the network's AGOP over inputs x_1..x_n,

    AGOP = (1/n) Σ_j Σ_c ∇_x f_c(x_j) ∇_x f_c(x_j)ᵀ      (uncentred, as the authors' code)

by the Pearson correlation of the flattened matrices:

    NFA = corr(vec(W₁ᵀW₁), vec(AGOP^s)),   s = 1/2 by default.
"""

from __future__ import annotations

from collections.abc import Callable

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


def transformer_onehot_logits(model, one_hot: torch.Tensor, p: int) -> torch.Tensor:
    """Logits at `=` of a modular-task LabModel fed soft one-hot operands [n, 2p]: position 0
    gets one_hot[:, :p] @ W_E, position 1 one_hot[:, p:] @ W_E, position 2 the `=` embedding."""
    W_E = model.bridge.embed.weight  # [p + 1, d_model]
    n = one_hot.shape[0]
    equals = W_E[p].expand(n, -1)
    embeds = torch.stack([one_hot[:, :p] @ W_E[:p], one_hot[:, p:] @ W_E[:p], equals], dim=1)
    positions = torch.arange(3, device=one_hot.device).expand(n, -1)
    return model.bridge(embeds, position_ids=positions)[:, -1, :]


def transformer_nfa(model, task, power: float = 0.5) -> torch.Tensor:
    """NFA correlation of a modular-task transformer: the first layer is the embedding acting
    on each operand's one-hot, W₁ = blockdiag(W_Eᵀ, W_Eᵀ) over the 2p inputs; its AGOP is taken
    over the training pairs (one backward pass per output class)."""
    import torch.nn.functional as F

    p = task.config.p
    a = task.tokens[task.train_idx, 0]
    b = task.tokens[task.train_idx, 1]
    x = torch.cat([F.one_hot(a, p), F.one_hot(b, p)], dim=1).to(model.bridge.embed.weight.dtype)
    x.requires_grad_(True)
    logits = transformer_onehot_logits(model, x, p)
    grads = []
    for c in range(logits.shape[1]):
        (g,) = torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < logits.shape[1] - 1)
        grads.append(g)
    G = agop(torch.stack(grads, dim=1).detach().double(), centered=False)
    W_E = model.bridge.embed.weight.detach()[:p].double()  # [p, d_model]
    d = W_E.shape[1]
    W1 = torch.zeros(2 * d, 2 * p, dtype=torch.float64, device=W_E.device)
    W1[:d, :p] = W_E.T
    W1[d:, p:] = W_E.T
    return nfa_correlation(W1, G, power=power)
