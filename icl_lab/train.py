"""The trainer: one loop for every task and model.

    task.sample_batch -> model -> task.loss -> backward -> optimizer step
    every eval_every steps (and at 0 and the end): measures -> run store
    every checkpoint_every steps (and at 0 and the end): checkpoint -> run store

Nothing in a training step waits for the host: the loss is accumulated on the device and
read back only at evaluation steps. Step 0 is the model before any update; step s is the
model after s updates.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from icl_lab.config import ConfigError, TrainConfig
from icl_lab.measures import evaluate
from icl_lab.phases import find_transition
from icl_lab.provenance import provenance_record, resolve_device
from icl_lab.run_config import RunConfig
from icl_lab.lifecycle import RunLifecycle
from icl_lab.store import (
    RunError,
    TrainingState,
    check_new_run_dir,
    intact_state_steps,
    load_metrics,
    load_training_state,
)
from icl_lab.tasks import make_task, task_after_training
from icl_lab.checkpoints import load_model, restore_weights, run_config_of  # load_model: the checkpoint target's reference models
from interventions.engine import InterventionEngine

if TYPE_CHECKING:  # icl_lab.models imports TransformerLens (seconds): loaded when a model is built
    from icl_lab.models import LabModel


@dataclass
class TrainResult:
    run_dir: Path
    model: LabModel
    task: Any
    summary: dict[str, Any]

    @property
    def metrics(self):
        return load_metrics(self.run_dir)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at update `step` (0-based): linear warm-up, then the schedule."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress  # linear


def run_record(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """config.json: the full config plus what is needed to trust and rerun it."""
    return {**config.to_dict(), **provenance_record(device)}


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (the run is marked failed at that step)."""


def train(
    config: RunConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
) -> TrainResult:
    """Train `config` and store the run in `out`. Returns the trained model and the summary.

    Everything is checked (device, run directory, interventions against the model) before
    anything is written. With `resume`, a run stopped mid-way (killed, failed, interrupted)
    continues from its newest intact checkpoint: weights, optimizer, schedule, data stream,
    loss window and clamp state are restored, so the finished run equals one that never
    stopped. Only a run the lab wrote is ever overwritten, and a run has one writer at a time.
    """
    device = resolve_device(config.device)
    if not resume:
        check_new_run_dir(out, overwrite)
    torch.manual_seed(config.seed)
    task = make_task(config.task, config.task_config, seed=config.seed, device=device)
    from icl_lab.models import build_model

    model = build_model(config.model, task.io, seed=config.seed + 1, device=device)
    engine = InterventionEngine(model, task, config.interventions, load_reference=lambda run, step, device: load_model(run, step, device)[0]) if config.interventions else None
    cfg = config.train
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    data_gen = task.make_generator(config.seed + 2)
    eval_batches = task.eval_sets()
    loss_dtype = torch.float64 if cfg.loss_dtype == "float64" else torch.float32
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    loss_count = 0
    first_nonfinite = torch.full((), -1, device=device, dtype=torch.long)
    eval_steps: list[int] = []
    start_step = -1  # the newest checkpoint training continues from; -1: none (start at step 0)

    if resume:
        run = RunLifecycle.resume(out, verb="resume")
        try:
            start_step = resumable_step(Path(out), config)
            if start_step >= 0:
                state = load_training_state(out, start_step)  # intact: checked by resumable_step
                restore_weights(model, out, start_step)
        except BaseException:
            run.writer.close()
            raise
        if start_step >= 0:
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            data_gen.set_state(state.data_generator)
            torch.set_rng_state(state.torch_rng)
            loss_sum, loss_count, eval_steps = state.loss_sum.to(device), state.loss_count, list(state.eval_steps)
            first_nonfinite = state.first_nonfinite_step.to(device)
            if engine is not None:
                restore_engine_state(engine, state)
        run.writer.rewind(start_step)
    else:
        run = RunLifecycle.start(out, run_record(config, device), verb="train", overwrite=overwrite)
    writer = run.writer
    out = writer.dir
    bar = tqdm(total=cfg.steps, initial=max(start_step, 0), disable=not progress, desc=f"{config.task}/{config.preset or 'custom'}", unit="step")

    def record(step: int) -> dict[str, float]:
        nonlocal loss_sum, loss_count
        eval_steps.append(step)
        if engine is not None:
            engine.set_step(step, "eval")
        values = evaluate(model, task, eval_batches, list(config.measures))
        if loss_count:
            values["train_loss"] = loss_sum / loss_count
        values["lr"] = torch.tensor(optimizer.param_groups[0]["lr"], dtype=torch.float64)
        names = sorted(values)
        host = torch.stack([values[n].to(device=device, dtype=torch.float64) for n in names]
                           + [first_nonfinite.to(torch.float64)]).cpu().tolist()
        floats = dict(zip(names, host))
        writer.add_metrics(step, floats)
        writer.flush_metrics()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        loss_count = 0
        if host[-1] >= 0 and cfg.nonfinite_loss == "fail":
            raise NonFiniteLoss(
                f"the training loss became non-finite at step {int(host[-1])} "
                "(set train.nonfinite_loss=continue to keep training through it)"
            )
        return floats

    def checkpoint(step: int) -> None:
        writer.save_checkpoint(step, model.checkpoint_state(), TrainingState(
            step=step,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            data_generator=data_gen.get_state(),
            torch_rng=torch.get_rng_state(),
            loss_sum=loss_sum,
            loss_count=loss_count,
            eval_steps=list(eval_steps),
            first_nonfinite_step=first_nonfinite,
            **engine_state(engine),
        ))

    def should(every: int, step: int) -> bool:
        return step == 0 or step == cfg.steps or (every > 0 and step % every == 0)

    with run:
        try:
            model.train()
            if start_step < 0:  # a new run, or one killed before its first checkpoint was complete
                start_step = 0
                record(0)
                checkpoint(0)
            for step in range(start_step + 1, cfg.steps + 1):
                if engine is not None:
                    engine.set_step(step - 1, "train")  # the update from step-1 to step
                batch = task.sample_batch(cfg.batch_size, data_gen)
                logits = model.forward_batch(batch)
                loss = task.loss(logits.to(loss_dtype), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                loss = loss.detach()
                first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(loss), step, first_nonfinite)
                loss_sum += loss.to(torch.float64)
                loss_count += 1
                if should(cfg.eval_every, step):
                    last = record(step)
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in config.track if k in last})
                if should(cfg.checkpoint_every, step):
                    checkpoint(step)
                bar.update(1)
            if engine is not None:
                check_interventions_fired(engine, cfg.steps, eval_steps)
        finally:
            bar.close()
            if engine is not None:
                engine.close()
        after = task_after_training(task, out)
        summary = summarize(out, config, run.wall_seconds)
        summary.update(after)
        if engine is not None:
            summary["intervention_calls"] = engine.call_counts()
        run.finish(summary, steps=cfg.steps)
    return TrainResult(run_dir=out, model=model, task=task, summary=summary)


