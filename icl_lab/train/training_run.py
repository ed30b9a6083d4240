"""TrainingRun: one run's training objects and what happens at each step.

    create_run_dir / reopen_run_dir -> start_training -> (train_step, after_update)* -> finish

Nothing in a training step waits for the host: the loss is accumulated on the device and
read back only at evaluation steps (tests/test_cuda.py checks every step after the first: on
CUDA under torch.cuda.set_sync_debug_mode("error"), and on CPU with a proxy). Step 0 is the
model before any update; step s is the model after s updates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from icl_lab.checkpoints import attach_clamps, restore_weights
from icl_lab.config import is_log_spaced
from icl_lab.lifecycle import RunLifecycle
from icl_lab.measures import evaluate
from icl_lab.post_run import run_post_run_steps
from icl_lab.provenance import provenance_record
from icl_lab.run_config import RunConfig
from icl_lab.store import RunError, TrainingState, load_metrics, load_training_state, paths
from icl_lab.tasks import make_task
from icl_lab.train.engine_state import engine_state
from icl_lab.train.optimizer import lr_factor, make_optimizer
from icl_lab.train.resume import check_training_state, record_extension, restore_training_state, resumable_step
from icl_lab.train.summary import summarize
from interventions.engine import InterventionEngine
from interventions.targets.base import Target

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


def run_record(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """config.json: the full config plus what is needed to trust and rerun it."""
    return {**config.to_dict(), **provenance_record(device)}


# training states kept on disk (the newest ones): resume starts from the newest intact one, and
# falls back to the one before when a kill tore the newest
KEEP_STATES = 2


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (the run is marked failed at that step)."""


