"""TL4 native models: every hook fires, gradients reach the input map, checkpoints round-trip."""

import pytest
import torch

from icl_lab import MODEL_PRESETS, BurstyConfig, BurstyTask, ModelConfig, build_model


@pytest.fixture(scope="module")
def task():
    return BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, eval_size=32, position_slots=20), seed=0)


@pytest.mark.parametrize("preset", sorted(p for p, c in MODEL_PRESETS.items() if c.arch == "transformer"))
def test_presets_build_and_every_hook_fires(task, preset):
    model = build_model(MODEL_PRESETS[preset], task.io, seed=0, device="cpu")
    batch = task.sample_batch(4, torch.Generator().manual_seed(0))
    logits, cache = model.run_with_cache(batch.inputs, batch.positions)
    assert logits.shape == (4, task.config.num_labels)
    cfg = MODEL_PRESETS[preset]
    T = task.config.seq_len
    must = {
        "hook_embed": (4, T, cfg.d_model),
        "blocks.0.hook_resid_pre": (4, T, cfg.d_model),
        "blocks.1.hook_resid_post": (4, T, cfg.d_model),
        "blocks.1.attn.hook_pattern": (4, cfg.n_heads, T, T),
        "blocks.0.attn.hook_attn_scores": (4, cfg.n_heads, T, T),
        "blocks.0.attn.hook_z": (4, T, cfg.n_heads, cfg.head_dim),
        "blocks.0.attn.hook_q": (4, T, cfg.n_heads, cfg.head_dim),
        "blocks.1.hook_attn_out": (4, T, cfg.d_model),
    }
    if cfg.positional == "learned":
        must["hook_pos_embed"] = (4, T, cfg.d_model)
    for name, shape in must.items():
        assert name in cache, name
        assert tuple(cache[name].shape) == shape, name
    # every listed hook name fired, and the list holds the TL names users type
    assert set(model.hook_names()) <= set(cache)
    assert {"hook_embed", "blocks.1.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_resid_pre"} <= set(model.hook_names())


def test_residual_stream_is_input_map_plus_position(task):
    model = build_model(MODEL_PRESETS["small"], task.io, seed=0, device="cpu")
    batch = task.sample_batch(3, torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(batch.inputs, batch.positions, names=["blocks.0.hook_resid_pre"])
    expected = batch.inputs @ model.input_map.weight.T + model.bridge.pos_embed.weight[batch.positions]
    assert torch.allclose(cache["blocks.0.hook_resid_pre"], expected, atol=1e-6)


def test_pattern_hook_changes_the_output(task):
    model = build_model(MODEL_PRESETS["small"], task.io, seed=0, device="cpu")
    batch = task.sample_batch(3, torch.Generator().manual_seed(1))
    plain = model(batch.inputs, batch.positions)

    def attend_to_first(pattern, hook):
        out = torch.zeros_like(pattern)
        out[..., 0] = 1
        return out

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", attend_to_first)]):
        hooked = model(batch.inputs, batch.positions)
    assert not torch.allclose(plain, hooked)
    assert torch.allclose(model(batch.inputs, batch.positions), plain)  # hook removed


def test_gradients_reach_every_parameter(task):
    model = build_model(MODEL_PRESETS["reddy"], task.io, seed=0, device="cpu")
    batch = task.sample_batch(8, torch.Generator().manual_seed(2))
    task.loss(model(batch.inputs, batch.positions), batch).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # the bridge's token embedding is unused by continuous inputs
    assert all("embed" in n and "pos" not in n for n in no_grad), no_grad


def test_checkpoint_round_trip(task):
    a = build_model(MODEL_PRESETS["reddy"], task.io, seed=0, device="cpu")
    b = build_model(MODEL_PRESETS["reddy"], task.io, seed=1, device="cpu")
    batch = task.sample_batch(4, torch.Generator().manual_seed(3))
    assert not torch.allclose(a(batch.inputs, batch.positions), b(batch.inputs, batch.positions))
    b.load_checkpoint_state(a.checkpoint_state())
    assert torch.allclose(a(batch.inputs, batch.positions), b(batch.inputs, batch.positions))
    assert all(k.split(".")[0] in ("bridge", "input_map", "readout") for k in a.checkpoint_state())
    assert "bridge.blocks.0.attn.q.weight" in a.checkpoint_state()


def test_same_seed_same_weights(task):
    a = build_model(MODEL_PRESETS["singh"], task.io, seed=4, device="cpu").checkpoint_state()
    b = build_model(MODEL_PRESETS["singh"], task.io, seed=4, device="cpu").checkpoint_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_model_config_is_refused():
    from icl_lab.config import ConfigError

    with pytest.raises(ConfigError, match="normalization='layer'.*none, LN"):
        ModelConfig(normalization="layer")
    with pytest.raises(ConfigError, match="d_model=30.*n_heads=4"):
        ModelConfig(d_model=30, n_heads=4)


@pytest.mark.slow
def test_importing_the_lab_patches_nothing_and_runs_install_the_speedups(tmp_path):
    """Importing icl_lab and icl_lab.models leaves the environment and TransformerLens as they
    were (checked in a fresh process); `install_speedups` (idempotent) replaces TL's
    align_module_device, and the trainer and load_model install it for every run."""
    import subprocess
    import sys

    code = (
        # the libraries first (TL sets TORCHINDUCTOR_CACHE_DIR, polars _RJEM_MALLOC_CONF): what the lab itself does
        "import polars, torch, accelerate, transformer_lens.model_bridge.generalized_components.base as base\n"
        "import os; before = dict(os.environ); original = base.align_module_device\n"
        "import icl_lab, icl_lab.models\n"
        "from accelerate.utils import align_module_device\n"
        "print(dict(os.environ) == before, base.align_module_device is original is align_module_device)\n"
        "icl_lab.models.install_speedups(); icl_lab.models.install_speedups()\n"
        "print(base.align_module_device is icl_lab.models._align_module_device, icl_lab.models.speedups_installed())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "True"]

    from unittest import mock

    import transformer_lens.model_bridge.generalized_components.base as base
    from icl_lab import get_preset, load_run, train
    from icl_lab.models import _align_module_device

    config = get_preset("bursty", "small").config.with_overrides({
        "device": "cpu", "train.steps": 2, "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 16,
        "model.d_model": 16, "train.batch_size": 4, "measures": ["-*", "icl_accuracy"], "track": []})
    for entry_point in (lambda: train(config, tmp_path / "run", progress=False), lambda: load_run(tmp_path / "run").model()):
        with mock.patch.object(base, "align_module_device", "TL's own"):
            entry_point()
            assert base.align_module_device is _align_module_device
