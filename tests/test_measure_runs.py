"""Progress measures live and post hoc on real runs; the digits task, the MLP and `icl-lab measure`."""

import dataclasses
import gzip

import numpy as np
import polars as pl
import pytest
import torch

from icl_lab import ModelConfig, TrainConfig, train
from icl_lab.cli import main
from icl_lab.config import ConfigError
from icl_lab.measures import PROGRESS_SUITE
from icl_lab.models import build_model
from icl_lab.posthoc import measure_run
from icl_lab.presets import PRESETS
from icl_lab.store import load_metrics
from icl_lab.tasks import DigitsConfig, ModularTaskConfig, make_task


def _live_vs_posthoc(run_dir):
    live = load_metrics(run_dir)
    post = measure_run(run_dir, ["progress"], write=False, progress=False)
    joined = post.join(live, on=["step", "metric"], suffix="_live")
    assert joined.height == post.height  # every post-hoc value has its live twin
    return joined


def _assert_agree(joined):
    diff = (joined["value"] - joined["value_live"]).abs()
    scale = joined["value_live"].abs().clip(lower_bound=1.0)
    worst = joined.with_columns((diff / scale).alias("rel")).sort("rel", descending=True).head(3)
    assert (diff / scale).max() < 1e-6, worst


def test_every_progress_measure_live_equals_post_hoc_on_a_bursty_run(tmp_path, tiny_run_config):
    # the bursty model with MLPs, so every measure of the suite (local complexity included) has units
    config = dataclasses.replace(
        tiny_run_config,
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16, attn_only=False, d_mlp=32),
        train=TrainConfig(steps=10, batch_size=16, eval_every=5, checkpoint_every=5),
        measures=("icl_accuracy", "progress"),
    )
    assert set(PROGRESS_SUITE) <= set(config.measures)  # the group is stored expanded
    run = train(config, tmp_path / "bursty", progress=False).run_dir
    joined = _live_vs_posthoc(run)
    families = {m.split(".")[0] for m in joined["metric"].to_list()}
    assert {"alpha", "correlation_traps", "activation_sparsity", "weight_entropy", "local_circuit_complexity",
            "embedding_med", "mi_input", "mi_label", "local_complexity"} <= families
    assert sorted(set(joined["step"].to_list())) == [0, 5, 10]
    _assert_agree(joined)


def test_attention_only_bursty_reference_model_reads_attention_patterns(tmp_path, tiny_run_config):
    config = dataclasses.replace(tiny_run_config, measures=("progress",),
                                 train=TrainConfig(steps=5, batch_size=16, eval_every=5, checkpoint_every=5))
    run = train(config, tmp_path / "attn", progress=False).run_dir
    joined = _live_vs_posthoc(run)
    names = set(joined["metric"].to_list())
    assert "activation_sparsity.blocks.1.attn.hook_pattern" in names
    assert not any(n.startswith("local_complexity") for n in names)  # no ReLU neurons to count
    _assert_agree(joined)


def test_every_progress_measure_live_equals_post_hoc_on_a_grokking_run(tmp_path):
    base = PRESETS["modular"]["cpu"].config
    config = dataclasses.replace(
        base,
        task_config=ModularTaskConfig(p=13, train_fraction=0.5),
        model=dataclasses.replace(base.model, d_model=32, n_heads=2, d_mlp=64),
        train=dataclasses.replace(base.train, steps=20, eval_every=10, checkpoint_every=10),
        measures=("modular_accuracy", "progress"),
        device="cpu",
    )
    run = train(config, tmp_path / "grok", progress=False).run_dir
    joined = _live_vs_posthoc(run)
    families = {m.split(".")[0] for m in joined["metric"].to_list()}
    assert {"alpha", "activation_sparsity", "weight_entropy", "local_circuit_complexity", "embedding_med",
            "mi_input", "local_complexity"} <= families
    _assert_agree(joined)


