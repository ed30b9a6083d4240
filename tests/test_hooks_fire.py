"""Every TransformerLens hook point of the model fires on every training step of the trainer,
and the model's speed-ups (icl_lab/models.py) compute bitwise what TL's own code computes.

The speed-ups must never skip a hook point: clamps, caches and users' hooks read them by their
TL names. Hooks are added to every hook point of the bridge through the model that `train`
builds, then a short `train` call runs; each hook point must fire exactly once per training step
(the forwards with gradients on), with the shape its TL name stands for, and the residual-stream
and attention hooks must fire backward too.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformer_lens.model_bridge.sources.native.model import NativeAttention

import icl_lab.models
from icl_lab import train
from icl_lab.tasks import make_task

# Declared by TL4 on this architecture but never fired by a native attention-only model fed
# vectors: the token embedding's input (our input map replaces the token lookup) and the
# attention module's unused hidden-states point. Switch-gated points (hook_result, hook_*_input,
# hook_attn_in, hook_mlp_in) fire only once their `set_use_*` switch is on.
NEVER_FIRED = {"embed.hook_in", "blocks.0.attn.hook_hidden_states", "blocks.1.attn.hook_hidden_states"}
BACKWARD = [f"blocks.{layer}.{name}" for layer in (0, 1) for name in (
    "hook_resid_pre", "hook_resid_post", "hook_attn_out",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_pattern",
)] + ["hook_embed", "hook_pos_embed", "hook_unembed"]


def expected_shape(name: str, batch: int, config, io) -> tuple[int, ...]:
    """The shape TL's naming gives each hook point (TransformerLens conventions)."""
    m = config.model
    T = io.seq_len
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        return (batch, m.n_heads, T, T)
    per_head = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
                "attn.q.hook_out", "attn.k.hook_out", "attn.v.hook_out", "attn.o.hook_in")
    if name.endswith(per_head):
        return (batch, T, m.n_heads, m.head_dim)
    if name in ("hook_unembed", "unembed.hook_out"):
        return (batch, T, io.n_outputs)
    if name == "pos_embed.hook_in":  # position indices
        return (batch, T)
    return (batch, T, m.d_model)


@pytest.fixture
def hooked_training(tmp_path, tiny_run_config, monkeypatch):
    """Train 3 steps with a counting forward hook on every hook name of the bridge, and a
    counting backward hook on BACKWARD; the model, the counts and the shapes seen."""
    fwd: Counter = Counter()
    bwd: Counter = Counter()
    shapes: dict[str, set] = {}
    built = []
    real_build = icl_lab.models.build_model

    def build_with_hooks(*args, **kwargs):
        model = real_build(*args, **kwargs)
        for name in model.bridge.hook_dict:
            def count(act, hook, name=name):
                if torch.is_grad_enabled():  # a training step (evaluations run without gradients)
                    fwd[name] += 1
                    shapes.setdefault(name, set()).add(tuple(act.shape))
            model.hook_point(name).add_hook(count, dir="fwd", is_permanent=True)
        for name in BACKWARD:
            def count_grad(grad, hook, name=name):
                bwd[name] += 1
            model.hook_point(name).add_hook(count_grad, dir="bwd", is_permanent=True)
        built.append(model)
        return model

    monkeypatch.setattr(icl_lab.models, "build_model", build_with_hooks)
    config = tiny_run_config.with_overrides({"train.steps": 3, "train.eval_every": 3, "train.checkpoint_every": 0})
    result = train(config, tmp_path / "run", progress=False)
    assert built == [result.model], "train() did not build its model through icl_lab.models.build_model"
    return config, result, fwd, bwd, shapes


