"""icl-lab: train small TransformerLens models on synthetic tasks, watch abilities emerge.

    from icl_lab import get_preset, train, load_run
    config = get_preset("bursty", "small").config.with_overrides({"seed": 1})
    result = train(config, "runs/demo")
    run = load_run("runs/demo")           # .config (RunConfig), .metrics, .summary, .checkpoint_steps
    run.curve("icl_accuracy")
    with run.model(step=None) as m:       # the newest checkpoint, the run's clamps attached
        m.model.forward_batch(m.task.eval_sets()["icl"])
"""

from icl_lab.config import ConfigError, TrainConfig
from icl_lab.model_config import MODEL_PRESETS, ModelConfig
from icl_lab.phases import find_transience, find_transition
from icl_lab.presets import PRESETS, get_preset, register_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import RunError, load_checkpoint, load_metrics
from icl_lab.loaded_run import CheckpointModel, LoadedRun, load_run
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
    "CheckpointModel",
    "ConfigError",
    "LabModel",
    "LoadedRun",
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
    "find_transience",
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
