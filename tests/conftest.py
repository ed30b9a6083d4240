import pytest
import torch

from icl_lab import BurstyConfig, ModelConfig, RunConfig, TrainConfig
from icl_lab.presets import BURSTY_MEASURES

torch.set_num_threads(2)


@pytest.fixture
def tiny_task_config():
    return BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64)


@pytest.fixture
def tiny_run_config(tiny_task_config):
    return RunConfig(
        task="bursty",
        task_config=tiny_task_config,
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16),
        train=TrainConfig(steps=12, batch_size=16, eval_every=4, checkpoint_every=5),
        measures=BURSTY_MEASURES,
        track=("icl_accuracy",),
        seed=3,
        device="cpu",
        preset="tiny",
    )


def tree_digest(root) -> dict[str, str]:
    """Every entry under root: relative path -> sha256 of a file's bytes, a link's target, or
    "dir" (what "no byte of the run changed" compares; symlink loops included)."""
    import hashlib
    import os
    from pathlib import Path

    root, out = Path(root), {}
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(folder) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def interrupt_training_at(patcher, call: int, error=KeyboardInterrupt) -> None:
    """With `patcher` (a pytest MonkeyPatch), the `call`-th training forward pass raises `error`
    (Ctrl-C by default: the run is marked stopped, resumable)."""
    from icl_lab.models import LabModel

    original, calls = LabModel.forward_batch, {"n": 0}

    def interrupted(self, batch):
        if self.training:
            calls["n"] += 1
            if calls["n"] == call:
                raise error("simulated crash") if error is not KeyboardInterrupt else error
        return original(self, batch)

    patcher.setattr(LabModel, "forward_batch", interrupted)


@pytest.fixture
def short_config(tiny_run_config):
    """12 steps: evaluations at 0, 4, 8, 12; checkpoints at 0, 5, 10, 12."""
    return tiny_run_config.with_overrides({"train.steps": 12, "train.eval_every": 4, "train.checkpoint_every": 5})


@pytest.fixture
def done_run(tmp_path, short_config):
    from icl_lab import train

    train(short_config, tmp_path / "run", progress=False)
    return tmp_path / "run"