def test_measure_cli_appends_to_metrics_and_refuses_bad_input(tmp_path, tiny_run_config, capsys):
    config = dataclasses.replace(tiny_run_config, train=TrainConfig(steps=10, batch_size=16, eval_every=5, checkpoint_every=5))
    run = train(config, tmp_path / "r", progress=False).run_dir
    before = (run / "metrics.parquet").read_bytes()
    for argv, needle in [
        (["measure", str(run), "--measures", "htrs"], "Did you mean 'htsr'"),
        (["measure", str(run), "--steps", "7"], "no checkpoint at step 7"),
        (["measure", str(run), "--steps", "x"], "'x' is not a step number"),
        (["measure", str(tmp_path / "nope")], "not a run directory"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err
        assert (run / "metrics.parquet").read_bytes() == before
    assert main(["measure", str(run), "--measures", "htsr,weight_entropy", "--steps", "0,10", "--no-progress"]) == 0
    metrics = load_metrics(run)
    alpha = metrics.filter(pl.col("metric") == "alpha_mean")
    assert alpha["step"].to_list() == [0, 10]
    assert metrics.filter(pl.col("metric") == "icl_accuracy").height == 3  # live rows kept
    # again: replaced, not duplicated
    main(["measure", str(run), "--measures", "htsr", "--steps", "10", "--no-progress"])
    assert load_metrics(run).filter(pl.col("metric") == "alpha_mean").height == 2


def test_digits_task_is_balanced_disjoint_and_seeded():
    task = make_task("digits", DigitsConfig(train_size=500), seed=4, device="cpu")
    assert task.train.inputs.shape == (500, 64) and task.test.inputs.shape == (1797 - 500, 64)
    assert torch.bincount(task.train.targets).tolist() == [50] * 10
    assert 0.0 <= task.train.inputs.min() and task.train.inputs.max() <= 1.0
    train_rows = {tuple(r) for r in task.train.inputs.tolist()}
    test_rows = [tuple(r) for r in task.test.inputs.tolist()]
    assert sum(r in train_rows for r in test_rows) <= 5  # the digits set has a few duplicate images
    again = make_task("digits", DigitsConfig(train_size=500), seed=4, device="cpu")
    assert torch.equal(again.train.inputs, task.train.inputs)
    other = make_task("digits", DigitsConfig(train_size=500), seed=5, device="cpu")
    assert not torch.equal(other.train.inputs, task.train.inputs)
    onehot_loss = task.loss(torch.nn.functional.one_hot(task.train.targets, 10).double(), task.train)
    assert onehot_loss.item() == 0.0


def _write_idx(path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def test_mnist_from_local_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6)
    images = rng.integers(0, 256, (60, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, gz=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:20], gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:20], gz=True)
    task = make_task("digits", DigitsConfig(source="mnist", mnist_dir=str(tmp_path), train_size=40), seed=0, device="cpu")
    assert task.io.d_input == 784 and task.train.size == 40 and task.test.size == 20
    assert torch.bincount(task.train.targets).tolist() == [4] * 10
    row = task.train.inputs[0].numpy() * 255
    assert any(np.allclose(row, img.reshape(-1)) for img in images)
    with pytest.raises(ConfigError, match="lacks t10k-images-idx3-ubyte"):
        (tmp_path / "t10k-images-idx3-ubyte").unlink()
        DigitsConfig(source="mnist", mnist_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs task.mnist_dir"):
        DigitsConfig(source="mnist")
    with pytest.raises(ConfigError, match="multiple of 10"):
        DigitsConfig(train_size=1005)


def test_mlp_model_init_scale_dtype_hooks_and_arch_checks():
    task = make_task("digits", DigitsConfig(train_size=100), seed=0, device="cpu")
    one = build_model(ModelConfig(arch="mlp", mlp_widths=(20, 10)), task.io, seed=3, device="cpu")
    eight = build_model(ModelConfig(arch="mlp", mlp_widths=(20, 10), init_scale=8.0, dtype="float64"), task.io, seed=3, device="cpu")
    for (_, a), (_, b) in zip(one.state_dict().items(), eight.state_dict().items()):
        assert b.dtype == torch.float64
        assert torch.allclose(b, 8 * a.double())
    assert one.hook_names() == ["hook_input", "hook_logits", "layers.0.hook_post", "layers.0.hook_pre", "layers.1.hook_post", "layers.1.hook_pre"]
    logits, cache = one.run_with_cache(task.train.inputs, names=["layers.0.hook_pre", "layers.0.hook_post"])
    assert torch.equal(cache["layers.0.hook_post"], torch.relu(cache["layers.0.hook_pre"]))
    assert logits.shape == (100, 10)
    with pytest.raises(ConfigError, match="needs model.arch='mlp'"):
        build_model(ModelConfig(), task.io, seed=0, device="cpu")
    bursty_io = make_task("bursty", PRESETS["bursty"]["small"].config.task_config, seed=0, device="cpu").io
    with pytest.raises(ConfigError, match="needs model.arch='transformer'"):
        build_model(ModelConfig(arch="mlp"), bursty_io, seed=0, device="cpu")


def test_anti_grokking_preset_trains_and_stores_alpha_curves(tmp_path):
    config = PRESETS["digits"]["cpu"].config.with_overrides({"train.steps": 300, "train.eval_every": 100, "train.checkpoint_every": 100, "device": "cpu"})
    result = train(config, tmp_path / "ag", progress=False)
    run = result.run_dir
    wide = load_metrics(run).pivot(on="metric", index="step", values="value").sort("step")
    assert wide["step"].to_list() == [0, 100, 200, 300]
    for col in ("alpha.layers.0", "alpha.layers.1", "alpha.out", "alpha_hidden_mean", "correlation_traps_total", "train_accuracy", "test_accuracy"):
        assert wide[col].null_count() == 0, col
    assert wide["train_accuracy"][-1] > wide["train_accuracy"][0] + 0.1  # it learns
    # the same seed gives the same metrics
    again = train(config, tmp_path / "ag2", progress=False).run_dir
    assert load_metrics(again).equals(load_metrics(run))


def test_post_hoc_applies_the_runs_eval_time_clamps_as_they_were_live(tmp_path, tiny_run_config):
    """A running-mean clamp active at evaluation: post hoc restores the running means saved
    with each checkpoint, so the clamped measures equal the live ones."""
    from interventions import Intervention

    clamp = Intervention(hook="blocks.1.attn.hook_z", heads=(0,), target="running_mean", momentum=0.5)
    config = dataclasses.replace(tiny_run_config, interventions=(clamp,), measures=("icl_accuracy", "eval_loss", "mutual_information"),
                                 train=TrainConfig(steps=10, batch_size=16, eval_every=5, checkpoint_every=5))
    run = train(config, tmp_path / "clamped", progress=False).run_dir
    live = load_metrics(run)
    post = measure_run(run, ["icl_accuracy", "eval_loss", "mutual_information"], write=False, progress=False)
    joined = post.join(live, on=["step", "metric"], suffix="_live")
    assert joined.height == post.height
    assert sorted(set(post["step"].to_list())) == [0, 5, 10] and "icl_accuracy" in post["metric"].to_list()
    assert (joined["value"] - joined["value_live"]).abs().max() == 0.0