class TrainingRun:
    """One run's training objects (task, model, clamp engine, optimizer, schedule, data stream,
    evaluation sets), its tallies between evaluations, and its run directory (`lifecycle`,
    once created or reopened). `train` drives one; `icl_lab.batched.train_group` drives several
    whose forward passes share one call.

    `torch_rng`: the global RNG state stored with each checkpoint; None stores the live one
    (a group member stores the state its own run would have, see icl_lab.batched).
    """

    def __init__(self, config: RunConfig, device: torch.device):
        self.llc_context = None  # the `llc` measure's settings and sampling pool, when the run measures it live
        if config.train.compile != "off":  # refused before the run directory is written
            from icl_lab.train.compiled import check_compile

            check_compile(config, device)
        if "llc" in config.measures:  # refused before the run directory is written
            from icl_lab.llc import LLCContext, check_settings

            check_settings(config)
            self.llc_context = LLCContext.for_run(config)
        torch.manual_seed(config.seed)
        self.config, self.device, self.cfg = config, device, config.train
        self.task = make_task(config.task, config.task_config, seed=config.seed, device=device)
        from icl_lab.models import build_model, install_speedups

        install_speedups()
        self.model = build_model(config.model, self.task.io, seed=config.seed + 1, device=device)
        self.cut_block = None  # train.last_position_only: the last block, cut during training forwards
        if self.cfg.last_position_only:
            from icl_lab.last_position import check_interventions, install

            check_interventions(self.model, config.interventions)
            self.cut_block = install(self.model)
        self.lean = None  # train.forward lean (or auto, where it covers the model): no bridge Python
        if self.cfg.forward != "bridge":
            from icl_lab.lean_forward import LeanForward, lean_covers

            if self.cfg.forward == "lean" or self.cfg.compile != "off" or lean_covers(self.model) is None:
                self.lean = LeanForward(self.model)  # refuses, naming why, a model it does not cover
        self.engine = attach_clamps(self.model, self.task, config)
        self.compiled = None  # train.compile: the compiled forward and loss (icl_lab/train/compiled.py)
        if self.cfg.compile != "off":
            from icl_lab.train.compiled import CompiledLoss

            self.compiled = CompiledLoss(self)
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
        self.lifecycle: RunLifecycle | None = None

    @property
    def writer(self):
        return self.lifecycle.writer

    # -- the run directory ------------------------------------------------------------------
    def create_run_dir(self, out: str | Path, overwrite: bool) -> int:
        """Write a new run directory (config.json, status running, the lock); returns -1, the
        last step trained (none: training starts at step 0)."""
        self.lifecycle = RunLifecycle.start(out, run_record(self.config, self.device), verb="train", overwrite=overwrite)
        return -1

    def reopen_run_dir(self, out: str | Path, extend_from: int | None = None) -> int:
        """Take a stopped run's lock and restore everything from its newest intact checkpoint;
        returns that step, the last step trained (-1: none, start again at step 0).
        `extend_from`: the run's stored length, which config.json's train.steps is raised from
        (see `extend`)."""
        self.lifecycle = RunLifecycle.resume(out, verb="resume --steps" if extend_from is not None else "resume")
        try:  # everything read and checked before the first byte is written
            stored = self.config if extend_from is None else self.config.with_overrides({"train.steps": extend_from})
            last_step = resumable_step(Path(out), stored)
            if last_step >= 0:
                state = load_training_state(out, last_step)  # intact: checked by resumable_step
                record = paths(out).state_record(last_step)
                check_training_state(self, state, last_step, record)
                restore_weights(self.model, out, last_step)
                try:
                    restore_training_state(self, state)
                except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:  # what the check could not see
                    raise RunError(f"{record}: its training state does not fit this run "
                                   f"({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]})") from None
            if extend_from is not None:
                record_extension(Path(out), self.config, self.device, extend_from)
        except BaseException:
            self.lifecycle.writer.close()
            raise
        self.lifecycle.writer.rewind(last_step)
        return last_step

    def start_training(self, last_step: int) -> int:
        """Train mode; a run with nothing trained yet (`last_step` -1) records and checkpoints
        step 0. Returns the first step to train."""
        self.model.train()
        if last_step < 0:
            self.record(0)
            self.checkpoint(0)
            last_step = 0
        return last_step + 1

    # -- one step -----------------------------------------------------------------------------
    def sample_batch(self, step: int):
        """The batch of the update from step-1 to step, with the clamps of that update on."""
        if self.engine is not None:
            self.engine.set_step(step - 1, "train")
        return self.task.sample_batch(self.cfg.batch_size, self.data_gen)

    def train_step(self, step: int) -> None:
        """The update from step-1 to step: batch, forward (every hook point fires), loss,
        backward, optimizer and schedule step, loss tally."""
        batch = self.sample_batch(step)
        if self.compiled is not None:
            loss = self.compiled(batch, step)
        else:
            with self.training_forward():
                logits = self.model.forward_batch(batch)
            loss = self.task.loss(logits.to(self.loss_dtype), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.update(loss, step)

    def training_forward(self) -> contextlib.AbstractContextManager:
        """The context of a training step's forward: the lean forward where train.forward
        asks (icl_lab/lean_forward.py), cut to the last position where train.last_position_only
        asks (icl_lab/last_position.py)."""
        if self.lean is not None:
            from icl_lab.lean_forward import lean_training

            return lean_training(self.model, self.lean, cut=self.cut_block is not None)
        if self.cut_block is None:
            return contextlib.nullcontext()
        from icl_lab.last_position import cut_to_last_position

        return cut_to_last_position(self.cut_block)

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

    # -- evaluation and checkpoints -----------------------------------------------------------
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

    def keeps_every_state(self) -> bool:
        """Whether every checkpoint keeps its training state: runs whose clamp targets
        accumulate state across forwards (`running_mean`), which evaluating a stored checkpoint
        with its clamps reads back (icl_lab.checkpoints.clamps_at_checkpoint)."""
        return self.engine is not None and any(type(t).state is not Target.state for t in self.engine.targets)

    def checkpoint(self, step: int) -> None:
        """Weights at `step`, with the full training state where resume may start: the
        `checkpoint_every` grid, step 0 and the last step. The denser view-only checkpoints
        (log-spaced, window) are weights only, and once a new state is written only the
        KEEP_STATES newest stay (docs/performance.md, "Disk per run"): older checkpoints keep their weights."""
        if self.keeps_every_state() or self.due(self.cfg.checkpoint_every, step):
            self.write_checkpoint(step, with_state=True)
            if not self.keeps_every_state():
                self.writer.prune_states(KEEP_STATES)
        else:
            self.write_checkpoint(step, with_state=False)

    def write_checkpoint(self, step: int, with_state: bool) -> None:
        if not with_state:
            self.writer.save_checkpoint(step, self.model.checkpoint_state())
            return
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

    # -- the end ------------------------------------------------------------------------------
    def check_fired(self) -> None:
        if self.engine is not None:
            check_interventions_fired(self.engine, self.cfg.steps, self.eval_steps)

    def close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def finish(self, extra: dict[str, Any] | None = None) -> TrainResult:
        """After training: the post-run steps that apply to the task (icl_lab.post_run),
        summary.json (with their entries and `extra`), status done."""
        out = self.writer.dir
        after = run_post_run_steps(out, self.config.task, device=str(self.device))
        summary = summarize(out, self.config, self.lifecycle.wall_seconds, self.task.transition_readings, self.task.milestones)
        summary.update(after)
        summary.update(extra or {})
        if self.engine is not None:
            summary["intervention_calls"] = self.engine.call_counts()
        if self.compiled is not None:  # the steps at which torch.compile compiled a graph
            summary["compiled_at_steps"] = self.compiled.compiled_at
        self.lifecycle.finish(summary, steps=self.cfg.steps)
        return TrainResult(run_dir=out, model=self.model, task=self.task, summary=summary)


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
