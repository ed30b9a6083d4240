"""`icl_lab.load_run`: a stored run read back, its model at any checkpoint with its clamps, checked
against calculations made here (the stored metrics recomputed from the loaded model, the ideal
pattern a clamp writes) rather than against the code that wrote them."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from icl_lab import RunConfig, load_run, train
from icl_lab.config import ConfigError
from icl_lab.store import RunError
from interventions import Intervention

PATTERN = "blocks.1.attn.hook_pattern"


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A tiny bursty run: evaluations at 0, 4, 8, 12; checkpoints at 0, 5, 10, 12."""
    from icl_lab import BurstyConfig, ModelConfig, TrainConfig

    config = RunConfig(
        task="bursty", task_config=BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64),
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16), train=TrainConfig(steps=12, batch_size=16, eval_every=4, checkpoint_every=5),
        measures=("icl_accuracy", "eval_loss"), track=("icl_accuracy",), seed=3, device="cpu", preset="tiny",
    )
    out = tmp_path_factory.mktemp("load") / "run"
    train(config, out, progress=False)
    return config, out


def stored(run, metric: str, step: int) -> float:
    curve = run.curve(metric)
    return curve.filter(curve["step"] == step)["value"].item()


def test_a_run_reads_back_with_its_config_metrics_and_checkpoints(stored_run):
    config, out = stored_run
    run = load_run(out)
    assert isinstance(run.config, RunConfig) and run.config == config
    assert run.record["seed"] == 3 and "created" in run.record and "versions" in run.record
    assert run.checkpoint_steps == [0, 5, 10, 12]
    assert run.summary["final_step"] == 12 and run.status["state"] == "done"
    assert sorted(run.metrics["step"].unique().to_list()) == [0, 4, 8, 12]


@pytest.mark.parametrize("step", [0, None])  # None: the newest checkpoint, 12
def test_the_loaded_model_reproduces_the_stored_accuracy_and_loss(stored_run, step):
    _, out = stored_run
    run = load_run(out)
    with run.model(step) as m:
        assert m.step == (12 if step is None else step) and m.engine is None
        batch = m.task.eval_sets()["icl"]
        with torch.no_grad():
            logits = m.model.forward_batch(batch)
        accuracy = (logits.argmax(-1) == batch.targets).double().mean().item()
        loss = F.cross_entropy(logits.double(), batch.targets).item()
    assert accuracy == pytest.approx(stored(run, "icl_accuracy", m.step), abs=1e-12)
    assert loss == pytest.approx(stored(run, "icl_loss", m.step), rel=1e-5)


def test_a_missing_step_is_refused_in_one_line_listing_the_steps(stored_run):
    _, out = stored_run
    with pytest.raises(RunError) as err:
        load_run(out).model(7)
    assert str(err.value) == f"{out} has no checkpoint at step 7; steps: [0, 5, 10, 12]"


def test_a_clamped_runs_model_comes_back_with_its_clamp(stored_run, tmp_path):
    config, _ = stored_run
    spec = Intervention(hook=PATTERN, heads=(0,), query_positions="query", target="induction", name="ind")
    clamped = dataclasses.replace(config, interventions=(spec,), measures=("icl_accuracy",))
    train(clamped, tmp_path / "clamped", progress=False)
    run = load_run(tmp_path / "clamped")
    assert run.config.interventions == (spec,)
    m = run.model()
    batch = m.task.eval_sets()["icl"]
    ideal, defined = m.task.ideal_attention("induction", batch)  # [batch, query, key], [batch, query]
    assert defined[:, -1].all()
    with torch.no_grad():
        _, cache = m.model.run_with_cache(batch.inputs, batch.positions, names=[PATTERN], batch=batch)
    query_row = cache[PATTERN][:, 0, -1]  # head 0 at the query: [batch, key]
    assert torch.allclose(query_row, ideal[:, -1].to(query_row.dtype), atol=1e-6)
    m.close()  # without the clamp, the trained head's own pattern is not the ideal one
    with torch.no_grad():
        _, cache = m.model.run_with_cache(batch.inputs, batch.positions, names=[PATTERN], batch=batch)
    assert not torch.allclose(cache[PATTERN][:, 0, -1], ideal[:, -1].to(query_row.dtype), atol=1e-3)


def test_run_config_reads_a_config_json_past_what_the_run_recorded_beside_it(stored_run):
    config, out = stored_run
    record = json.loads((out / "config.json").read_text())
    assert {"created", "versions", "git", "device_description", "resolved_device"} <= set(record)
    assert RunConfig.from_dict(record) == config
    assert RunConfig.from_dict({**record, "extended": [{"from": 12, "to": 20}]}) == config
    with pytest.raises(ConfigError, match="unknown key 'sead'.*Did you mean 'seed'"):
        RunConfig.from_dict({**record, "sead": 4})
