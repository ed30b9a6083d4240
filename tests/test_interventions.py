"""The intervention engine does exactly what its spec says, and refuses bad specs."""

import json

import pytest
import torch
from safetensors.torch import save_file

from icl_lab import BurstyConfig, BurstyTask, ModelConfig, build_model, get_preset, load_run, train
from icl_lab.checkpoints import load_model
from icl_lab.config import ConfigError
from icl_lab.run_config import RunConfig
from icl_lab.tasks import make_task
from interventions import (
    Intervention,
    InterventionEngine,
    interventions_from_toml,
    interventions_to_toml,
)

PATTERN = "blocks.1.attn.hook_pattern"


def load_reference(run, step, device):
    return load_model(run, step, device)[0]


@pytest.fixture(scope="module")
def task():
    return BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64), seed=0)


@pytest.fixture
def model(task):
    return build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16), task.io, seed=0, device="cpu")


@pytest.fixture(scope="module")
def batch(task):
    return task.sample_batch(32, torch.Generator().manual_seed(1))


def cached(model, batch, names):
    with torch.no_grad():
        return model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)


def test_clamped_entries_equal_target_and_the_rest_is_untouched(model, task, batch):
    _, plain = cached(model, batch, [PATTERN, "blocks.0.attn.hook_z"])
    spec = Intervention(hook=PATTERN, heads=(1,), query_positions="query", target="induction")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        _, clamped = cached(model, batch, [PATTERN, "blocks.0.attn.hook_z"])
    ideal, defined = task.ideal_attention("induction", batch)
    got, before = clamped[PATTERN], plain[PATTERN]
    T = batch.inputs.shape[1]
    sel = torch.zeros_like(got, dtype=torch.bool)
    sel[:, 1, T - 1, :] = defined[:, T - 1, None]
    assert sel.any()
    assert torch.equal(got[:, 1, T - 1][defined[:, T - 1]], ideal[:, T - 1][defined[:, T - 1]])
    assert torch.equal(got[~sel], before[~sel])  # other heads, rows and undefined sequences
    assert torch.equal(clamped["blocks.0.attn.hook_z"], plain["blocks.0.attn.hook_z"])  # upstream


def test_positions_heads_and_mixing_strength_on_residual_and_z(model, task, batch):
    name = "blocks.0.attn.hook_z"  # [batch, pos, head, d_head]
    _, plain = cached(model, batch, [name])
    spec = Intervention(hook=name, heads=(0,), positions="labels", target="constant", value=2.0, strength=0.25)
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        _, clamped = cached(model, batch, [name])
    labels = task.position_roles()["labels"]
    expected = plain[name].clone()
    expected[:, labels, 0, :] = 0.75 * expected[:, labels, 0, :] + 0.25 * 2.0
    assert torch.allclose(clamped[name], expected, atol=1e-7)
    assert torch.equal(clamped[name][:, :, 1], plain[name][:, :, 1])


def test_zero_mean_and_slice_selectors(model, task, batch):
    name = "blocks.1.hook_resid_pre"
    _, plain = cached(model, batch, [name])
    for target, expect in (("zero", torch.zeros(())), ("mean", plain[name].mean(0, keepdim=True))):
        spec = Intervention(hook=name, positions="0:4:2", target=target)
        with InterventionEngine(model, task, [spec]) as engine:
            engine.set_step(0, "train")
            _, clamped = cached(model, batch, [name])
        got = clamped[name]
        assert torch.allclose(got[:, [0, 2]], expect.expand_as(plain[name])[:, [0, 2]], atol=1e-6)
        assert torch.equal(got[:, [1, 3, 4, 5, 6, 7, 8]], plain[name][:, [1, 3, 4, 5, 6, 7, 8]])


def test_detach_full_pattern_gives_query_key_weights_exactly_zero_gradient(model, task, batch):
    spec = Intervention(hook=PATTERN, target="previous_token", gradient="detach")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        task.loss(model.forward_batch(batch), batch).backward()
    params = model.bridge.state_dict(keep_vars=True)  # TL names -> the Parameters themselves
    for w in ("q", "k"):
        for kind in ("weight", "bias"):
            grad = params[f"blocks.1.attn.{w}.{kind}"].grad
            assert grad is None or torch.count_nonzero(grad) == 0, (w, kind)
    for w in ("v", "o"):
        grad = params[f"blocks.1.attn.{w}.weight"].grad
        assert grad is not None and torch.count_nonzero(grad) > 0, w
    # control: without the clamp the same weights do receive gradient
    model.zero_grad(set_to_none=True)
    task.loss(model.forward_batch(batch), batch).backward()
    assert torch.count_nonzero(params["blocks.1.attn.q.weight"].grad) > 0


