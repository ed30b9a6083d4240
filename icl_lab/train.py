"""The trainer: one loop for every task and model.

    task.sample_batch -> model -> task.loss -> backward -> optimizer step
    every eval_every steps (and at 0 and the end): measures -> run store
    every checkpoint_every steps (and at 0 and the end): checkpoint -> run store

Nothing in a training step waits for the host: the loss is accumulated on the device and
read back only at evaluation steps (tests/test_cuda.py checks every step after the first: on
CUDA under torch.cuda.set_sync_debug_mode("error"), and on CPU with a proxy). Step 0 is the model before any update; step s is the
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

from icl_lab.config import ConfigError, TrainConfig, is_log_spaced
from icl_lab.measures import evaluate
from icl_lab.phases import Reading
from icl_lab.stages import stages_of_run
from icl_lab.provenance import provenance_record, resolve_device
from icl_lab.run_config import RunConfig
from icl_lab.lifecycle import RunLifecycle
from icl_lab.store import (
    RunError,
    TrainingState,
    atomic_write_json,
    check_new_run_dir,
    intact_state_steps,
    load_metrics,
    load_training_state,
    paths,
    read_config,
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


class TrainingRun:
    """One run's training objects (task, model, clamp engine, optimizer, schedule, data stream,
    evaluation sets), its tallies between evaluations, and its run directory. `train` drives
    one; `icl_lab.batched.train_group` drives several whose forward passes share one call.

    `torch_rng`: the global RNG state stored with each checkpoint; None stores the live one
    (a group member stores the state its own run would have, see icl_lab.batched).
    """

    def __init__(self, config: RunConfig, device: torch.device):
        self.llc_context = None  # the `llc` measure's settings and sampling pool, when the run measures it live
        if "llc" in config.measures:  # refused before the run directory is written
            from icl_lab.llc import LLCContext, check_settings

            check_settings(config)
            self.llc_context = LLCContext.for_run(config)
        torch.manual_seed(config.seed)
        self.config, self.device, self.cfg = config, device, config.train
        self.task = make_task(config.task, config.task_config, seed=config.seed, device=device)
        from icl_lab.models import build_model

        self.model = build_model(config.model, self.task.io, seed=config.seed + 1, device=device)
        self.engine = InterventionEngine(self.model, self.task, config.interventions, load_reference=lambda run, step, device: load_model(run, step, device)[0]) if config.interventions else None
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.cfg))
        self.data_gen = self.task.make_generator(config.seed + 2)
        self.eval_batches = self.task.eval_sets()
        self.loss_dtype = torch.float64 if self.cfg.loss_dtype == "float64" else torch.float32
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.loss_count = 0
        self.first_nonfinite = torch.full((), -1, device=device, dtype=torch.long)
        self.eval_steps: list[int] = []
        self.torch_rng: torch.Tensor | None = None
        self.run: RunLifecycle | None = None

    @property
    def writer(self):
        return self.run.writer

    def start(self, out: str | Path, overwrite: bool) -> int:
        """Create the run directory; -1: training starts at step 0."""
        self.run = RunLifecycle.start(out, run_record(self.config, self.device), verb="train", overwrite=overwrite)
        return -1

    def reopen(self, out: str | Path, extend_from: int | None = None) -> int:
        """Take a stopped run's lock and restore everything from its newest intact checkpoint;
        the step training continues from (-1: none, start again at step 0). `extend_from`: the
        run's stored length, which config.json's train.steps is raised from (see `extend`)."""
        self.run = RunLifecycle.resume(out, verb="resume --steps" if extend_from is not None else "resume")
        try:
            if extend_from is not None:
                record_extension(Path(out), self.config, self.device, extend_from)
            start_step = resumable_step(Path(out), self.config)
            if start_step >= 0:
                state = load_training_state(out, start_step)  # intact: checked by resumable_step
                restore_weights(self.model, out, start_step)
        except BaseException:
            self.run.writer.close()
            raise
        if start_step >= 0:
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.data_gen.set_state(state.data_generator)
            torch.set_rng_state(state.torch_rng)
            self.loss_sum, self.loss_count, self.eval_steps = state.loss_sum.to(self.device), state.loss_count, list(state.eval_steps)
            self.first_nonfinite = state.first_nonfinite_step.to(self.device)
            if self.engine is not None:
                restore_engine_state(self.engine, state)
        self.run.writer.rewind(start_step)
        return start_step

    def sample_batch(self, step: int):
        """The batch of the update from step-1 to step, with the clamps of that update on."""
        if self.engine is not None:
            self.engine.set_step(step - 1, "train")
        return self.task.sample_batch(self.cfg.batch_size, self.data_gen)

    def train_step(self, step: int) -> None:
        """The update from step-1 to step: batch, forward (every hook point fires), loss,
        backward, optimizer and schedule step, loss tally."""
        batch = self.sample_batch(step)
        logits = self.model.forward_batch(batch)
        loss = self.task.loss(logits.to(self.loss_dtype), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.update(loss, step)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """After loss.backward(): clip, step the optimizer and schedule, tally the loss."""
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        loss = loss.detach()
        self.first_nonfinite = torch.where((self.first_nonfinite < 0) & ~torch.isfinite(loss), step, self.first_nonfinite)
        self.loss_sum += loss.to(torch.float64)
        self.loss_count += 1

    def due(self, every: int, step: int) -> bool:
        return step == 0 or step == self.cfg.steps or (every > 0 and step % every == 0)

    def extra_checkpoint(self, step: int) -> bool:
        """Denser checkpoints: every evaluation inside the window, or log-spaced steps."""
        start, end = self.cfg.checkpoint_window
        in_window = start <= step < end and step % self.cfg.eval_every == 0
        return in_window or is_log_spaced(step, self.cfg.checkpoints_per_decade)

    def after_update(self, step: int) -> dict[str, float] | None:
        """Evaluate and checkpoint when `step` is due; the metrics recorded, if any."""
        floats = self.record(step) if self.due(self.cfg.eval_every, step) else None
        if self.due(self.cfg.checkpoint_every, step) or self.extra_checkpoint(step):
            self.checkpoint(step)
        return floats

    def record(self, step: int) -> dict[str, float]:
        device = self.device
        self.eval_steps.append(step)
        if self.engine is not None:
            self.engine.set_step(step, "eval")
        values = evaluate(self.model, self.task, self.eval_batches, list(self.config.measures), self.measure_options(step))
        if self.loss_count:
            values["train_loss"] = self.loss_sum / self.loss_count
        values["lr"] = torch.tensor(self.optimizer.param_groups[0]["lr"], dtype=torch.float64)
        names = sorted(values)
        host = torch.stack([values[n].to(device=device, dtype=torch.float64) for n in names]
                           + [self.first_nonfinite.to(torch.float64)]).cpu().tolist()
        floats = dict(zip(names, host))
        self.writer.add_metrics(step, floats)
        self.writer.flush_metrics()
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.loss_count = 0
        if host[-1] >= 0 and self.cfg.nonfinite_loss == "fail":
            raise NonFiniteLoss(
                f"the training loss became non-finite at step {int(host[-1])} "
                "(set train.nonfinite_loss=continue to keep training through it)"
            )
        return floats

    def measure_options(self, step: int) -> dict[str, Any] | None:
        """Settings of the measures that take them: the `llc` measure's LLCContext."""
        if self.llc_context is None:
            return None
        return self.llc_context.at(step, self.config.interventions, self.task, self.engine)

    def checkpoint(self, step: int) -> None:
        self.writer.save_checkpoint(step, self.model.checkpoint_state(), TrainingState(
            step=step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            data_generator=self.data_gen.get_state(),
            torch_rng=torch.get_rng_state() if self.torch_rng is None else self.torch_rng,
            loss_sum=self.loss_sum,
            loss_count=self.loss_count,
            eval_steps=list(self.eval_steps),
            first_nonfinite_step=self.first_nonfinite,
            **engine_state(self.engine),
        ))

    def begin(self, start_step: int) -> int:
        """Train mode; a new run (or one stopped before its first checkpoint) records step 0.
        The first step to train."""
        self.model.train()
        if start_step < 0:
            self.record(0)
            self.checkpoint(0)
            start_step = 0
        return start_step + 1

    def check_fired(self) -> None:
        if self.engine is not None:
            check_interventions_fired(self.engine, self.cfg.steps, self.eval_steps)

    def close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def finish(self, extra: dict[str, Any] | None = None) -> TrainResult:
        """After training: the task's post-training work, summary.json (with `extra` entries),
        status done."""
        out = self.writer.dir
        after = task_after_training(self.task, out)
        summary = summarize(out, self.config, self.run.wall_seconds, getattr(self.task, "transition_readings", {}))
        summary.update(after)
        summary.update(extra or {})
        if self.engine is not None:
            summary["intervention_calls"] = self.engine.call_counts()
        self.run.finish(summary, steps=self.cfg.steps)
        return TrainResult(run_dir=out, model=self.model, task=self.task, summary=summary)


