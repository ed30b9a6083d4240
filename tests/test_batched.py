"""A member trained in a group equals its config trained alone with train()."""

import dataclasses

import numpy as np
import pytest
import torch

from icl_lab import load_run, train
from icl_lab.batched import train_group
from icl_lab.config import ConfigError
from icl_lab.store import checkpoint_steps, load_checkpoint, load_metrics, load_training_state, read_json
from interventions import Intervention
from test_resume import crash_at_evaluation

# vmap reorders float32 reductions: metrics agree to ~1e-7 relative on CPU; we allow 1e-5
# (plus 1e-6 absolute for values near 0). An accuracy differing by one sequence is 1/64 off.
RTOL, ATOL = 1e-5, 1e-6
INDUCTION_CLAMP = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction")


def group_configs(base):
    base = base.with_overrides({"train.steps": 36, "train.eval_every": 4, "train.checkpoint_every": 12})
    base = dataclasses.replace(base, track=("icl_accuracy", "train_loss"))
    return [
        base,
        base.with_overrides({"seed": 4, "task.burstiness": 4}),  # a task parameter that keeps the shapes
        dataclasses.replace(base, seed=5, interventions=(INDUCTION_CLAMP,)),
        base.with_overrides({"seed": 6, "train.lr": 3e-3, "train.weight_decay": 0.1, "train.optimizer": "adamw", "train.grad_clip": 0.5}),
    ]


def metric_table(run_dir):
    frame = load_metrics(run_dir).sort(["step", "metric"])
    return frame["step"].to_list(), frame["metric"].to_list(), frame["value"].to_numpy()


@pytest.mark.slow
def test_each_member_equals_its_single_run(tmp_path, tiny_run_config):
    configs = group_configs(tiny_run_config)
    grouped = train_group(configs, [tmp_path / f"member{i}" for i in range(len(configs))])
    for i, (config, member) in enumerate(zip(configs, grouped)):
        alone = train(config, tmp_path / f"alone{i}", progress=False)
        assert read_json(member.run_dir / "config.json")["seed"] == config.seed
        assert load_run(member.run_dir).status["state"] == "done"
        # same initial weights, bit for bit; trained weights within the tolerance
        assert load_checkpoint(member.run_dir, 0).keys() == load_checkpoint(alone.run_dir, 0).keys()
        for name, tensor in load_checkpoint(alone.run_dir, 0).items():
            assert torch.equal(load_checkpoint(member.run_dir, 0)[name], tensor), name
        for name, tensor in load_checkpoint(alone.run_dir, 36).items():
            # A key bias adds a constant to a query's scores, which the softmax removes: its exact
            # gradient is 0, and Adam turns the rounding noise of that 0 into lr-sized steps in
            # either run. It cannot change the output; every other weight must agree.
            if not name.endswith("attn.k.bias"):
                torch.testing.assert_close(load_checkpoint(member.run_dir, 36)[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
        # same data stream and training state
        ours, theirs = load_training_state(member.run_dir, 36), load_training_state(alone.run_dir, 36)
        assert torch.equal(ours.data_generator, theirs.data_generator)
        assert torch.equal(ours.torch_rng, theirs.torch_rng)
        assert ours.eval_steps == theirs.eval_steps and ours.intervention_calls == theirs.intervention_calls
        # every metric at every evaluation
        steps, names, values = metric_table(member.run_dir)
        alone_steps, alone_names, alone_values = metric_table(alone.run_dir)
        assert (steps, names) == (alone_steps, alone_names)
        assert len(set(steps)) == 10 and "train_loss" in names and "lr" in names
        np.testing.assert_allclose(values, alone_values, rtol=RTOL, atol=ATOL, err_msg=f"member {i}")
        for metric in config.track:
            assert member.summary["transitions"][metric]["transition_step"] == alone.summary["transitions"][metric]["transition_step"]
        assert member.summary.get("intervention_calls") == alone.summary.get("intervention_calls")
    assert grouped[2].summary["intervention_calls"]  # the clamp fired in its member
    # the members really differ (seed, clamp, optimiser), so the agreement above is per member
    finals = [metric_table(m.run_dir)[2] for m in grouped]
    assert all(not np.allclose(finals[0], other) for other in finals[1:])


def test_a_member_of_a_crashed_group_resumes_alone(tmp_path, tiny_run_config, monkeypatch):
    config = tiny_run_config.with_overrides({"train.steps": 20, "train.eval_every": 3, "train.checkpoint_every": 5})
    configs = [config, config.with_overrides({"seed": 9, "train.lr": 2e-3})]
    train(configs[1], tmp_path / "whole", progress=False)
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 9)  # 2 members: evaluations 0, 3, 6, 9 pass; member 0 at 12 crashes
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_group(configs, [tmp_path / "a", tmp_path / "b"])
    assert [read_json(tmp_path / d / "status.json")["state"] for d in ("a", "b")] == ["failed", "failed"]
    assert checkpoint_steps(tmp_path / "b")[-1] == 10
    train(configs[1], tmp_path / "b", progress=False, resume=True)
    steps, names, values = metric_table(tmp_path / "b")
    whole = metric_table(tmp_path / "whole")
    assert (steps, names) == whole[:2]
    np.testing.assert_allclose(values, whole[2], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("override, field", [
    ({"model.d_model": 32}, "model.d_model"),
    ({"model.n_heads": 4}, "model.n_heads"),
    ({"train.batch_size": 8}, "train.batch_size"),
    ({"train.steps": 13}, "train.steps"),
])
def test_refuses_members_with_other_shapes(tmp_path, tiny_run_config, override, field):
    with pytest.raises(ConfigError, match=rf"member 1 has {field}=.*member 0 has {field}="):
        train_group([tiny_run_config, tiny_run_config.with_overrides(override)], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_refuses_task_parameters_that_change_the_inputs(tmp_path, tiny_run_config):
    other = tiny_run_config.with_overrides({"task.dim": 17, "task.burstiness": 4})
    with pytest.raises(ConfigError, match=r"d_input=17 but member 0's gives d_input=15 .*task.dim"):
        train_group([tiny_run_config, other], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


def test_refuses_a_clamp_with_state_of_its_own(tmp_path, tiny_run_config):
    running = Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean")
    with pytest.raises(ConfigError, match="member 1: intervention .*'running_mean'.*train\\(\\)"):
        train_group([tiny_run_config, dataclasses.replace(tiny_run_config, interventions=(running,))], [tmp_path / "a", tmp_path / "b"])


def test_refuses_two_members_in_one_directory(tmp_path, tiny_run_config):
    with pytest.raises(ConfigError, match="members 0 and 1 both write to"):
        train_group([tiny_run_config, tiny_run_config], [tmp_path / "a", tmp_path / "a"])
