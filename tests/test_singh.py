"""The pairs task (Singh et al.'s x_a ℓ_a x_b ℓ_b x_q), its clamp targets and the experiment."""

import math
from itertools import combinations
from pathlib import Path

import pytest
import torch

from icl_lab import get_preset, make_task
from icl_lab.cli import main
from icl_lab.tasks.pairs import PairsConfig
from interventions import ConfigError, Intervention, InterventionEngine

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model.d_model": 16, "task.eval_size": 32, "train.eval_every": 2, "train.checkpoint_every": 0, "device": "cpu"}


def task_of(**settings):
    return make_task("pairs", PairsConfig(**settings), seed=3, device="cpu")


def pair_set(pairs: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(sorted(p)) for p in pairs.tolist()}


@pytest.mark.parametrize("labels, train, held", [(5, 8, 2), (10, 36, 9), (15, 84, 21)])
def test_label_pairs_split_into_training_and_held_out(labels, train, held):
    task = task_of(num_labels=labels)
    assert (len(task.train_pairs), len(task.held_out_pairs)) == (train, held)
    both = pair_set(task.train_pairs) | pair_set(task.held_out_pairs)
    assert both == set(combinations(range(labels), 2))  # every unordered pair, each once
    assert not pair_set(task.train_pairs) & pair_set(task.held_out_pairs)


def check_sequences(task, batch, pairs, classes: range):
    labels, cls = batch.context_labels, batch.context_classes
    assert (labels[:, 0] != labels[:, 1]).all() and (cls[:, 0] != cls[:, 1]).all()
    assert pair_set(labels) <= pair_set(pairs)
    assert all(c in classes for c in cls.flatten().tolist())
    match = cls == batch.query_class[:, None]
    assert (match.sum(1) == 1).all()  # the query's class is exactly one of the two
    assert torch.equal(batch.targets, labels[match])
    assert torch.equal(batch.inputs[:, 1], task.label_vectors[labels[:, 0]])
    assert torch.equal(batch.inputs[:, 3], task.label_vectors[labels[:, 1]])
    # each item lies nearest its own class mean (noise 0.1)
    items = batch.inputs[:, [0, 2, 4]]
    nearest = torch.cdist(items, task.class_means[None].expand(len(items), -1, -1)).argmin(-1)
    assert torch.equal(nearest, torch.cat([cls, batch.query_class[:, None]], 1))


def test_training_batches_and_evaluation_sets():
    task = task_of(num_classes=6, held_out_classes=4, num_labels=5)
    batch = task.sample_batch(2000, task.make_generator(0))
    check_sequences(task, batch, task.train_pairs, range(0, 6))
    assert pair_set(batch.context_labels) == pair_set(task.train_pairs)  # all 8 used, no held-out one
    assert ((batch.context_labels[:, 0] < batch.context_labels[:, 1]).float().mean() - 0.5).abs() < 0.05
    sets = task.eval_sets(500)
    check_sequences(task, sets["icl"], task.held_out_pairs, range(6, 10))
    check_sequences(task, sets["trained"], task.train_pairs, range(0, 6))


def test_ideal_patterns_point_where_they_should():
    task = task_of()
    batch = task.sample_batch(16, task.make_generator(1))
    prev, defined = task.ideal_attention("previous_token", batch)
    assert defined.all() and torch.allclose(prev.sum(-1), torch.ones(16, 5))
    assert (prev[:, 1, 0] == 1).all() and (prev[:, 3, 2] == 1).all()  # each label on its item
    ind, defined = task.ideal_attention("induction", batch)
    assert defined[:, 4].all() and not defined[:, :4].any()
    assert torch.allclose(ind[:, 4].sum(-1), torch.ones(16))
    first = batch.context_classes[:, 0] == batch.query_class
    expected = torch.where(first, 1, 3)  # the label after the query's class
    assert torch.equal(ind[:, 4].argmax(-1), expected) and (ind[:, 4].max(-1).values == 1).all()


