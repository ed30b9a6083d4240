"""Nanda et al.'s measures against independent calculations."""

import math

import pytest
import torch
import torch.nn.functional as F

from icl_lab import get_preset, load_run, train
from icl_lab.grokking import fourier_basis, frequency_norms, gini, key_frequencies_from_embedding, neuron_frequencies, restricted_and_excluded_logits
from icl_lab.tasks import ModularTask, ModularTaskConfig

P = 23


def test_fourier_basis_is_orthonormal_and_ordered():
    F_ = fourier_basis(P)
    assert torch.allclose(F_ @ F_.T, torch.eye(P, dtype=torch.float64), atol=1e-10)
    x = torch.arange(P, dtype=torch.float64)
    cos3 = torch.cos(2 * math.pi * 3 * x / P)
    assert torch.allclose(F_[5], cos3 / cos3.norm())  # frequency k's cos at row 2k - 1


def test_embedding_of_one_frequency_has_that_key_frequency_and_gini_near_one():
    x = torch.arange(P, dtype=torch.float64)
    k = 7
    W = torch.stack([torch.cos(2 * math.pi * k * x / P), torch.sin(2 * math.pi * k * x / P), 0.5 * torch.cos(2 * math.pi * k * x / P + 1.0)], dim=1)
    assert key_frequencies_from_embedding(W, P) == [k]
    norms = frequency_norms(W, P)
    assert norms.argmax().item() + 1 == k
    K = P // 2
    assert gini(norms).item() == pytest.approx((K - 1) / K, abs=1e-9)  # the maximum for K values
    random = torch.randn(P, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert gini(frequency_norms(random, P)).item() < 0.2


def test_gini_known_values():
    assert gini(torch.ones(10)).item() == pytest.approx(0.0)
    assert gini(torch.tensor([0.0, 0.0, 0.0, 1.0])).item() == pytest.approx(0.75)
    # G = Σ(2k−n−1)c_k/(n Σc) for c = (1, 2, 3): (−2·1 + 0·2 + 2·3)/(3·6) = 4/18
    assert gini(torch.tensor([3.0, 1.0, 2.0])).item() == pytest.approx(4 / 18)


def test_neuron_frequencies_recover_planted_frequencies():
    a = torch.arange(P, dtype=torch.float64)[:, None, None]
    b = torch.arange(P, dtype=torch.float64)[None, :, None]
    ks = torch.tensor([2, 5, 11], dtype=torch.float64)
    acts = torch.relu(torch.cos(2 * math.pi * ks * (a + b) / P) + 0.3)  # [P, P, 3]
    freq, frac = neuron_frequencies(acts, P)
    assert freq.tolist() == [2, 5, 11]
    assert (frac > 0.5).all()


def grid_labels(op):
    a = torch.arange(P).repeat_interleave(P)
    b = torch.arange(P).repeat(P)
    return (a + b) % P if op == "add" else (a - b) % P, a, b


@pytest.mark.parametrize("op", ["add", "sub"])
def test_restricted_loss_with_every_frequency_equals_full_loss(op):
    labels, a, b = grid_labels(op)
    s = (a + b) % P if op == "add" else (a - b) % P
    table = torch.randn(P, P, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    logits = table[s]  # logits that depend on a ± b only, [P², P]
    restricted, excluded = restricted_and_excluded_logits(logits, P, list(range(1, P // 2 + 1)), op)
    full = F.cross_entropy(logits, labels)
    assert F.cross_entropy(restricted, labels).item() == pytest.approx(full.item(), rel=1e-9)
    # with every frequency removed only the class means are left: excluded logits are constant per class
    assert torch.allclose(excluded, logits.mean(0, keepdim=True).expand_as(excluded), atol=1e-9)
    none_kept, untouched = restricted_and_excluded_logits(logits, P, [], op)
    assert torch.allclose(untouched, logits)


def test_restricted_loss_keeps_only_the_planted_frequency():
    labels, a, b = grid_labels("add")
    c = torch.arange(P, dtype=torch.float64)
    k = 4
    signal = 5 * torch.cos(2 * math.pi * k * ((a + b)[:, None] - c[None, :]) / P)  # the Fourier algorithm's logits
    noise = torch.randn(P * P, P, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits = signal + noise
    restricted, excluded = restricted_and_excluded_logits(logits, P, [k], "add")
    assert F.cross_entropy(restricted, labels) < F.cross_entropy(logits, labels)
    assert F.cross_entropy(excluded, labels) > F.cross_entropy(logits, labels)


def test_modular_task_batches():
    task = ModularTask(ModularTaskConfig(p=7, op="sub", train_fraction=0.5), seed=0)
    batch = task.sample_batch(0, task.make_generator(0))
    assert batch.inputs.shape == (24, 3) and (batch.inputs[:, 2] == 7).all()
    assert torch.equal(batch.targets, (batch.inputs[:, 0] - batch.inputs[:, 1]) % 7)
    grid = task.eval_sets()["grid"]
    assert grid.inputs.shape == (49, 3)
    mini = ModularTask(ModularTaskConfig(p=7, batch_size=5), seed=0).sample_batch(0, task.make_generator(1))
    assert mini.inputs.shape == (5, 3)


def test_modular_training_records_every_measure(tmp_path):
    config = get_preset("modular", "cpu").config.with_overrides({
        "task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 20, "train.eval_every": 10,
        "train.checkpoint_every": 10, "device": "cpu",
    })
    train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    names = set(run.metrics["metric"].to_list())
    assert {"train_accuracy", "test_accuracy", "test_loss", "restricted_loss", "excluded_loss", "gini_embedding", "gini_neuron_logit", "weight_norm", "embedding_fourier_norm.k5"} <= names
    first = run.metrics.filter(run.metrics["step"] == 0)
    assert dict(zip(first["metric"], first["value"]))["test_loss"] == pytest.approx(math.log(11), abs=0.3)
    from icl_lab.grokking.posthoc import add_final_key_losses

    keys = add_final_key_losses(tmp_path / "run")
    assert keys and all(1 <= k <= 5 for k in keys)
    assert load_run(tmp_path / "run").curve("restricted_loss_final_keys")["step"].to_list() == [0, 10, 20]


def test_transformer_nfa_one_hot_path_matches_the_token_forward():
    from icl_lab import build_model
    from icl_lab.rfm.nfa import transformer_nfa, transformer_onehot_logits

    task = ModularTask(ModularTaskConfig(p=11, train_fraction=0.5), seed=0)
    model = build_model(get_preset("modular", "cpu").config.model, task.io, seed=0, device="cpu")
    grid = task.full_grid()
    one_hot = torch.cat([F.one_hot(grid.inputs[:, 0], 11), F.one_hot(grid.inputs[:, 1], 11)], 1).float()
    with torch.no_grad():
        assert torch.allclose(transformer_onehot_logits(model, one_hot, 11), model.forward_batch(grid), atol=1e-5)
    value = transformer_nfa(model, task)
    assert -1.0 <= value.item() <= 1.0
