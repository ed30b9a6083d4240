"""Disk per run: view-only checkpoints are weights only, the two newest training states stay,
and resume and the attention view still work on what is left."""

from __future__ import annotations

import torch

from icl_lab import extend, get_preset, train
from icl_lab.checkpoints import load_model
from icl_lab.run_config import RunConfig
from icl_lab.store import checkpoint_steps, intact_state_steps, load_checkpoint, paths
from interventions.spec import Intervention


def config(steps: int = 40, **more) -> RunConfig:
    return get_preset("bursty", "small").config.with_overrides(
        {"device": "cpu", "train.steps": steps, "train.eval_every": 5, "train.checkpoint_every": 10,
         "train.checkpoints_per_decade": 3, **more})


def test_view_only_checkpoints_are_weights_and_only_the_newest_states_stay(tmp_path):
    run = train(config(), tmp_path / "run", progress=False)
    steps = checkpoint_steps(run.run_dir)
    assert steps == [0, 1, 2, 5, 10, 20, 22, 30, 40]  # the grid every 10, and 1, 2, 5, 22 (3 a decade)
    assert intact_state_steps(run.run_dir)[0] == [30, 40]
    p = paths(run.run_dir)
    for step in steps:  # every checkpoint keeps its weights; no state file is left without its record
        assert p.weights(step).exists()
        assert p.state_tensors(step).exists() == (step in (30, 40)) == p.state_record(step).exists()
    model, _, _ = load_model(run.run_dir, 5)  # what the attention view reads
    assert torch.equal(model.checkpoint_state()["bridge.blocks.0.attn.q.weight"], load_checkpoint(run.run_dir, 5)["bridge.blocks.0.attn.q.weight"])


def test_a_run_extended_from_its_kept_state_equals_one_trained_straight(tmp_path):
    straight = train(config(40), tmp_path / "straight", progress=False)
    train(config(20), tmp_path / "extended", progress=False)
    extended = extend(tmp_path / "extended", 40, progress=False)
    assert extended.metrics.equals(straight.metrics)
    a, b = load_checkpoint(straight.run_dir, 40), load_checkpoint(extended.run_dir, 40)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert intact_state_steps(extended.run_dir)[0] == [30, 40]


def test_a_run_with_a_running_mean_clamp_keeps_every_state(tmp_path):
    spec = Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean")
    cfg = RunConfig.from_dict({**config(20).to_dict(), "interventions": [spec.to_dict()]})
    run = train(cfg, tmp_path / "run", progress=False)
    assert intact_state_steps(run.run_dir)[0] == checkpoint_steps(run.run_dir)