def test_through_gradient_is_that_of_the_unclamped_activation(model, task, batch):
    name = "blocks.0.hook_resid_post"
    spec = Intervention(hook=name, target="zero", gradient="through")
    seen = {}

    def grab(act, hook):
        seen["value"] = act.detach().clone()
        return act

    x = batch.inputs.clone().requires_grad_(True)
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", grab)]):
            out = model(x, batch.positions, batch=batch)
        out.sum().backward()
    assert torch.count_nonzero(seen["value"]) == 0  # forward value is the clamped one
    grad_through = x.grad.clone()
    x.grad = None
    model(x, batch.positions, batch=batch).sum().backward()  # unclamped
    assert torch.count_nonzero(grad_through) > 0
    assert not torch.allclose(grad_through, x.grad)  # later layers see other activations...
    # ...but at the clamped hook itself the gradient passes straight through:
    y = torch.randn(4, 9, 16, requires_grad=True)
    hook = InterventionEngine(model, task, [spec])._make_hook(0, name)
    hook(y, None).sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))


def test_strength_zero_is_a_bitwise_no_op(model, task, batch):
    torch.manual_seed(0)
    plain_logits = model.forward_batch(batch)
    task.loss(plain_logits, batch).backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    spec = Intervention(hook=PATTERN, target="induction", strength=0.0, gradient="detach")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        logits = model.forward_batch(batch)
        task.loss(logits, batch).backward()
        assert engine.calls[(0, PATTERN, "train")] == 1  # it fired, and did nothing
    assert torch.equal(logits, plain_logits)
    for n, g in plain_grads.items():
        assert torch.equal(dict(model.named_parameters())[n].grad, g), n


def test_windows_switch_at_exactly_the_configured_steps(model, task, batch):
    specs = [
        Intervention(hook=PATTERN, target="zero", steps=(3, 6), apply="train", name="window"),
        Intervention(hook="blocks.0.hook_resid_post", target="zero", apply="eval", name="eval-only"),
    ]
    active_at = {}
    with InterventionEngine(model, task, specs) as engine:
        for step in range(10):
            engine.set_step(step, "train")
            before = engine.calls[(0, PATTERN, "train")]
            model.forward_batch(batch)
            active_at[step] = engine.calls[(0, PATTERN, "train")] - before
            assert engine.calls[(1, "blocks.0.hook_resid_post", "train")] == 0
        engine.set_step(4, "eval")
        model.forward_batch(batch)
        assert engine.calls[(1, "blocks.0.hook_resid_post", "eval")] == 1
        assert engine.calls[(0, PATTERN, "eval")] == 0
    assert [s for s, n in active_at.items() if n] == [3, 4, 5]
    assert all(len(p.fwd_hooks) == 0 for p in model.bridge.hook_dict.values())  # closed cleanly


def test_layer_pattern_expands_to_every_layer(model, task, batch):
    spec = Intervention(hook="blocks.{layer}.attn.hook_pattern", layers=(0, 1), target="previous_token")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        _, c = cached(model, batch, ["blocks.0.attn.hook_pattern", PATTERN])
    ideal, _ = task.ideal_attention("previous_token", batch)
    for name in c:
        assert torch.equal(c[name], ideal[:, None].expand_as(c[name]))


def test_running_mean_tracks_training_batches(model, task):
    name = "blocks.0.hook_resid_post"
    spec = Intervention(hook=name, target="running_mean", momentum=0.5)
    gen = torch.Generator().manual_seed(3)
    batches = [task.sample_batch(16, gen) for _ in range(3)]
    means = []
    for b in batches:
        _, c = cached(model, b, [name])
        means.append(c[name].mean(0, keepdim=True))
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        for b in batches:
            _, c = cached(model, b, [name])
    expected = 0.5 * (0.5 * means[0] + 0.5 * means[1]) + 0.5 * means[2]
    assert torch.allclose(c[name][0:1], expected, atol=1e-6)