def check_extension(config: RunConfig, steps: int) -> None:
    """Refuse, before anything is written, an extension that would not equal a longer run."""
    if steps <= config.train.steps:
        raise ConfigError(f"--steps {steps} must be more than the run's train.steps={config.train.steps}")
    if config.train.schedule != "constant":
        raise ConfigError(
            f"cannot extend a run with train.schedule={config.train.schedule!r}: its learning rate decays over "
            f"train.steps={config.train.steps}, so a longer run would have had another schedule; valid: 'constant'"
        )


def record_extension(out: Path, config: RunConfig, device: torch.device, extend_from: int) -> None:
    """config.json (under the run's lock): train.steps raised to `config`'s, and one more entry
    in its `extended` list (from, to, and this part's versions, git commit, device and time)."""
    record = read_config(out)
    if record.get("train", {}).get("steps") != extend_from:
        raise ConfigError(f"cannot extend {out}: its train.steps changed to {record.get('train', {}).get('steps')} since it was read")
    record["train"] = {**record["train"], "steps": config.train.steps}
    record["extended"] = [*record.get("extended", []), {"from": extend_from, "to": config.train.steps, **provenance_record(device)}]
    atomic_write_json(paths(out).config, record)


def extend(out: str | Path, steps: int, *, progress: bool = True) -> TrainResult:
    """Train a run on past its configured length, to `steps` (`icl-lab resume RUN --steps N`):
    a finished run continues from its last checkpoint, a stopped one from its newest, with
    weights, optimizer, data stream and clamp state restored. With a constant schedule this
    equals a run configured with `steps` from the start; the one difference is the evaluation
    (and checkpoint) the shorter run made at its last step, when that step is not on the
    `eval_every` grid (the following evaluation's train_loss window then starts there). Clamp
    windows that end at -1 (the run's end) go on to the new end. config.json's train.steps
    becomes `steps`; its `extended` list records the part (from, to, versions, git commit)."""
    stored = run_config_of(out)
    check_extension(stored, steps)
    longer = stored.with_overrides({"train.steps": steps})
    return train(longer, out, progress=progress, resume=True, extend_from=stored.train.steps)


