"""The strategy probes (icl_lab/tasks/probes.py) hold, in every generated sequence, exactly what
they promise, and ideal ICL / IWL / CIWL answerers score on them as Singh et al. (2025) say."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from icl_lab.tasks import BurstyConfig, PairsConfig, make_task

SIZE = 256
CASES = {
    "bursty N8 B4": ("bursty", BurstyConfig(num_classes=256, num_labels=32, context_pairs=8, burstiness=4, eval_size=SIZE)),
    "bursty N8 B2": ("bursty", BurstyConfig(num_classes=64, num_labels=8, context_pairs=8, burstiness=2, eval_size=SIZE)),
    "bursty N4 B4": ("bursty", BurstyConfig(num_classes=64, num_labels=8, context_pairs=4, burstiness=4, eval_size=SIZE)),
    "pairs per sequence": ("pairs", PairsConfig(num_classes=50, num_labels=5, eval_size=SIZE)),
    "pairs per class": ("pairs", PairsConfig(num_classes=53, num_labels=5, label_binding="per_class", eval_size=SIZE)),
}


def _sets(case, seed=0):
    name, config = CASES[case]
    task = make_task(name, config, seed, "cpu")
    return task, config, task.eval_sets()


def _nearest_class(task, items: torch.Tensor) -> torch.Tensor:
    """The class whose mean is nearest each item [..., D] (items are means plus small noise)."""
    means = task.class_means[:, : items.shape[-1]]
    return torch.cdist(items.reshape(-1, items.shape[-1]), means).argmin(dim=1).reshape(items.shape[:-1])


@pytest.mark.parametrize("case", list(CASES))
def test_each_probe_sequence_holds_what_the_probe_promises(case):
    task, config, sets = _sets(case)
    L = config.num_labels
    for probe in ("flip", "ciwl", "iwl"):
        batch = sets[probe]
        classes, labels, query, target = batch.context_classes, batch.context_labels, batch.query_class, batch.targets
        trained = classes % L  # a class's trained label: k mod L, computed here, not by the task
        query_trained = query % L
        assert (query < config.num_classes).all() and (classes < config.num_classes).all()  # training classes only
        n = classes.shape[1]
        # the tokens are what the record says: label tokens are the label vectors, items lie nearest their class
        label_dims = task.label_vectors.shape[1]
        assert torch.equal(batch.inputs[:, 1 : 2 * n : 2, :label_dims], task.label_vectors[labels])
        assert torch.equal(_nearest_class(task, batch.inputs[:, 0 : 2 * n : 2, : config.dim]), classes)
        assert torch.equal(_nearest_class(task, batch.inputs[:, 2 * n, : config.dim]), query)
        has_query_class = (classes == query[:, None]).any(dim=1)
        if probe == "flip":
            assert has_query_class.all()
            of_query = classes == query[:, None]
            # every item of the query's class carries one other label, the target, which is a
            # context class's trained label; the query's own trained label is in the context,
            # bound only to items of that other class
            assert ((labels == target[:, None]) | ~of_query).all()
            assert (target != query_trained).all()
            carries_own = labels == query_trained[:, None]
            assert carries_own.any(dim=1).all()
            assert (trained[carries_own] != query_trained.expand(n, -1).T[carries_own]).all()
            distractor = torch.where(carries_own, classes, -1).max(dim=1).values
            assert torch.equal(distractor % L, target)
            assert (torch.where(carries_own, classes, distractor[:, None]) == distractor[:, None]).all()
            others = ~of_query & ~carries_own
            assert torch.equal(labels[others], trained[others])
        else:
            assert not has_query_class.any()
            assert torch.equal(target, query_trained)
            present = (labels == query_trained[:, None]).sum(dim=1)
            assert (trained != query_trained[:, None]).all()  # no context class shares the query's label
            if probe == "ciwl":
                assert (present == 1).all()  # exactly one slot carries it, on another class's item
                relabelled = labels == query_trained[:, None]
                assert torch.equal(labels[~relabelled], trained[~relabelled])
            else:
                assert (present == 0).all() and torch.equal(labels, trained)


def _answers(batch, L):
    """What ideal ICL, IWL and CIWL answerers say on a batch (independent of the task's code)."""
    gen = torch.Generator().manual_seed(0)
    classes, labels, query = batch.context_classes, batch.context_labels, batch.query_class
    pick = torch.randint(0, classes.shape[1], (len(query),), generator=gen)
    random_context = labels.gather(1, pick[:, None])[:, 0]
    match = classes == query[:, None]
    icl = torch.where(match.any(1), labels.gather(1, match.float().argmax(1, keepdim=True))[:, 0], random_context)
    iwl = query % L
    own_present = (labels == iwl[:, None]).any(1)
    ciwl = torch.where(own_present, iwl, random_context)
    return {"ICL": icl, "IWL": iwl, "CIWL": ciwl}


@pytest.mark.parametrize("case", list(CASES))
def test_ideal_strategies_score_the_papers_table(case):
    _, config, sets = _sets(case)
    table = {probe: {who: (said == sets[probe].targets).float().mean().item() for who, said in _answers(sets[probe], config.num_labels).items()}
             for probe in ("flip", "ciwl", "iwl")}
    assert table["flip"] == {"ICL": 1.0, "IWL": 0.0, "CIWL": 0.0}
    assert table["ciwl"]["IWL"] == table["ciwl"]["CIWL"] == 1.0 and table["ciwl"]["ICL"] < 0.75
    assert table["iwl"]["IWL"] == 1.0 and table["iwl"]["CIWL"] == 0.0 and table["iwl"]["ICL"] == 0.0


@pytest.mark.parametrize("case", ["bursty N8 B4", "pairs per class"])
def test_match_exemplars_makes_each_class_one_item_and_the_query_its_copy(case):
    name, config = CASES[case]
    for matched in (False, True):
        task = make_task(name, dataclasses.replace(config, match_exemplars=matched), 0, "cpu")
        batch = task.sample_batch(256, task.make_generator(1))
        n = batch.context_classes.shape[1]
        items, query = batch.inputs[:, 0 : 2 * n : 2], batch.inputs[:, 2 * n]
        same_class = batch.context_classes[:, :, None] == batch.context_classes[:, None, :]
        same_item = (items[:, :, None] == items[:, None, :]).all(dim=-1)
        of_query = batch.context_classes == batch.query_class[:, None]
        query_copied = ((items == query[:, None]).all(dim=-1) & of_query).any(dim=1)
        if matched:
            assert torch.equal(same_item, same_class)
            assert torch.equal(query_copied, of_query.any(dim=1)) and query_copied.float().mean() > 0.9
        else:  # fresh noise per item: no two items equal, the query no copy
            assert torch.equal(same_item, torch.eye(n, dtype=torch.bool).expand_as(same_item))
            assert not query_copied.any()


def test_per_class_binding_trains_each_class_on_its_own_label():
    _, config = CASES["pairs per class"]
    task = make_task("pairs", config, 0, "cpu")
    batch = task.sample_batch(512, task.make_generator(2))
    L = config.num_labels
    assert torch.equal(batch.context_labels, batch.context_classes % L)
    assert (batch.context_labels[:, 0] != batch.context_labels[:, 1]).all()
    assert torch.equal(batch.targets, batch.query_class % L)
    assert (batch.context_classes == batch.query_class[:, None]).any(dim=1).all()
    with pytest.raises(Exception, match="label_binding 'fixed' is not one of per_sequence, per_class"):
        PairsConfig(label_binding="fixed")
