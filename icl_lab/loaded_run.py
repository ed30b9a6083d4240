"""A stored run read back for analysis: its config, metrics, summary, and its model at any
checkpoint with the run's clamps in the state they had there.

    from icl_lab import load_run
    run = load_run("runs/demo")
    run.config.train.steps, run.checkpoint_steps, run.curve("icl_accuracy")
    with run.model(step=500) as m:                  # newest checkpoint when step is None
        logits = m.model.forward_batch(m.task.eval_sets()["icl"])

The model is built by icl_lab.checkpoints.load_model (the run's task from its seed, the weights
of the checkpoint); a clamped run's evaluation-time interventions are attached and restored as
`icl-lab measure` does, so what the model computes is what the live evaluation measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icl_lab.checkpoints import attach_clamps, clamps_at_checkpoint, load_model, resolve_step, run_config_of
from icl_lab.run_config import RunConfig
from icl_lab.store import Run, load_metrics, read_config, read_status, read_summary


@dataclass
class CheckpointModel:
    """A run's model at one checkpoint (eval mode), its task, and its clamp engine (None for a
    run without interventions) switched to (step, "eval"). Closing removes the clamps' hooks."""

    model: Any
    task: Any
    engine: Any
    step: int

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def __enter__(self) -> CheckpointModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LoadedRun(Run):
    """A run read back: `config` is its RunConfig, `record` config.json as written (the config
    plus where it ran: device, versions, git commit, creation time, extensions); `status`,
    `metrics` (polars: step, metric, value), `summary`, `checkpoint_steps`, `curve`, `wide` as
    the store's Run."""

    config: RunConfig
    record: dict[str, Any] = field(default_factory=dict)

    def model(self, step: int | None = None, device: str = "cpu") -> CheckpointModel:
        """The model at checkpoint `step` (None: the newest) with the run's clamps attached in
        their state at that step; RunError listing the available steps for a missing one."""
        step = resolve_step(self.dir, -1 if step is None else step)
        model, task, _ = load_model(self.dir, step, device=device)
        engine = attach_clamps(model, task, self.config)
        if engine is not None:
            clamps_at_checkpoint(engine, self.dir, step, "eval")
        return CheckpointModel(model=model, task=task, engine=engine, step=step)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory written by the lab (RunError naming a missing or corrupt file)."""
    run_dir = Path(run_dir)
    return LoadedRun(
        dir=run_dir,
        config=run_config_of(run_dir),
        status=read_status(run_dir),
        metrics=load_metrics(run_dir),
        summary=read_summary(run_dir),
        record=read_config(run_dir),
    )