def test_file_target_broadcasts(model, task, batch, tmp_path):
    target = torch.randn(9, 16)  # [pos, d_model]
    save_file({"resid": target}, str(tmp_path / "t.safetensors"))
    spec = Intervention(hook="blocks.1.hook_resid_pre", target="file", file=str(tmp_path / "t.safetensors"), key="resid")
    with InterventionEngine(model, task, [spec]) as engine:
        engine.set_step(0, "train")
        _, c = cached(model, batch, ["blocks.1.hook_resid_pre"])
    assert torch.equal(c["blocks.1.hook_resid_pre"], target.expand(32, 9, 16))


@pytest.mark.parametrize(
    "spec_kw, words",
    [
        (dict(hook="blocks.1.attn.hook_patern"), ["hook_patern", "blocks.1.attn.hook_pattern"]),
        (dict(hook=PATTERN, heads=(2,)), ["heads [2]", "2 heads", "[batch, 2, 9, 9]"]),
        (dict(hook=PATTERN, query_positions=(9,)), ["[9]", "9 positions", "[batch, 2, 9, 9]"]),
        (dict(hook=PATTERN, query_positions="queries"), ["queries", "query", "labels"]),
        (dict(hook="blocks.0.hook_resid_post", target="induction"), ["induction", "hook_pattern"]),
        (dict(hook="blocks.0.hook_resid_post", heads=(0,)), ["no head axis"]),
        (dict(hook=PATTERN, positions="labels"), ["query_positions"]),
        (dict(hook=PATTERN, target="checkpoint", checkpoint_run="/nonexistent/run"), ["/nonexistent/run", "not a run directory"]),
    ],
)
def test_bad_specs_are_refused_with_names_and_shapes(model, task, spec_kw, words):
    with pytest.raises(ConfigError) as err:
        InterventionEngine(model, task, [Intervention(**spec_kw)], load_reference=load_reference)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_target_that_cannot_broadcast_is_refused_with_both_shapes(model, task, tmp_path):
    save_file({"t": torch.randn(5, 16)}, str(tmp_path / "t.safetensors"))
    spec = Intervention(hook="blocks.1.hook_resid_pre", target="file", file=str(tmp_path / "t.safetensors"))
    with pytest.raises(ConfigError, match=r"\[5, 16\].*\[batch, 9, 16\]"):
        InterventionEngine(model, task, [spec])


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(target="ones"), ["ones", "Valid targets", "zero"]),
        (dict(gradient="stop"), ["stop", "detach", "through"]),
        (dict(strength=1.5), ["strength", "1.5"]),
        (dict(steps=(5, 5)), ["[5, 5)"]),
        (dict(hook="blocks.{layer}.attn.hook_pattern"), ["layers"]),
        (dict(query_positions="1:x"), ["1:x", "slice"]),
    ],
)
def test_spec_syntax_errors(kw, words):
    base = dict(hook=PATTERN)
    base.update(kw)
    with pytest.raises(ConfigError) as err:
        Intervention(**base)
    for word in words:
        assert word in str(err.value)


def test_round_trips_through_dict_toml_and_run_config():
    specs = [
        Intervention(hook="blocks.{layer}.attn.hook_pattern", layers=(0,), heads=(1,), query_positions="labels", target="previous_token", steps=(0, 500), name="prev"),
        Intervention(hook="blocks.1.hook_resid_pre", positions=(0, 2), target="constant", value=0.5, strength=0.3, gradient="through", apply="eval"),
    ]
    assert [Intervention.from_dict(s.to_dict()) for s in specs] == specs
    text = interventions_to_toml(specs)
    assert "[[intervention]]" in text
    assert interventions_from_toml(text) == specs
    config = RunConfig(task="bursty", task_config=BurstyConfig(), interventions=tuple(specs))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_toml_errors_name_the_file_and_table():
    with pytest.raises(ConfigError, match=r"f.toml: intervention #2.*strenght"):
        interventions_from_toml('[[intervention]]\nhook = "x"\n[[intervention]]\nhook = "y"\nstrenght = 1\n', source="f.toml")
    with pytest.raises(ConfigError, match="f.toml: not valid TOML"):
        interventions_from_toml("[[intervention]\n", source="f.toml")


