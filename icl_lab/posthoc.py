"""Measures on a stored run's checkpoints, appended to its metrics (`icl-lab measure`).

The same registry functions as the trainer's live evaluation, on the same fixed evaluation
sets, with the run's evaluation-time interventions applied as they were live, so a measure
computed post hoc on checkpoint s equals the live value at step s (same device and dtype).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm

from icl_lab.checkpoints import attach_clamps, clamps_at_checkpoint, load_model, restore_weights, run_config_of
from icl_lab.config import ConfigError
from icl_lab.measures import evaluate, expand_measures, validate_measures
from icl_lab.provenance import resolve_device
from icl_lab.store import RunError, RunLock, append_metrics, checkpoint_steps, metrics_frame


def resolve_steps(run_dir: Path, steps: list[int] | None) -> list[int]:
    available = checkpoint_steps(run_dir)
    if not available:
        raise RunError(f"{run_dir} has no checkpoints")
    if steps is None:
        return available
    missing = [s for s in steps if s not in available]
    if missing:
        raise ConfigError(
            f"no checkpoint at step {', '.join(map(str, missing))} in {run_dir}; "
            f"checkpoints: {', '.join(map(str, available))}"
        )
    return sorted(set(steps))


@torch.no_grad()
def measure_run(
    run_dir: str | Path,
    measures: list[str] | None = None,
    steps: list[int] | None = None,
    *,
    device: str = "cpu",
    write: bool = True,
    progress: bool = True,
    llc: dict | None = None,
) -> pl.DataFrame:
    """Compute `measures` (default: the progress suite) at `steps` (default: every checkpoint)
    and, with `write`, append them to RUN/metrics.parquet (replacing rows with the same step
    and metric). Everything is checked before the first checkpoint is loaded. Returns the new
    rows (step, metric, value).

    `llc`: overrides of the run's `llc` settings ({"lr": 1e-4, "clamps": "off", ...}) for the
    `llc` measure; with it, summary.json's `stages` is brought up to date (a finished run)."""
    run_dir = Path(run_dir)
    config = run_config_of(run_dir)
    if llc:
        config = config.with_overrides({f"llc.{k}": v for k, v in llc.items()})
    names = expand_measures(list(measures) if measures else ["progress"], config.task)
    validate_measures(names, config.task)
    if "llc" in names:
        from icl_lab.llc import check_settings

        check_settings(config)
    chosen = resolve_steps(run_dir, steps)
    dev = resolve_device(device)
    lock = RunLock.of_run(run_dir, "measure") if write else None
    if lock is not None:
        lock.acquire()  # the trainer's next flush would erase values added under it
    try:
        rows = _measure_checkpoints(run_dir, config, names, chosen, dev, progress)
        if write:
            append_metrics(run_dir, rows)
            if "llc" in names:
                update_stages(run_dir)
    finally:
        if lock is not None:
            lock.release()
    return metrics_frame(rows)


def _measure_checkpoints(run_dir: Path, config, names: list[str], steps: list[int], dev: torch.device, progress: bool) -> list[tuple[int, str, float]]:
    model, task, _ = load_model(run_dir, steps[0], device=dev)
    batches = task.eval_sets()  # the fixed sets of the live evaluation, built once
    engine = attach_clamps(model, task, config)
    rows: list[tuple[int, str, float]] = []
    llc_context = None
    if "llc" in names:
        from icl_lab.llc import LLCContext

        llc_context = LLCContext.for_run(config)
    try:
        for step in tqdm(steps, disable=not progress, desc=f"measure {run_dir.name}", unit="ckpt"):
            restore_weights(model, run_dir, step)
            if engine is not None:  # running-mean targets as they stood at this step, live
                clamps_at_checkpoint(engine, run_dir, step, "eval")
            options = None if llc_context is None else llc_context.at(step, config.interventions, task, engine)
            values = evaluate(model, task, batches, names, options)
            names_sorted = sorted(values)
            host = torch.stack([values[n].double().cpu() for n in names_sorted]).tolist()
            rows += [(step, n, v) for n, v in zip(names_sorted, host)]
    finally:
        if engine is not None:
            engine.close()
    return rows


def parse_steps(text: str | None) -> list[int] | None:
    """'all' / None -> None (every checkpoint); '0,500,1000' -> [0, 500, 1000]."""
    if text is None or text == "all":
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(f"--steps: {part!r} is not a step number (write e.g. 0,500,1000 or all)") from None
    return out


def update_stages(run_dir: Path) -> None:
    """summary.json's `stages` from the run's LLC estimates (a finished run has a summary)."""
    from icl_lab.stages import stages_of_run
    from icl_lab.store import atomic_write_json, load_metrics, paths, read_summary

    summary = read_summary(run_dir)
    if summary:
        summary["stages"] = stages_of_run(load_metrics(run_dir))
        atomic_write_json(paths(run_dir).summary, summary)


def run_post_run(run_dir: str | Path, *, device: str = "cpu") -> dict:
    """The post-run steps that apply to the run's task (icl_lab.post_run), again, on a stored run
    (`icl-lab measure RUN --post-run`), under the run's lock; a finished run's summary.json gets
    their entries. Returns those entries."""
    from icl_lab.post_run import run_post_run_steps
    from icl_lab.store import atomic_write_json, paths, read_summary

    run_dir = Path(run_dir)
    config = run_config_of(run_dir)
    if not checkpoint_steps(run_dir):
        raise RunError(f"{run_dir} has no checkpoints")
    with RunLock.of_run(run_dir, "measure --post-run"):
        entries = run_post_run_steps(run_dir, config.task, device=str(resolve_device(device)))
        summary = read_summary(run_dir)
        if summary:
            atomic_write_json(paths(run_dir).summary, {**summary, **entries})
    return entries