def model_and_task():
    from icl_lab.models import build_model

    config = get_preset("pairs", "cpu").config.with_overrides({"model.d_model": 16})
    task = make_task("pairs", config.task_config, seed=0, device="cpu")
    return build_model(config.model, task.io, seed=1, device="cpu"), task, task.sample_batch(8, task.make_generator(2))


def run_with(model, task, batch, specs, names):
    with InterventionEngine(model, task, specs) as engine:
        engine.set_step(0, "train")
        return model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)


def test_previous_token_or_self_puts_s_on_the_previous_token_and_the_rest_on_itself():
    model, task, batch = model_and_task()
    spec = Intervention(hook="blocks.0.attn.hook_pattern", heads=(2,), target="previous_token_or_self", strength=0.3)
    _, cache = run_with(model, task, batch, [spec], ["blocks.0.attn.hook_pattern"])
    pattern = cache["blocks.0.attn.hook_pattern"]
    expected = 0.3 * torch.diag(torch.ones(4), -1) + 0.7 * torch.eye(5)
    expected[0, 0] = 1.0  # position 0: its previous token is itself
    assert torch.allclose(pattern[:, 2], expected.expand(8, 5, 5), atol=1e-6)
    _, free = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.0.attn.hook_pattern"], batch=batch)
    assert torch.equal(pattern[:, 3], free["blocks.0.attn.hook_pattern"][:, 3])  # other heads untouched


def test_induction_or_other_puts_s_on_the_correct_label_and_the_rest_on_the_other():
    """Their induction clamp of strength s, checked against the batch itself: the query row puts
    s on the label position whose item has the query's class and 1 − s on the other label
    position; every other row and head is the model's own."""
    model, task, batch = model_and_task()
    spec = Intervention(hook="blocks.1.attn.hook_pattern", heads=(3,), query_positions="query", target="induction_or_other", strength=0.7)
    _, cache = run_with(model, task, batch, [spec], ["blocks.1.attn.hook_pattern"])
    _, free = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.attn.hook_pattern"], batch=batch)
    pattern, own = cache["blocks.1.attn.hook_pattern"], free["blocks.1.attn.hook_pattern"]
    for b in range(8):
        correct = 1 if batch.context_classes[b, 0] == batch.query_class[b] else 3
        expected = torch.zeros(5)
        expected[correct], expected[4 - correct] = 0.7, 0.3
        assert torch.allclose(pattern[b, 3, 4], expected, atol=1e-6)
    assert torch.equal(pattern[:, 3, :4], own[:, 3, :4]) and torch.equal(pattern[:, :3], own[:, :3])


@pytest.mark.parametrize("pairs, burstiness", [(4, 2), (2, 2)])  # (2, 2): no wrong label on offer
def test_other_labels_pattern_on_the_bursty_task_spreads_over_the_wrong_labels(pairs, burstiness):
    from icl_lab.tasks.bursty import BurstyConfig, BurstyTask

    task = BurstyTask(BurstyConfig(num_classes=64, num_labels=8, context_pairs=pairs, burstiness=burstiness), seed=0)
    batch = task.sample_batch(32, task.make_generator(3))
    other, defined = task.ideal_attention("other_labels", batch)
    assert torch.equal(defined, task.ideal_attention("induction", batch)[1])
    for b in range(32):
        classes, q = batch.context_classes[b].tolist(), int(batch.query_class[b])
        wrong = [2 * i + 1 for i, c in enumerate(classes) if c != q]
        right = [2 * i + 1 for i, c in enumerate(classes) if c == q]
        expected = torch.zeros(2 * pairs + 1)
        expected[wrong or right] = 1 / len(wrong or right)
        assert torch.allclose(other[b, -1], expected), (classes, q)
        assert other[b, :-1].abs().sum() == 0


