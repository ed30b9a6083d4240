"""Induction and previous-token scores on hand-built attention patterns."""

import pytest
import torch

from icl_lab import BurstyConfig, BurstyTask, ModelConfig, build_model
from icl_lab.measures import evaluate
from icl_lab.measures.attention import induction_score, previous_token_score
from interventions import ConfigError, Intervention, InterventionEngine


def causal_uniform(batch, heads, T):
    mask = torch.tril(torch.ones(T, T))
    return (mask / mask.sum(-1, keepdim=True)).expand(batch, heads, T, T).clone()


def perfect_previous_token(batch, heads, T):
    p = torch.zeros(batch, heads, T, T)
    p[:, :, 0, 0] = 1
    idx = torch.arange(1, T)
    p[:, :, idx, idx - 1] = 1
    return p


def test_previous_token_score_perfect_and_uniform():
    T = 17
    assert torch.allclose(previous_token_score(perfect_previous_token(4, 3, T)), torch.ones(3))
    uniform = previous_token_score(causal_uniform(4, 3, T))
    # label at 2i+1 attends 1/(2i+2) to its item under causal-uniform attention
    expected = sum(1 / (2 * i + 2) for i in range(8)) / 8
    assert torch.allclose(uniform, torch.full((3,), expected), atol=1e-6)
    assert uniform.max() < 0.35


def test_previous_token_score_ignores_other_positions():
    p = perfect_previous_token(2, 1, 17)
    p[:, :, 2, :] = 0
    p[:, :, 2, 2] = 1  # item positions do not count
    assert previous_token_score(p).item() == pytest.approx(1.0)
    p[:, :, 3, :] = 0
    p[:, :, 3, 3] = 1  # one of 8 labels attends to itself
    assert previous_token_score(p).item() == pytest.approx(7 / 8)


def test_induction_score_perfect_uniform_and_wrong():
    torch.manual_seed(0)
    batch, N = 64, 8
    T = 2 * N + 1
    classes = torch.randint(0, 3, (batch, N))
    query = classes[:, 0].clone()
    match = classes == query[:, None]
    perfect = torch.zeros(batch, 2, T, T)
    perfect[:, :, -1, 1 : 2 * N : 2] = match.float()[:, None, :] / match.sum(1, keepdim=True)[:, None, :]
    assert torch.allclose(induction_score(perfect, classes, query), torch.ones(2))
    uniform = causal_uniform(batch, 2, T)
    expected = (match.sum(1).float() / T).mean()
    assert torch.allclose(induction_score(uniform, classes, query), expected.expand(2), atol=1e-6)
    wrong = torch.zeros(batch, 2, T, T)
    wrong[:, :, -1, 0:2 * N:2] = 1 / N  # all on items, none on labels
    assert torch.allclose(induction_score(wrong, classes, query), torch.zeros(2))


def test_measures_read_the_models_real_patterns():
    """Overwrite layer 1's pattern with the ideal induction pattern through a hook: the
    registered measure must report 1 for those heads, and near-uniform values elsewhere."""
    task = BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, eval_size=128), seed=0)
    model = build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16), task.io, seed=0, device="cpu")
    sets = task.eval_sets()
    icl = sets["icl"]
    N = task.config.context_pairs
    match = (icl.context_classes == icl.query_class[:, None]).float()

    def ideal_induction(pattern, hook):
        out = pattern.clone()
        out[:, :, -1, :] = 0
        out[:, :, -1, 1 : 2 * N : 2] = (match / match.sum(1, keepdim=True))[:, None, :]
        return out

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", ideal_induction)]):
        values = evaluate(model, task, sets, ["induction_score", "previous_token_score"])
    assert values["induction_score.L1H0"].item() == pytest.approx(1.0)
    assert values["induction_score.L1H1"].item() == pytest.approx(1.0)
    assert values["induction_score.L0H0"].item() < 0.6
    assert set(values) == {f"{m}.L{l}H{h}" for m in ("induction_score", "previous_token_score") for l in (0, 1) for h in (0, 1)}


def test_accuracy_measures_match_a_direct_count():
    task = BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, eval_size=128), seed=1)
    model = build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16), task.io, seed=0, device="cpu")
    sets = task.eval_sets()
    values = evaluate(model, task, sets, ["icl_accuracy", "iwl_accuracy", "label_swap_accuracy", "context_label_accuracy"])
    with torch.no_grad():
        for name in ("icl", "iwl", "label_swap"):
            pred = model(sets[name].inputs, sets[name].positions).argmax(-1)
            direct = sum(int(p == t) for p, t in zip(pred.tolist(), sets[name].targets.tolist())) / len(pred)
            assert values[f"{name}_accuracy"].item() == pytest.approx(direct)
        pred = model(sets["icl"].inputs, sets["icl"].positions).argmax(-1).tolist()
        ctx = sets["icl"].context_labels.tolist()
        cla = sum(p in c for p, c in zip(pred, ctx)) / len(pred)
    assert values["context_label_accuracy"].item() == pytest.approx(cla)


def test_hook_attn_scores_is_the_post_softmax_pattern_so_clamping_it_is_refused():
    """In TL4's native bridge `hook_attn_scores` fires after the softmax, with the pattern
    itself, and its return value is discarded: a clamp there would count as fired and change
    nothing. The engine refuses it and points to hook_pattern."""
    task = BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, eval_size=128), seed=0)
    model = build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16), task.io, seed=0, device="cpu")
    batch = task.sample_batch(4, torch.Generator().manual_seed(0))
    scores, pattern = "blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=[scores, pattern], batch=batch)
    assert torch.equal(cache[scores], cache[pattern])
    assert torch.allclose(cache[scores].sum(-1), torch.ones(4, 2, 17))  # rows are distributions
    with pytest.raises(ConfigError) as err:
        InterventionEngine(model, task, [Intervention(hook=scores, target="zero")])
    for words in ("would do nothing", "after the softmax", repr(pattern)):
        assert words in str(err.value)
