"""train.forward='lean' and train.last_position_only: the same function as TL4's bridge.

The lean forward (icl_lab/lean_forward.py) must give the bridge's logits and gradients bit for
bit, and every hook point must see the bridge's tensor and change the output as it does under
the bridge (checked by editing each one in turn). The last-position cut must leave the loss's
logits as they were and refuse clamps on the hooks it cuts.
"""

from __future__ import annotations

import pytest
import torch

from icl_lab import ConfigError, get_preset, train
from icl_lab.last_position import cut_hook_names, cut_to_last_position, install
from icl_lab.lean_forward import LeanForward, lean_covers, lean_training
from icl_lab.models import build_model, install_speedups
from icl_lab.run_config import RunConfig
from icl_lab.tasks import make_task
from icl_lab.train.training_run import TrainingRun
from interventions.spec import Intervention

# no normalization + learned positions; LayerNorm + rotary; ReLU MLP on tokens; Reddy's MLP readout
PRESETS = ["bursty/small", "pairs/cpu", "modular/cpu", "bursty/reddy"]


def model_and_batch(preset: str):
    install_speedups()
    task_name, name = preset.split("/")
    config = get_preset(task_name, name).config
    task = make_task(config.task, config.task_config, seed=0, device="cpu")
    model = build_model(config.model, task.io, seed=1, device="cpu")
    batch = task.sample_batch(8, task.make_generator(0))
    positions = None if batch.positions is None else batch.positions[:8]
    return model, batch.inputs[:8], positions


def forward_and_grads(model, inputs, positions, lean=None, hooks=()):
    model.zero_grad(set_to_none=True)
    with model.hooks(fwd_hooks=list(hooks)):
        if lean is None:
            out = model(inputs, positions)
        else:
            with lean_training(model, lean, cut=False):
                out = model(inputs, positions)
    out.double().pow(2).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("preset", PRESETS)
def test_lean_forward_is_the_bridge_bit_for_bit_at_every_hook(preset):
    model, inputs, positions = model_and_batch(preset)
    assert lean_covers(model) is None
    lean = LeanForward(model)
    out, grads = forward_and_grads(model, inputs, positions)
    lean_out, lean_grads = forward_and_grads(model, inputs, positions, lean)
    assert torch.equal(out, lean_out)
    assert grads.keys() == lean_grads.keys() and all(torch.equal(grads[k], lean_grads[k]) for k in grads)
    for name in model.hook_names():
        seen = {}
        for use in (None, lean):
            def record(act, hook, use=use, seen=seen):
                seen[use] = act.detach().clone()
                return act
            forward_and_grads(model, inputs, positions, use, [(name, record)])
        assert torch.equal(seen[None], seen[lean]), f"{name}: the lean forward shows this hook another tensor"
        if not seen[None].is_floating_point():
            continue
        edit = (name, lambda act, hook: act * 1.5 + 0.1)
        with pytest.warns(UserWarning) if name.endswith("hook_attn_scores") else _no_check():
            edited, _ = forward_and_grads(model, inputs, positions, None, [edit])
        lean_edited, _ = forward_and_grads(model, inputs, positions, lean, [edit])
        assert torch.equal(edited, lean_edited), f"{name}: editing this hook changes the output otherwise under the lean forward"
        if not name.endswith("hook_attn_scores"):  # the one hook TL4 discards: both ignore the edit
            assert not torch.equal(edited, out), f"{name}: the edit should change the output"


class _no_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lean_refuses_a_model_it_does_not_cover_naming_why():
    config = get_preset("digits", "cpu").config.with_overrides({"device": "cpu", "train.forward": "lean"})
    with pytest.raises(ConfigError, match=r"the lean forward .* cannot run this model: .*model.arch='transformer'"):
        TrainingRun(config, torch.device("cpu"))
    assert TrainingRun(config.with_overrides({"train.forward": "auto"}), torch.device("cpu")).lean is None  # auto: the bridge


def test_auto_is_the_default_and_takes_the_lean_forward_where_it_covers_the_model():
    config = get_preset("bursty", "small").config.with_overrides({"device": "cpu"})
    assert config.train.forward == "auto"
    assert TrainingRun(config, torch.device("cpu")).lean is not None
    assert TrainingRun(config.with_overrides({"train.forward": "bridge"}), torch.device("cpu")).lean is None


def short_bursty(**overrides) -> RunConfig:
    return get_preset("bursty", "small").config.with_overrides(
        {"device": "cpu", "train.steps": 40, "train.eval_every": 20, "train.checkpoint_every": 20,
         "train.checkpoints_per_decade": 0, **overrides})


def test_a_lean_run_equals_a_bridge_run_exactly(tmp_path):
    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")
    runs = {}
    for forward in ("bridge", "lean"):
        config = short_bursty(**{"train.forward": forward})
        config = RunConfig.from_dict({**config.to_dict(), "interventions": [clamp.to_dict()]})
        runs[forward] = train(config, tmp_path / forward, progress=False)
    assert runs["bridge"].metrics.equals(runs["lean"].metrics)
    assert runs["bridge"].summary["intervention_calls"] == runs["lean"].summary["intervention_calls"]


@pytest.mark.parametrize("preset", ["modular/cpu", "bursty/small"])
def test_the_last_position_cut_keeps_the_logits_the_loss_reads(preset):
    model, inputs, positions = model_and_batch(preset)
    block = install(model)
    full = model(inputs, positions)
    with cut_to_last_position(block):
        cut = model(inputs, positions)
    torch.testing.assert_close(cut, full, rtol=1e-6, atol=1e-6)
    lean = LeanForward(model)
    with lean_training(model, lean, cut=True):
        lean_cut = model(inputs, positions)
    torch.testing.assert_close(lean_cut, full, rtol=1e-6, atol=1e-6)
    names = cut_hook_names(model)
    layer = model.config.n_layers - 1
    assert f"blocks.{layer}.hook_resid_post" in names and "hook_unembed" in names
    assert f"blocks.{layer}.attn.hook_pattern" not in names and f"blocks.{layer}.hook_resid_pre" not in names


def test_the_last_position_cut_refuses_a_clamp_on_a_hook_it_cuts():
    config = get_preset("modular", "cpu").config.with_overrides({"device": "cpu", "train.last_position_only": True})
    spec = Intervention(hook="blocks.0.hook_mlp_out", target="zero")
    config = RunConfig.from_dict({**config.to_dict(), "interventions": [spec.to_dict()]})
    with pytest.raises(ConfigError, match=r"hooks blocks.0.hook_mlp_out, which train.last_position_only computes at the last position only"):
        TrainingRun(config, torch.device("cpu"))
