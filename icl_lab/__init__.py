"""icl-lab: train small TransformerLens models on synthetic tasks, watch abilities emerge.

    from icl_lab import get_preset, train, load_run
    config = get_preset("bursty", "small").config.with_overrides({"seed": 1})
    result = train(config, "runs/demo")
    load_run("runs/demo").curve("icl_accuracy")
"""

from icl_lab.config import ConfigError, TrainConfig
from icl_lab.models import MODEL_PRESETS, LabModel, ModelConfig, build_model
from icl_lab.phases import find_transition
from icl_lab.presets import PRESETS, get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import load_checkpoint, load_metrics, load_run
from icl_lab.tasks import BurstyConfig, BurstyTask, make_task
from icl_lab.train import TrainResult, train

__all__ = [
    "BurstyConfig",
    "BurstyTask",
    "ConfigError",
    "LabModel",
    "MODEL_PRESETS",
    "ModelConfig",
    "PRESETS",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "find_transition",
    "get_preset",
    "load_checkpoint",
    "load_metrics",
    "load_run",
    "make_task",
    "train",
]