def test_every_hook_point_fires_once_per_training_step(hooked_training):
    config, result, fwd, _, shapes = hooked_training
    bridge = result.model.bridge
    steps = config.train.steps
    should_fire = {n for n in bridge.hook_dict if bridge._gated_hook_reason(n) is None} - NEVER_FIRED
    # the hand-written core of TL's names is among them (the bridge did not lose any)
    core = {f"blocks.{layer}.{name}" for layer in (0, 1) for name in (
        "hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_q", "attn.hook_k",
        "attn.hook_v", "attn.hook_z", "attn.hook_pattern", "attn.hook_attn_scores")}
    assert core | {"hook_embed", "hook_pos_embed", "hook_unembed"} <= should_fire
    assert len(should_fire) == 56
    counts = {name: fwd[name] for name in should_fire}
    assert counts == {name: steps for name in should_fire}, "hook points skipped or fired twice in a training step"
    assert not any(fwd[name] for name in NEVER_FIRED)
    io = result.task.io
    for name in should_fire:
        assert shapes[name] == {expected_shape(name, config.train.batch_size, config, io)}, name


def test_backward_hooks_fire_once_per_training_step(hooked_training):
    config, _, _, bwd, _ = hooked_training
    assert {name: bwd[name] for name in BACKWARD} == {name: config.train.steps for name in BACKWARD}


def test_hooks_see_the_activations_the_model_computes(tiny_run_config, tiny_task_config):
    """A hook that changes an activation changes the logits exactly as the same change made
    by hand downstream of it: the hook point is on the path, not a side copy."""
    task = make_task("bursty", tiny_task_config, seed=0, device="cpu")
    model = icl_lab.models.build_model(tiny_run_config.model, task.io, seed=1, device="cpu")
    batch = task.sample_batch(8, task.make_generator(2))
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.1.hook_resid_post"])
        resid = cache["blocks.1.hook_resid_post"]
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: act * 2.0)]):
            doubled = model.forward_batch(batch)
    unembed = model.bridge.unembed.original_component
    assert torch.allclose(doubled, unembed(2.0 * resid)[:, -1], atol=1e-5)


@pytest.mark.parametrize("model_overrides", [{}, {"model.positional": "rotary", "model.normalization": "LN"}])
def test_attention_speed_up_is_bitwise_tl(tiny_run_config, model_overrides):
    """Logits and every gradient with `_attention_without_remask` equal TL's NativeAttention
    forward bit for bit, with and without a hook that edits the pattern."""
    assert icl_lab.models.TL_ATTENTION_MATCHES, (
        "TL's NativeAttention.forward changed: compare icl_lab.models._attention_without_remask "
        "with it line by line, then update _TL_ATTENTION_SHA")
    config = tiny_run_config.with_overrides(model_overrides)
    task = make_task("bursty", config.task_config, seed=0, device="cpu")
    model = icl_lab.models.build_model(config.model, task.io, seed=1, device="cpu")
    attentions = [m for m in model.modules() if type(m) is NativeAttention]
    assert len(attentions) == config.model.n_layers and all("forward" in vars(m) for m in attentions)
    batch = task.sample_batch(16, task.make_generator(2))

    def run(fwd_hooks):
        model.zero_grad(set_to_none=True)
        with model.hooks(fwd_hooks=fwd_hooks):
            logits = model.forward_batch(batch)
        F.cross_entropy(logits, batch.targets).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    halve = [("blocks.1.attn.hook_pattern", lambda pattern, hook: pattern * 0.5)]
    results = {}
    for name, hooks in (("plain", []), ("halved", halve)):
        ours = run(hooks)
        fast = [vars(m).pop("forward") for m in attentions]  # back to TL's class forward
        try:
            theirs = run(hooks)
        finally:
            for m, forward in zip(attentions, fast):
                m.forward = forward
        assert torch.equal(ours[0], theirs[0]), name
        assert ours[1].keys() == theirs[1].keys() and len(ours[1]) >= 10
        assert all(torch.equal(ours[1][n], theirs[1][n]) for n in ours[1]), name
        results[name] = ours[0]
    assert not torch.allclose(results["plain"], results["halved"])  # the hook acts inside the attention
