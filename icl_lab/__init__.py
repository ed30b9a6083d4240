"""icl-lab: train small TransformerLens models on synthetic tasks, watch abilities emerge.

    from icl_lab import get_preset, train, load_run
    config = get_preset("bursty", "small").config.with_overrides({"seed": 1})
    result = train(config, "runs/demo")
    load_run("runs/demo").curve("icl_accuracy")
"""

import os

# OpenMP threads that wait for work by spinning (its default) take the cores from every other
# process: measured with benchmarks/threads.py on 2 cores, a run with 2 threads beside another
# process fell from 30 to under 1 step/s. Passive waiting keeps that loss small. It takes effect
# only when set before torch starts OpenMP, so before anything here imports torch; a value the
# user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from icl_lab.config import ConfigError, TrainConfig  # noqa: E402
from icl_lab.model_config import MODEL_PRESETS, ModelConfig
from icl_lab.phases import find_transition
from icl_lab.presets import PRESETS, get_preset, register_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import RunError, load_checkpoint, load_metrics, load_run
from icl_lab.tasks import BurstyConfig, BurstyTask, Task, make_task, register_task
from icl_lab.train import TrainResult, extend, train
from icl_lab.batched import train_group


def __getattr__(name: str):
    # icl_lab.models imports TransformerLens (seconds): loaded on first use, so that the
    # command line and the configuration modules start fast
    if name in ("LabModel", "build_model"):
        from icl_lab import models

        return getattr(models, name)
    raise AttributeError(f"module 'icl_lab' has no attribute {name!r}")


__all__ = [
    "BurstyConfig",
    "BurstyTask",
    "ConfigError",
    "LabModel",
    "MODEL_PRESETS",
    "ModelConfig",
    "PRESETS",
    "RunConfig",
    "RunError",
    "Task",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "extend",
    "find_transition",
    "get_preset",
    "load_checkpoint",
    "load_metrics",
    "load_run",
    "make_task",
    "register_preset",
    "register_task",
    "train",
    "train_group",
]
