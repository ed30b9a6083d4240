"""Modular data and RFM, checked against independent calculations."""

import math

import numpy as np
import pytest
import torch

from icl_lab.config import ConfigError
from icl_lab.rfm import RFMConfig, agop, alignment, circulant_deviation, kernel_matrix, operand_block, predictor_gradients, run_rfm
from icl_lab.rfm.machine import solve_ridge
from icl_lab.rfm.nfa import network_agop, nfa_correlation
from icl_lab.tasks.modular import ModularConfig, all_pairs, discrete_log_order, primitive_root, split_pairs

torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("op, fn", [
    ("add", lambda a, b, p: (a + b) % p),
    ("sub", lambda a, b, p: (a - b) % p),
    ("mul", lambda a, b, p: (a * b) % p),
])
def test_labels_match_python_arithmetic(op, fn):
    p = 13
    a, b, label = all_pairs(p, op)
    assert len(a) == p * p
    for x, y, z in zip(a.tolist(), b.tolist(), label.tolist()):
        assert z == fn(x, y, p)


def test_division_labels_solve_b_times_label_equals_a():
    p = 17
    a, b, label = all_pairs(p, "div")
    assert len(a) == p * (p - 1) and (b != 0).all()
    for x, y, z in zip(a.tolist(), b.tolist(), label.tolist()):
        assert (z * y) % p == x  # z = x / y in Z_p, checked by multiplying back
        assert z == (x * pow(y, p - 2, p)) % p  # Fermat's little theorem, another route


def test_split_is_seeded_disjoint_and_sized():
    config = ModularConfig(p=11, op="add", train_fraction=0.3)
    s1, s2, s3 = split_pairs(config, 0), split_pairs(config, 0), split_pairs(config, 1)
    assert torch.equal(s1.train_idx, s2.train_idx) and not torch.equal(s1.train_idx, s3.train_idx)
    assert len(s1.train_idx) == int(0.3 * 121) and len(set(s1.train_idx.tolist()) | set(s1.test_idx.tolist())) == 121
    assert not set(s1.train_idx.tolist()) & set(s1.test_idx.tolist())


def test_bad_modular_config_refused():
    with pytest.raises(ConfigError, match="p=12"):
        ModularConfig(p=12)
    with pytest.raises(ConfigError, match="pow.*add, sub, mul, div"):
        ModularConfig(op="pow")


def test_primitive_root_and_log_order():
    assert primitive_root(61) == 2 and primitive_root(7) == 3
    order = discrete_log_order(13)
    assert sorted(order) == list(range(1, 13))


def loop_kernel(x, z, M, kind, L):
    """Element-by-element kernel, the formulas written out."""
    out = np.zeros((len(x), len(z)))
    for j, xj in enumerate(x):
        for i, zi in enumerate(z):
            d = xj - zi
            q = d @ M @ d
            out[j, i] = {"gaussian": math.exp(-q / (2 * L * L)), "laplace": math.exp(-math.sqrt(max(q, 0)) / L), "quadratic": (xj @ M @ zi) ** 2}[kind]
    return out


