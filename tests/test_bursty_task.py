"""The bursty generator's statistics, checked by counting."""

import math

import pytest
import torch

from icl_lab import BurstyConfig, BurstyTask
from icl_lab.config import ConfigError


def make(**kw):
    base = dict(num_classes=64, num_labels=8, dim=15, context_pairs=8, burstiness=4, eval_size=256)
    base.update(kw)
    return BurstyTask(BurstyConfig(**base), seed=0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_layout_and_labels_follow_class_assignment():
    task = make()
    batch = task.sample_batch(200, gen())
    c = task.config
    assert batch.inputs.shape == (200, 2 * c.context_pairs + 1, c.dim)
    # label tokens are exactly the label vectors of class mod L, in place 2i+1
    expected_labels = batch.context_classes % c.num_labels
    assert torch.equal(batch.context_labels, expected_labels)
    assert torch.allclose(batch.inputs[:, 1:-1:2], task.label_vectors[expected_labels])
    assert torch.equal(batch.targets, batch.query_class % c.num_labels)


def test_items_are_noisy_class_means():
    task = make(within_class_noise=0.5, dim=63)
    batch = task.sample_batch(500, gen())
    eps = 0.5
    items = batch.inputs[:, 0:-1:2]  # [b, N, D]
    noise = items * math.sqrt(1 + eps**2) - task.class_means[batch.context_classes]
    # noise = eps * eta, eta ~ N(0, I/D): per-coordinate variance eps^2 / D
    assert noise.var().item() == pytest.approx(eps**2 / 63, rel=0.05)
    assert noise.mean().abs().item() < 0.01


def test_bursty_contexts_repeat_each_class_burstiness_times():
    task = make(num_classes=2048, num_labels=32, p_bursty=1.0)
    batch = task.sample_batch(300, gen())
    B = task.config.burstiness
    for row, query in zip(batch.context_classes, batch.query_class):
        classes, counts = row.unique(return_counts=True)
        assert (counts % B == 0).all()  # each drawn class appears B times (twice if drawn twice)
        assert query in classes


def test_non_bursty_fraction_and_iid_contexts():
    task = make(num_classes=2048, num_labels=32, p_bursty=0.25)
    batch = task.sample_batch(4000, gen())
    B = task.config.burstiness
    bursty_like = torch.tensor(
        [bool(((row.unique(return_counts=True)[1] % B) == 0).all()) for row in batch.context_classes]
    )
    # i.i.d. contexts of 8 draws from 2048 classes are almost never all-multiples-of-4
    assert bursty_like.float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_zipf_frequencies_match_power_law():
    alpha, K = 1.0, 64
    task = make(num_classes=K, zipf_alpha=alpha, p_bursty=0.0)
    batch = task.sample_batch(20000, gen())
    counts = torch.bincount(batch.context_classes.flatten(), minlength=K).double()
    freq = counts / counts.sum()
    ranks = torch.arange(1, K + 1, dtype=torch.float64)
    expected = ranks**-alpha / (ranks**-alpha).sum()
    assert (freq - expected).abs().max().item() < 0.005
    # log-log slope of the head of the distribution is about -alpha
    slope = torch.linalg.lstsq(
        torch.stack([ranks[:16].log(), torch.ones(16, dtype=torch.float64)], 1), freq[:16].log()[:, None]
    ).solution[0].item()
    assert slope == pytest.approx(-alpha, abs=0.1)


def test_novel_fraction_and_novel_classes_disjoint():
    task = make(p_novel=0.3)
    batch = task.sample_batch(4000, gen())
    novel = batch.query_class >= task.config.num_classes
    assert novel.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert ((batch.context_classes >= task.config.num_classes) == novel[:, None]).all()


def test_icl_set_uses_fresh_classes_and_fresh_distinct_labels():
    task = make()
    icl = task.eval_sets()["icl"]
    K = task.config.num_classes
    assert (icl.context_classes >= K).all() and (icl.query_class >= K).all()
    items = icl.inputs[:, 0:-1:2].reshape(-1, task.config.dim)
    # no item is close to any trained class mean: distances are those of independent draws
    dist = torch.cdist(items, task.class_means * (1 / math.sqrt(1 + 0.1**2)))
    # (an item of a trained class sits within about ε = 0.1 of its mean)
    assert dist.min().item() > 0.3
    trained_items = task.sample_batch(64, gen()).inputs[:, 0:-1:2].reshape(-1, task.config.dim)
    assert torch.cdist(trained_items, task.class_means).min(dim=1).values.max().item() < 0.2
    for row_cls, row_lab, q_cls, target in zip(icl.context_classes, icl.context_labels, icl.query_class, icl.targets):
        mapping = {}
        for c, l in zip(row_cls.tolist(), row_lab.tolist()):
            assert mapping.setdefault(c, l) == l  # a class keeps one label within a sequence
        assert len(set(mapping.values())) == len(mapping)  # distinct labels per sequence
        assert mapping[int(q_cls)] == int(target)  # answer is in the context
    # labels are drawn fresh: the same novel slot gets many labels across sequences
    assert icl.context_labels[:, 0].unique().numel() == task.config.num_labels


def test_iwl_set_never_shows_the_query_label():
    task = make(zipf_alpha=1.5)  # skewed: the rejection step really has work to do
    iwl = task.eval_sets()["iwl"]
    assert not (iwl.context_labels == iwl.targets[:, None]).any()
    assert torch.equal(iwl.targets, iwl.query_class % task.config.num_labels)


def test_label_swap_contradicts_trained_assignment_but_not_the_context():
    task = make()
    swap = task.eval_sets()["label_swap"]
    L = task.config.num_labels
    trained = swap.query_class % L
    assert (swap.targets != trained).all()
    shift = (swap.targets - trained) % L
    assert torch.equal(swap.context_labels, (swap.context_classes % L + shift[:, None]) % L)
    matches = swap.context_classes == swap.query_class[:, None]
    assert matches.any(dim=1).all()
    assert (swap.context_labels[matches] == swap.targets[:, None].expand_as(matches)[matches]).all()
    assert shift.unique().numel() > 1


def test_positions_random_offsets():
    task = make(position_slots=40)
    batch = task.sample_batch(500, gen())
    T = task.config.seq_len
    diffs = batch.positions[:, 1:] - batch.positions[:, :-1]
    assert (diffs == 1).all()
    assert batch.positions.min() == 0 and batch.positions.max() == 39
    assert batch.positions[:, 0].unique().numel() == 40 - T + 1


def test_seeded_and_reproducible():
    a = make().sample_batch(32, gen(5))
    b = make().sample_batch(32, gen(5))
    c = make().sample_batch(32, gen(6))
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    ea, eb = make().eval_sets(), make().eval_sets()
    assert all(torch.equal(ea[k].inputs, eb[k].inputs) for k in ea)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(num_classes=100, num_labels=32), ["K=100", "L=32"]),
        (dict(context_pairs=8, burstiness=3), ["N=8", "B=3"]),
        (dict(p_bursty=1.5), ["p_bursty", "1.5"]),
        (dict(position_slots=5), ["position_slots=5"]),
    ],
)
def test_bad_task_config_is_refused(kw, words):
    base = dict(num_classes=64, num_labels=8, context_pairs=8, burstiness=4)
    base.update(kw)
    with pytest.raises(ConfigError) as err:
        BurstyConfig(**base)
    for w in words:
        assert w in str(err.value)
