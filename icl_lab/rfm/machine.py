"""Recursive Feature Machines on modular arithmetic (Mallinar et al. 2024, Algorithm 1).

    M_0 = I
    for t = 0, 1, …, T−1:
        α_t = (K_{M_t}(X, X) + λ I)⁻¹ Y                    kernel ridge regression
        evaluate f_t(x) = K_{M_t}(x, X) α_t on train and test        -> step t in the store
        M_{t+1} = AGOP(f_t; X)^s                              feature learning (s = 1/2)

Inputs are one-hot(a) ⊕ one-hot(b) ∈ R^{2p}, targets one-hot(label) ∈ R^p; accuracy is the
argmax over the p outputs, loss the mean squared error over all n·p entries (the authors'
code). Everything is batched torch on one device, in float64 by default.

Stored per iteration t (the store's `step`): train/test accuracy and loss, the circulant
deviation of M_t's operand block, ‖M_t‖_F, and at the end the AGOP alignment ρ(M_t, M_T−1)
with the final feature matrix; `checkpoints/step_t.safetensors` holds M_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from icl_lab.config import ConfigError, to_dict
from icl_lab.phases import find_transition
from icl_lab.provenance import provenance_record, resolve_device
from icl_lab.rfm.kernels import KERNELS, agop, kernel_matrix, matrix_power_psd, predictor_gradients
from icl_lab.rfm.measures import alignment, circulant_deviation, operand_block
from icl_lab.lifecycle import RunLifecycle
from icl_lab.store import RunWriter, check_new_run_dir
from icl_lab.tasks.modular import ModularConfig, split_pairs

# What an RFM run declares to readers of the store (it is not a registered task, so no Task
# class carries these): its config.json "kind", what its store `step` counts, what it offers
# (its checkpoints hold the feature matrix M_t under FEATURE_MATRIX).
RUN_KIND = "rfm"
X_AXIS = "iteration"
FEATURE_MATRIX = "M"
CAPABILITIES = frozenset({"feature_matrix"})


@dataclass(frozen=True)
class RFMConfig:
    """An RFM run. Defaults are the authors' code defaults (p = 61, x + y, half the pairs for
    training, Gaussian kernel with L = 2.5, ridge 0, M ← AGOP^(1/2), float64)."""

    p: int = 61
    op: str = "add"
    train_fraction: float = 0.5
    kernel: str = "gaussian"
    bandwidth: float = 2.5
    ridge: float = 0.0
    agop_power: float = 0.5
    iters: int = 30
    centered: bool = True  # centre the gradients over samples before the outer product
    seed: int = 0
    device: str = "auto"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        ModularConfig(p=self.p, op=self.op, train_fraction=self.train_fraction)  # validates
        if self.kernel not in KERNELS:
            raise ConfigError(f"kernel {self.kernel!r} is not one of {', '.join(KERNELS)}")
        if self.bandwidth <= 0 or self.ridge < 0 or self.agop_power <= 0:
            raise ConfigError("bandwidth and agop_power must be > 0 and ridge >= 0")
        if self.iters < 1:
            raise ConfigError(f"iters must be >= 1, got {self.iters}")
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype {self.dtype!r} is not one of float64, float32")


@dataclass
class RFMResult:
    run_dir: Path
    feature_matrices: list[torch.Tensor]
    summary: dict[str, Any]


def one_hot_inputs(a: torch.Tensor, b: torch.Tensor, p: int, dtype) -> torch.Tensor:
    """[n, 2p]: one-hot(a) ⊕ one-hot(b)."""
    return torch.cat([F.one_hot(a, p), F.one_hot(b, p)], dim=1).to(dtype)


def solve_ridge(K: torch.Tensor, Y: torch.Tensor, ridge: float) -> torch.Tensor:
    """α = (K + λI)⁻¹ Y by a direct solve (λ = 0 as in the paper: K must be nonsingular)."""
    A = K + ridge * torch.eye(K.shape[0], dtype=K.dtype, device=K.device) if ridge else K
    try:
        return torch.linalg.solve(A, Y)
    except torch._C._LinAlgError as err:  # singular kernel matrix
        raise RuntimeError(f"kernel matrix is singular ({err}); use a ridge > 0") from None


def run_rfm(config: RFMConfig, out: str | Path, *, progress: bool = True, overwrite: bool = False) -> RFMResult:
    device = resolve_device(config.device)
    check_new_run_dir(out, overwrite)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    p = config.p
    split = split_pairs(ModularConfig(p=p, op=config.op, train_fraction=config.train_fraction), seed=config.seed)
    X = one_hot_inputs(split.a, split.b, p, dtype).to(device)
    Y = F.one_hot(split.label, p).to(dtype).to(device)
    labels = split.label.to(device)
    tr, te = split.train_idx.to(device), split.test_idx.to(device)
    X_tr, Y_tr, X_te = X[tr], Y[tr], X[te]

    run = RunLifecycle.start(out, {
        "kind": RUN_KIND,
        "rfm": to_dict(config),
        "n_train": int(tr.numel()),
        "n_test": int(te.numel()),
        **provenance_record(device),
    }, verb="rfm", overwrite=overwrite)
    writer = run.writer
    M = torch.eye(2 * p, dtype=dtype, device=device)
    history: list[torch.Tensor] = []
    with run:
        for t in tqdm(range(config.iters), disable=not progress, desc=f"rfm {config.op} mod {p}", unit="iter"):
            K_tr = kernel_matrix(X_tr, X_tr, M, config.kernel, config.bandwidth)
            alpha = solve_ridge(K_tr, Y_tr, config.ridge)
            pred_tr = K_tr @ alpha
            pred_te = kernel_matrix(X_te, X_tr, M, config.kernel, config.bandwidth) @ alpha
            values = {
                "train_accuracy": (pred_tr.argmax(-1) == labels[tr]).to(dtype).mean(),
                "test_accuracy": (pred_te.argmax(-1) == labels[te]).to(dtype).mean(),
                "train_loss": ((pred_tr - Y_tr) ** 2).mean(),
                "test_loss": ((pred_te - Y[te]) ** 2).mean(),
                "feature_matrix_norm": M.norm(),
            }
            block = operand_block(M, p, config.op).cpu()
            if block.abs().sum() > 0:  # undefined for M_0 = I, whose operand block is zero
                values["circulant_deviation"] = circulant_deviation(block)
            writer.add_metrics(t, {k: float(v) for k, v in values.items()})
            writer.flush_metrics()
            writer.save_checkpoint(t, {FEATURE_MATRIX: M})
            history.append(M.cpu())
            if t < config.iters - 1:
                grads = predictor_gradients(X_tr, X_tr, alpha, M, config.kernel, config.bandwidth)
                M = matrix_power_psd(agop(grads, centered=config.centered), config.agop_power)
        final = history[-1]
        for t, M_t in enumerate(history):
            writer.add_metrics(t, {"agop_alignment": float(alignment(M_t, final))})
        writer.flush_metrics()
        summary = summarize_rfm(writer, run.wall_seconds)
        run.finish(summary, steps=config.iters - 1)
    return RFMResult(run_dir=writer.dir, feature_matrices=history, summary=summary)


def summarize_rfm(writer: RunWriter, wall: float) -> dict[str, Any]:
    rows = writer.rows
    curve = sorted((s, v) for s, m, v in rows if m == "test_accuracy")
    steps, values = zip(*curve)
    t = find_transition(list(steps), list(values))
    last = max(steps)
    final = {m: v for s, m, v in rows if s == last}
    first_99 = next((s for s, v in curve if v >= 0.99), None)
    return {
        "transitions": {"test_accuracy": t.to_dict()},
        "first_iteration_test_accuracy_0.99": first_99,
        "final": final,
        "final_step": last,
        "wall_seconds": wall,
    }
