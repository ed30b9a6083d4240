"""Rebuild a stored run's model at any checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from icl_lab.models import LabModel, build_model
from icl_lab.run_config import RunConfig
from icl_lab.store import checkpoint_steps, load_checkpoint, read_json
from icl_lab.tasks import make_task


def run_config_of(run_dir: str | Path) -> RunConfig:
    data = read_json(Path(run_dir) / "config.json")
    if data is None:
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig.from_dict({k: v for k, v in data.items() if k in names})


def resolve_step(run_dir: str | Path, step: int) -> int:
    """`step` as given, or the run's last checkpoint for -1."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"{run_dir} has no checkpoints")
    if step == -1:
        return steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"{run_dir} has no checkpoint at step {step}; steps: {steps}")
    return step


def load_model(run_dir: str | Path, step: int = -1, device: str | torch.device = "cpu"):
    """(model at that checkpoint, the run's task, its RunConfig)."""
    config = run_config_of(run_dir)
    step = resolve_step(run_dir, step)
    task = make_task(config.task, config.task_config, seed=config.seed, device=device)
    model: LabModel = build_model(config.model, task.io, seed=config.seed + 1, device=device)
    model.load_checkpoint_state({k: v.to(device) for k, v in load_checkpoint(run_dir, step).items()})
    model.eval()
    return model, task, config