def train(
    config: RunConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    extend_from: int | None = None,
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
    run = TrainingRun(config, device)
    start_step = run.reopen(out, extend_from) if resume else run.start(out, overwrite)
    cfg = config.train
    bar = tqdm(total=cfg.steps, initial=max(start_step, 0), disable=not progress, desc=f"{config.task}/{config.preset or 'custom'}", unit="step")
    with run.run:
        try:
            for step in range(run.begin(start_step), cfg.steps + 1):
                run.train_step(step)
                last = run.after_update(step)
                if last is not None:
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in config.track if k in last})
                bar.update(1)
            run.check_fired()
        finally:
            bar.close()
            run.close_engine()
        return run.finish()


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
    from icl_lab.stored_config import check_stored_config

    check_stored_config(out, run_config_of(out).to_dict(), config.to_dict(), doing="cannot resume it with this config")
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


def summarize(run_dir: Path, config: RunConfig, wall_seconds: float, readings: dict[str, Reading] | None = None) -> dict[str, Any]:
    """Transitions of the tracked metrics (each read with the task's `readings` entry for it,
    else phases.Reading()), plus the final values of every metric."""
    metrics = load_metrics(run_dir)
    transitions = {}
    for name in config.track:
        curve = metrics.filter(metrics["metric"] == name).sort("step")
        found = (readings or {}).get(name, Reading()).find(curve["step"].to_numpy(), curve["value"].to_numpy())
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
    stages = stages_of_run(metrics)  # LLC stage boundaries (Hoogland et al.), when the run has LLC estimates
    return {
        **({"stages": stages} if stages else {}),
        "transitions": transitions,
        "first_steps": first_steps,
        "final": dict(zip(final["metric"].to_list(), final["value"].to_list())),
        "final_step": last_step,
        "wall_seconds": wall_seconds,
    }