def test_previous_token_input_gives_each_token_its_predecessors_input():
    model, task, batch = model_and_task()
    spec = Intervention(hook="blocks.0.hook_attn_out", target="previous_token_input")
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post"]
    _, cache = run_with(model, task, batch, [spec], names)
    x = cache["blocks.0.hook_resid_pre"]
    assert torch.equal(cache["blocks.0.hook_attn_out"][:, 0], torch.zeros_like(x[:, 0]))
    assert torch.allclose(cache["blocks.0.hook_attn_out"][:, 1:], x[:, :-1])
    assert torch.allclose(cache["blocks.0.hook_resid_post"][:, 3], x[:, 3] + x[:, 2])  # ℓ_b holds x_b
    with pytest.raises(ConfigError, match="blocks.L.hook_attn_out"):
        InterventionEngine(model, task, [Intervention(hook="blocks.0.hook_resid_post", target="previous_token_input")])


def test_previous_token_input_pattern_is_layer_2s_pattern_on_shifted_inputs():
    """Independent check: with layer 1's output zeroed, layer 2 reads the embeddings, so feeding
    the model the shifted sequence x_a x_a ℓ_a x_b x_q (rotary positions unchanged) gives the
    pattern the target must produce; the loss reaches layer 2's QK weights through it."""
    model, task, batch = model_and_task()
    zero = Intervention(hook="blocks.0.hook_attn_out", target="zero")
    spec = Intervention(hook="blocks.1.attn.hook_pattern", target="previous_token_input_pattern", gradient="value")
    _, cache = run_with(model, task, batch, [zero, spec], ["blocks.1.attn.hook_pattern", "blocks.1.hook_resid_pre"])
    shifted = batch.inputs[:, [0, 0, 1, 2, 4]]
    with InterventionEngine(model, task, [zero]) as engine:
        engine.set_step(0, "train")
        _, expected = model.run_with_cache(shifted, batch.positions, names=["blocks.1.attn.hook_pattern"], batch=batch)
        _, plain = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.hook_resid_pre"], batch=batch)
    assert torch.allclose(cache["blocks.1.attn.hook_pattern"], expected["blocks.1.attn.hook_pattern"], atol=1e-6)
    assert torch.allclose(cache["blocks.1.hook_resid_pre"], plain["blocks.1.hook_resid_pre"])  # values: the embeddings
    assert not torch.allclose(expected["blocks.1.attn.hook_pattern"], cache_free(model, batch), atol=1e-3)
    with InterventionEngine(model, task, [zero, spec]) as engine:
        engine.set_step(0, "train")
        model.zero_grad()
        task.loss(model.forward_batch(batch), batch).backward()
    # layer 2's queries reach the loss only through the pattern: a detached pattern leaves them no gradient
    q_weight = next(p for n, p in model.named_parameters() if "blocks.1." in n and ".attn." in n and ".q." in n and n.endswith("weight"))
    assert q_weight.grad is not None and q_weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match='gradient = "value"'):
        InterventionEngine(model, task, [Intervention(hook="blocks.1.attn.hook_pattern", target="previous_token_input_pattern")])
    with pytest.raises(ConfigError, match="L >= 1"):
        InterventionEngine(model, task, [Intervention(hook="blocks.0.attn.hook_pattern", target="previous_token_input_pattern", gradient="value")])


def cache_free(model, batch):
    _, cache = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.attn.hook_pattern"], batch=batch)
    return cache["blocks.1.attn.hook_pattern"]


def test_perfect_copying_logits_are_the_heads_scores_over_the_context_labels():
    model, task, batch = model_and_task()
    spec = Intervention(hook="hook_unembed", positions="query", target="perfect_copying", key="L1H3", gradient="value")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        logits, cache = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.attn.hook_pattern"], batch=batch)
        task.loss(model.forward_batch(batch), batch).backward()
    row = cache["blocks.1.attn.hook_pattern"][:, 3, 4]  # head 3, the query's row [batch, key]
    for b in range(8):
        a, c = batch.context_labels[b].tolist()
        expected = torch.full((5,), -math.inf)
        expected[a], expected[c] = math.log(row[b, 1]), math.log(row[b, 3])
        assert torch.allclose(logits[b], expected, atol=1e-5)
        # the prediction is the head's attention on the two labels, renormalised
        p = torch.softmax(logits[b], -1)
        assert torch.allclose(p[[a, c]], row[b, [1, 3]] / row[b, [1, 3]].sum(), atol=1e-5)
    grads = {k: v.grad for k, v in model.checkpoint_state(keep_vars=True).items()}
    assert grads["bridge.blocks.1.attn.q.weight"].abs().sum() > 0  # the loss trains the head's scores
    assert grads["bridge.unembed.weight"] is None or grads["bridge.unembed.weight"].abs().sum() == 0


