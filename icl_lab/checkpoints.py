"""Rebuild a stored run's model at any checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from icl_lab.run_config import RunConfig
from icl_lab.config import ConfigError
from icl_lab.store import RunError, checkpoint_steps, load_checkpoint, load_training_state, paths, read_config
from icl_lab.tasks import make_task


def run_config_of(run_dir: str | Path) -> RunConfig:
    """The RunConfig stored in a run; RunError naming config.json when it is not one."""
    try:
        return RunConfig.from_dict(read_config(run_dir))
    except ConfigError as err:
        raise RunError(f"{paths(run_dir).config}: not a valid run config ({err})") from None
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a value of the wrong kind deep inside
        raise RunError(f"{paths(run_dir).config}: not a valid run config ({type(err).__name__}: {err})") from None


def resolve_step(run_dir: str | Path, step: int) -> int:
    """`step` as given, or the run's last checkpoint for -1."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise RunError(f"{run_dir} has no checkpoints")
    if step == -1:
        return steps[-1]
    if step not in steps:
        raise RunError(f"{run_dir} has no checkpoint at step {step}; steps: {steps}")
    return step


def load_model(run_dir: str | Path, step: int = -1, device: str | torch.device = "cpu"):
    """(model at that checkpoint, the run's task, its RunConfig)."""
    config = run_config_of(run_dir)
    step = resolve_step(run_dir, step)
    task = make_task(config.task, config.task_config, seed=config.seed, device=device)
    from icl_lab.models import build_model, install_speedups  # TransformerLens (seconds to import): only when a model is built

    install_speedups()
    model = build_model(config.model, task.io, seed=config.seed + 1, device=device)
    restore_weights(model, run_dir, step)
    model.eval()
    return model, task, config


def restore_weights(model, run_dir: str | Path, step: int) -> None:
    """Load checkpoint `step` of a run into `model`; RunError naming the file when its
    tensors are not this model's (foreign names or shapes)."""
    device = next(model.parameters()).device
    tensors = load_checkpoint(run_dir, step)
    misfits = checkpoint_misfits(tensors, model.checkpoint_state())
    if misfits:
        raise RunError(f"{paths(run_dir).weights(step)}: its tensors do not fit the run's model ({misfits})")
    try:
        model.load_checkpoint_state({k: v.to(device) for k, v in tensors.items()})
    except (KeyError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise RunError(f"{paths(run_dir).weights(step)}: its tensors do not fit the run's model ({reason})") from None


def checkpoint_misfits(tensors: dict, expected: dict, shown: int = 3) -> str:
    """What keeps `tensors` from loading into a model whose own state is `expected`: missing
    and foreign tensor names, and shape or dtype mismatches, the first `shown` of each; "" when
    they fit."""
    missing = [k for k in expected if k not in tensors]
    foreign = [k for k in tensors if k not in expected]
    wrong = [f"{k} is {list(tensors[k].shape)} {str(tensors[k].dtype).removeprefix('torch.')}, the model's "
             f"{list(v.shape)} {str(v.dtype).removeprefix('torch.')}"
             for k, v in expected.items() if k in tensors and (tensors[k].shape != v.shape or tensors[k].dtype != v.dtype)]
    parts = []
    for what, items in (("missing", missing), ("not the model's", foreign), ("", wrong)):
        if items:
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            parts.append((f"{what}: " if what else "") + ", ".join(items[:shown]) + more)
    return "; ".join(parts)


def reference_model(run_dir: str | Path, step: int, device):
    """Another run's model at a checkpoint, for the `checkpoint` clamp target."""
    return load_model(run_dir, step, device)[0]


def attach_clamps(model, task, config: RunConfig):
    """An InterventionEngine with the run's interventions on `model` (None: the run has none)."""
    if not config.interventions:
        return None
    from interventions.engine import InterventionEngine

    return InterventionEngine(model, task, config.interventions, load_reference=reference_model)


def clamps_at_checkpoint(engine, run_dir: str | Path, step: int, phase: str = "eval") -> None:
    """Put `engine` in the state it had at checkpoint `step` of the run: running-mean targets
    and call counts as stored with it (none stored: cleared), switched to (step, phase), so the
    clamps act on the restored model as they did live (`icl-lab measure`, `load_run`)."""
    state = load_training_state(run_dir, step)
    if state is not None:
        engine.load_state_dict({"intervention_calls": state.intervention_calls, "intervention_running": state.intervention_running})
    else:
        engine.set_running_means({})
    engine.set_step(step, phase)
