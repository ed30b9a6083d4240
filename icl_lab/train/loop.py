"""The entry points: `train` (a new run, or a stopped one resumed) and `extend` (a run trained
on past its length). The loop, top to bottom:

    task.sample_batch -> model -> task.loss -> backward -> optimizer step
    every eval_every steps (and at 0 and the end): measures -> run store
    every checkpoint_every steps (and at 0 and the end): checkpoint -> run store
    at the end: post-run steps, summary.json, status done
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from icl_lab.checkpoints import run_config_of
from icl_lab.provenance import resolve_device
from icl_lab.run_config import RunConfig
from icl_lab.store import check_new_run_dir
from icl_lab.train.resume import check_extension
from icl_lab.train.training_run import TrainingRun, TrainResult


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
    last_step = run.reopen_run_dir(out, extend_from) if resume else run.create_run_dir(out, overwrite)
    cfg = config.train
    bar = tqdm(total=cfg.steps, initial=max(last_step, 0), disable=not progress, desc=f"{config.task}/{config.preset or 'custom'}", unit="step")
    with run.lifecycle:  # an exception marks the run failed (Ctrl-C: stopped) and releases its lock
        try:
            for step in range(run.start_training(last_step), cfg.steps + 1):
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