def test_perfect_copying_reads_the_head_as_the_engines_clamps_left_it():
    """The copying head's pattern is recorded after every clamp of the engine, whatever the
    spec order: with L1H3's query row clamped to the ideal induction pattern (a later spec),
    the logits are the log of that ideal row over the context labels."""
    model, task, batch = model_and_task()
    copying = Intervention(hook="hook_unembed", positions="query", target="perfect_copying", key="L1H3", gradient="value")
    induction = Intervention(hook="blocks.1.attn.hook_pattern", heads=(3,), query_positions="query", target="induction")
    with InterventionEngine(model, task, [copying, induction]) as engine, torch.no_grad():
        engine.set_step(0, "train")
        logits = model.forward_batch(batch)
    ideal, defined = task.ideal_attention("induction", batch)  # [batch, query, key]
    assert defined[:, 4].all()
    tiny = torch.finfo(torch.float32).tiny  # the target's floor under log 0
    for b in range(8):
        a, c = batch.context_labels[b].tolist()
        expected = torch.full((5,), -math.inf)
        expected[a], expected[c] = math.log(max(ideal[b, 4, 1], tiny)), math.log(max(ideal[b, 4, 3], tiny))
        assert torch.allclose(logits[b], expected), (logits[b], expected)
    assert torch.equal(logits.argmax(-1), batch.targets)  # the ideal head copies the right label


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"key": "1:3", "gradient": "value"}, ["L<layer>H<head>", "'1:3'"]),
        ({"key": "L1H3"}, ["gradient", '"value"', "'detach'"]),
    ],
)
def test_perfect_copying_spec_names_what_is_missing(fields, words):
    with pytest.raises(ConfigError) as err:
        Intervention(hook="hook_unembed", target="perfect_copying", **fields)
    assert all(w in str(err.value) for w in words)


def test_perfect_copying_refuses_a_missing_head_and_a_non_logit_hook():
    model, task, _ = model_and_task()
    with pytest.raises(ConfigError, match="8 heads"):
        InterventionEngine(model, task, [Intervention(hook="hook_unembed", target="perfect_copying", key="L1H9", gradient="value")])
    with pytest.raises(ConfigError, match="output logits"):
        InterventionEngine(model, task, [Intervention(hook="blocks.1.hook_resid_post", target="perfect_copying", key="L1H3", gradient="value")])


def test_sweep_file_holds_the_experiments_conditions():
    from icl_lab.experiments.singh import PAIRS_CONDITIONS
    from icl_lab.sweep import load_sweep

    runs, _ = load_sweep(ROOT / "sweeps" / "singh_pairs.toml")
    by_condition = {r.axes["condition"]: r.config["interventions"] for r in runs if r.axes["seed"] == 0}
    for name, specs in by_condition.items():
        assert [Intervention.from_dict(d) for d in specs] == list(PAIRS_CONDITIONS[name].specs), name
    data_runs, _ = load_sweep(ROOT / "sweeps" / "singh_pairs_data.toml")
    assert len(data_runs) == 18
    # their scaling runs keep one layer-2 head, as the experiment's data conditions do
    for run in data_runs:
        labels, classes = run.axes["task.num_labels"], run.axes["task.num_classes"]
        condition = {(5, 50): "keep_one", (10, 50): "labels_10", (15, 50): "labels_15", (5, 200): "classes_200"}.get((labels, classes))
        if condition is not None:
            assert [Intervention.from_dict(d) for d in run.config["interventions"]] == list(PAIRS_CONDITIONS[condition].specs), condition
            assert dict(PAIRS_CONDITIONS[condition].settings).get("task.num_labels", 5) == labels