@pytest.mark.parametrize("kind", ["gaussian", "laplace", "quadratic"])
def test_kernel_and_ridge_solution_match_a_direct_calculation(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    M = A @ A.T / 5 + torch.eye(5, dtype=torch.float64)
    K = kernel_matrix(x, x, M, kind, 1.7)
    assert np.allclose(K.numpy(), loop_kernel(x.numpy(), x.numpy(), M.numpy(), kind, 1.7))
    Y = torch.randn(12, 3, generator=g, dtype=torch.float64)
    alpha = solve_ridge(K, Y, ridge=0.1)
    direct = np.linalg.inv(K.numpy() + 0.1 * np.eye(12)) @ Y.numpy()
    assert np.allclose(alpha.numpy(), direct, atol=1e-8)
    assert np.allclose((K @ solve_ridge(K, Y, 0.0)).numpy(), Y.numpy(), atol=1e-6) or kind == "quadratic"


@pytest.mark.parametrize("kind", ["gaussian", "laplace", "quadratic"])
@pytest.mark.parametrize("centered", [False, True])
def test_agop_equals_finite_differences(kind, centered):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(7, 4, generator=g, dtype=torch.float64)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    M = A @ A.T / 4 + 0.5 * torch.eye(4, dtype=torch.float64)
    alpha = torch.randn(7, 3, generator=g, dtype=torch.float64)
    L = 1.3

    def f(x):  # the predictor at one point, [d] -> [c], distances from explicit differences
        d = x[None, :] - X
        q = ((d @ M) * d).sum(-1)
        k = {"gaussian": torch.exp(-q / (2 * L * L)), "laplace": torch.exp(-q.clamp_min(0).sqrt() / L),
             "quadratic": (X @ M @ x) ** 2}[kind]
        return k @ alpha

    h = 1e-6
    fd = torch.zeros(7, 3, 4, dtype=torch.float64)
    for j in range(7):
        for k in range(4):
            e = torch.zeros(4, dtype=torch.float64)
            e[k] = h
            fd[j, :, k] = (f(X[j] + e) - f(X[j] - e)) / (2 * h)
    grads = predictor_gradients(X, X, alpha, M, kind, L)
    # (laplace: K has a cusp at x = x_j; the central difference of that term is 0, as the code's)
    assert torch.allclose(grads, fd, atol=1e-5), (grads - fd).abs().max()
    fd_flat = (fd - fd.mean(0, keepdim=True) if centered else fd).reshape(-1, 4)
    assert torch.allclose(agop(grads, centered=centered), fd_flat.T @ fd_flat / 7, atol=1e-5)


def circulant(c):
    n = len(c)
    return torch.tensor([[c[(k - l) % n] for k in range(n)] for l in range(n)], dtype=torch.float64)


def test_circulant_deviation_zero_for_circulant_and_anticirculant_positive_for_random():
    c = torch.randn(11, generator=torch.Generator().manual_seed(2)).tolist()
    C = circulant(c)
    anti = torch.tensor([[c[(k + l) % 11] for k in range(11)] for l in range(11)], dtype=torch.float64)
    assert circulant_deviation(C) < 1e-12
    assert circulant_deviation(anti) < 1e-12
    R = torch.randn(11, 11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert circulant_deviation(R) > 0.5
    noisy = C + 0.1 * R
    assert 1e-4 < circulant_deviation(noisy) < circulant_deviation(R)


def test_discrete_log_reordering_makes_multiplicative_blocks_circulant():
    p = 13
    h = torch.randn(p, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    M = torch.zeros(2 * p, 2 * p, dtype=torch.float64)
    for b in range(p):
        for a in range(p):
            M[p + b, a] = h[(a * b) % p]
    assert circulant_deviation(M[p:, :p]) > 0.1  # not circulant in natural order
    assert circulant_deviation(operand_block(M, p, "mul")) < 1e-12


def test_alignment_is_cosine():
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert alignment(A, 3 * A).item() == pytest.approx(1.0)
    assert alignment(A, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)).item() == pytest.approx(0.0)


def test_nfa_of_a_linear_network_with_orthogonal_readout_is_one():
    g = torch.Generator().manual_seed(5)
    W1 = torch.randn(6, 4, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    f = lambda x: Q @ (W1 @ x)  # AGOP = W1ᵀ Qᵀ Q W1 = W1ᵀ W1 exactly
    G = network_agop(f, torch.randn(9, 4, generator=g, dtype=torch.float64))
    assert torch.allclose(G, W1.T @ W1)
    assert nfa_correlation(W1, G, power=1.0).item() == pytest.approx(1.0)
    scrambled = W1[torch.randperm(6, generator=g)][:, torch.randperm(4, generator=g)]
    assert nfa_correlation(scrambled, G, power=1.0).item() < 0.99


def test_rfm_run_small_prime_groks_and_is_stored(tmp_path):
    from icl_lab.store import load_run  # an RFM run: no RunConfig, read by the store

    result = run_rfm(RFMConfig(p=13, op="add", train_fraction=0.5, iters=8, device="cpu"), tmp_path / "rfm", progress=False)
    run = load_run(tmp_path / "rfm")
    assert run.status["state"] == "done" and run.config["kind"] == "rfm"
    assert run.checkpoint_steps == list(range(8))
    train_acc = run.curve("train_accuracy")["value"].to_list()
    assert train_acc == [1.0] * 8
    dev = run.curve("circulant_deviation")["value"].to_list()
    assert dev[-1] < dev[0]
    assert run.curve("agop_alignment")["value"].to_list()[-1] == pytest.approx(1.0)
    assert len(result.feature_matrices) == 8 and result.feature_matrices[0].shape == (26, 26)