def engine_state(engine: InterventionEngine | None) -> dict[str, Any]:
    """The clamp engine's call counts and running-mean targets, keyed by strings."""
    if engine is None:
        return {"intervention_calls": {}, "intervention_running": {}}
    return {
        "intervention_calls": {f"{i}|{name}|{phase}": n for (i, name, phase), n in engine.calls.items()},
        "intervention_running": {f"{i}|{name}": t for (i, name), t in engine.running_means().items()},
    }


def restore_engine_state(engine: InterventionEngine, state: TrainingState) -> None:
    for key, n in state.intervention_calls.items():
        i, name, phase = key.split("|")
        engine.calls[(int(i), name, phase)] = n
    running = {}
    for key, tensor in state.intervention_running.items():
        i, name = key.split("|")
        running[(int(i), name)] = tensor.to(next(engine.model.parameters()).device)
    engine.set_running_means(running)


def resumable_step(out: Path, config: RunConfig) -> int:
    """The newest step whose weights and training state are intact, after checking the
    stored config. A run stopped before its first complete checkpoint gives -1 (it starts
    again from step 0, which is exact too); one whose checkpoints are all unreadable is
    refused. Each newer checkpoint skipped is reported on stderr with the reason."""
    stored = run_config_of(out)
    if stored.to_dict() != config.to_dict():
        a, b = stored.to_dict(), config.to_dict()
        diff = [k for k in a if a[k] != b.get(k)]
        raise ConfigError(f"cannot resume {out}: its stored config differs in {', '.join(diff)}")
    steps, skipped = intact_state_steps(out)
    newest = steps[-1] if steps else -1
    for line in skipped:
        if int(line.split()[1].rstrip(":")) > newest:
            print(f"icl-lab: skipping the checkpoint at {line}", file=sys.stderr)
    if newest < 0 and skipped:  # never replace checkpoints that could not be read
        raise RunError(f"{out} has no intact checkpoint with training state to resume from ({'; '.join(skipped[-3:])})")
    if newest < 0:
        print(f"icl-lab: {out} was stopped before its first checkpoint; starting it again from step 0", file=sys.stderr)
    return newest


def check_interventions_fired(engine: InterventionEngine, train_steps: int, eval_steps: list[int]) -> None:
    """Refuse a run in which a clamp that should have acted never fired (no silent drops)."""
    for i, spec in enumerate(engine.specs):
        expected = {
            "train": any(spec.active(s, "train") for s in range(train_steps)),
            "eval": any(spec.active(s, "eval") for s in eval_steps),
        }
        for phase, should in expected.items():
            if should and not any(engine.calls[(i, n, phase)] for n in spec.hook_names):
                raise RuntimeError(
                    f"intervention {spec.label} never fired during {phase}; nothing was clamped"
                )


def summarize(run_dir: Path, config: RunConfig, wall_seconds: float) -> dict[str, Any]:
    """Transitions of the tracked metrics, plus the final values of every metric."""
    metrics = load_metrics(run_dir)
    transitions = {}
    for name in config.track:
        curve = metrics.filter(metrics["metric"] == name).sort("step")
        found = find_transition(curve["step"].to_numpy(), curve["value"].to_numpy())
        entry = found.to_dict()
        if found.transition_step is not None:
            entry["transition_sequences"] = found.transition_step * config.train.batch_size
        transitions[name] = entry
    # grokking's s₁ and s₂: first evaluation with train accuracy 1.0 / test accuracy >= 0.95
    first_steps = {}
    for name, level in {"train_accuracy": 1.0, "test_accuracy": 0.95}.items():
        reached = metrics.filter((metrics["metric"] == name) & (metrics["value"] >= level))
        if reached.height:
            first_steps[f"{name}>={level:g}"] = int(reached["step"].min())
    last_step = int(metrics["step"].max()) if metrics.height else 0
    final = metrics.filter(metrics["step"] == last_step)
    return {
        "transitions": transitions,
        "first_steps": first_steps,
        "final": dict(zip(final["metric"].to_list(), final["value"].to_list())),
        "final_step": last_step,
        "wall_seconds": wall_seconds,
    }