def test_experiment_table_over_two_conditions(tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["experiment", "singh-clamps", "--preset", "pairs/cpu", "--conditions", "induction", "--seeds", "0",
            "--steps", "4", "--out", str(out), "--no-progress", "--device", "cpu"]
    args += [a for k, v in TINY.items() if k != "device" for a in ("--set", f"{k}={v}")]
    assert main(args) == 0
    import polars as pl

    table = pl.read_parquet(out / "singh_clamps.parquet")
    assert table["condition"].to_list() == ["keep_one", "induction"]  # its baseline is added, first
    assert table["baseline"].to_list() == ["none", "keep_one"] and table["seeds"].to_list() == [1, 1]
    for column in ("transition_steps", "transition_sequences_mean", "transition_sequences_sd", "ratio_to_baseline", "plateau_seeds"):
        assert column in table.columns
    assert "| induction |" in capsys.readouterr().out
    from icl_lab import load_run

    induction = load_run(out / "induction-seed0")
    assert induction.curve("induction_score.L1H3")["value"].to_list() == [1.0, 1.0, 1.0]
    assert induction.curve("induction_score.L1H0")["value"].max() < 1.0


def test_experiment_refuses_an_unknown_condition_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["experiment", "singh-clamps", "--conditions", "none,prev_tokn", "--out", str(tmp_path / "x"), "--seeds", "0"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "'prev_tokn'" in err and "prev_token_input" in err and "perfect_copying" in err
    assert not (tmp_path / "x").exists()


def test_pairs_transition_is_the_drop_from_ln2_not_the_fall_from_ln_L():
    """Shaped like the measured 15-label runs: ln 15 at step 0, a long fall to ~0.8, a creep
    along ln 2, then the drop to ~0 around step 900. The transition is that drop (where the loss
    first falls halfway from ln 2 to its end), not the midpoint of the whole fall from ln 15;
    a run that stays on the plateau has none."""
    import numpy as np

    from icl_lab.experiments.singh import plateau_for, transition_of

    plateau = plateau_for(get_preset("pairs", "cpu").config)
    steps = np.arange(0, 3001, 50)
    early = math.log(15) * np.exp(-steps / 150) + 0.8 * (1 - np.exp(-steps / 150))  # ln 15 -> 0.8
    drop = 1 / (1 + np.exp((steps - 900) / 60))  # 1 -> 0 around step 900
    loss = early * drop + 0.01
    t = transition_of(steps, loss, plateau)
    halfway = steps[np.argmax(loss <= (math.log(2) + 0.01) / 2)]
    assert t.transition_step == halfway and 850 <= halfway <= 950
    stuck = transition_of(steps, early * 0.9 + 0.07, plateau)  # creeps down along ln 2, never drops
    assert stuck.transition_step is None


def test_one_hot_labels_are_their_own_dimensions_and_leave_everything_else_alone():
    """label_encoding="one_hot": the same sequences (items, classes, labels, targets from the same
    seed) with each label in a dimension of its own after the items' D, items zero there."""
    plain, onehot = task_of(), task_of(label_encoding="one_hot")
    a, b = (t.sample_batch(16, t.make_generator(5)) for t in (plain, onehot))
    assert (plain.io.d_input, onehot.io.d_input) == (63, 68)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.context_labels, b.context_labels)
    items = [0, 2, 4]
    assert torch.equal(a.inputs[:, items], b.inputs[:, items, :63]) and not b.inputs[:, items, 63:].any()
    assert not b.inputs[:, [1, 3], :63].any()
    assert torch.equal(b.inputs[:, [1, 3], 63:], torch.eye(5)[b.context_labels])
    with pytest.raises(ConfigError, match="'onehot' is not one of random, one_hot"):
        PairsConfig(label_encoding="onehot")