def test_training_with_a_clamp_and_a_checkpoint_target(tmp_path, tiny_run_config):
    base = tiny_run_config.with_overrides({"train.steps": 10, "train.eval_every": 5})
    train(base, tmp_path / "ref", progress=False)
    specs = (
        Intervention(hook=PATTERN, heads=(0,), query_positions="query", target="induction", name="ind"),
        Intervention(hook="blocks.0.attn.hook_pattern", heads=(1,), target="checkpoint", checkpoint_run=str(tmp_path / "ref"), name="graft"),
    )
    import dataclasses

    clamped = dataclasses.replace(base, interventions=specs)
    result = train(clamped, tmp_path / "clamped", progress=False)
    calls = result.summary["intervention_calls"]
    assert all(c["train"] == 10 and c["eval"] >= 3 for c in calls.values()), calls
    run = load_run(tmp_path / "clamped")
    assert run.config.interventions[0].target == "induction"
    # the clamp held at evaluation: layer-1 head 0 scores a perfect induction score
    assert run.curve("induction_score.L1H0")["value"].to_list() == pytest.approx([1.0] * 3)
    assert all(not p.fwd_hooks for p in result.model.bridge.hook_dict.values())  # engine closed


def test_every_accepted_hook_changes_the_output_and_the_rest_are_refused():
    """Clamp each hook the small model fires to a constant far from its activation: either
    the output changes, or the engine refused the hook up front (never a silent no-op)."""
    cfg = get_preset("bursty", "small").config
    task = make_task("bursty", cfg.task_config, seed=0, device="cpu")
    model = build_model(cfg.model, task.io, seed=1, device="cpu")
    batch = task.sample_batch(4, task.make_generator(1))
    names = model.hook_names()
    with torch.no_grad():
        plain, cache = model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)
    refused = {}
    for name in names:
        far = 10.0 * (cache[name].abs().max().item() + 1.0)
        try:
            engine = InterventionEngine(model, task, [Intervention(hook=name, target="constant", value=far)])
        except ConfigError as err:
            refused[name] = str(err)
            continue
        with engine, torch.no_grad():
            engine.set_step(0, "eval")
            assert not torch.equal(model.forward_batch(batch), plain), name
    scores = [f"blocks.{layer}.attn.hook_attn_scores" for layer in (0, 1)]
    assert sorted(refused) == sorted([*scores, "pos_embed.hook_in"]), refused
    for name in scores:
        assert "after the softmax" in refused[name] and name.replace("attn_scores", "pattern") in refused[name]
    assert "int64" in refused["pos_embed.hook_in"]
    # hooks TL declares but that do not fire here are refused with the reason
    for name, words in (
        ("blocks.0.attn.hook_result", ["switched off", "set_use_attn_result"]),
        ("blocks.0.attn.hook_hidden_states", ["never fires"]),
    ):
        with pytest.raises(ConfigError) as err:
            InterventionEngine(model, task, [Intervention(hook=name)])
        assert all(word in str(err.value) for word in words), str(err.value)
    assert model.bridge.list_hooks() == {}  # the refusals' probes left nothing behind


def test_checkpoint_target_needs_an_injected_loader(model, task):
    spec = Intervention(hook=PATTERN, target="checkpoint", checkpoint_run="/some/run")
    with pytest.raises(ConfigError, match="load_reference"):
        InterventionEngine(model, task, [spec])


def test_running_mean_state_round_trips_under_string_keys(model, task, batch):
    name = "blocks.0.hook_resid_post"
    specs = [Intervention(hook=name, target="zero", apply="eval"), Intervention(hook=name, target="running_mean")]
    _, c = cached(model, batch, [name])
    with InterventionEngine(model, task, specs) as engine:
        engine.set_step(0, "train")
        model.forward_batch(batch)
        state = engine.running_means_state()
    assert list(state) == [f"1|{name}"]
    assert torch.allclose(state[f"1|{name}"], c[name].mean(0, keepdim=True), atol=1e-6)
    with InterventionEngine(model, task, specs) as fresh:
        fresh.load_running_means_state(state)
        assert fresh.running_means().keys() == {(1, name)}
        assert torch.equal(fresh.running_means()[(1, name)], state[f"1|{name}"])
        with pytest.raises(ValueError, match=r"'7\|x'"):
            fresh.load_running_means_state({"7|x": state[f"1|{name}"]})
