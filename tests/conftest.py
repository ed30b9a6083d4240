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
