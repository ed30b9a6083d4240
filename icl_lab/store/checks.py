"""Checks a run passes before a verb adds to it or continues it, so that a refusal comes
before any byte is written: every file readable, the layout's folders folders, and the
metrics holding every row the newest checkpoint says were written."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from icl_lab.store.files import (
    checkpoint_steps,
    load_metrics,
    read_json,
    read_status,
    read_summary,
)
import icl_lab.store.manifest as manifest
from icl_lab.store.layout import RunError, paths


def check_folders(run_dir: str | Path) -> None:
    """checkpoints/ and ablations/ are folders when they exist (a file there would make the
    first checkpoint fail only after resume had rewritten the metrics)."""
    p = paths(run_dir)
    for folder in (p.checkpoints, p.ablations):
        if os.path.lexists(folder) and not folder.is_dir():
            raise RunError(f"{folder}: a file where the run's {folder.name}/ folder should be; move it away "
                           "(icl-lab keeps the run's checkpoints and ablation tables in these folders)")


def check_files_are_files(run_dir: str | Path) -> None:
    """Every file of the run's layout that exists is a regular file (not a folder, not a link
    that leads nowhere): a folder named like a checkpoint would otherwise fail only when resume
    rewinds the run, after it has started writing."""
    p = paths(run_dir)
    candidates = [p.config, p.status, p.summary, p.metrics, p.dir / "manifest.json"]
    if p.checkpoints.is_dir():
        candidates += sorted(p.checkpoints.iterdir())
    if p.ablations.is_dir():
        candidates += sorted(p.ablations.iterdir())
    for path in candidates:
        if os.path.lexists(path) and not path.is_file():
            if path.is_symlink() and not path.exists():
                raise RunError(f"{path}: a symlink that leads nowhere (or a symlink loop); icl-lab writes plain files here")
            what = "a folder" if path.is_dir() else "not a regular file"
            raise RunError(f"{path}: {what} where the run keeps a file; move it away")


def newest_state_record(run_dir: str | Path) -> tuple[int, dict] | None:
    """(step, record) of the newest checkpoint with a readable training-state record; None
    when there is none (a run before its first checkpoint, or one with weights only)."""
    p = paths(run_dir)
    for step in reversed(checkpoint_steps(run_dir)):
        try:
            record = read_json(p.state_record(step))
        except RunError:
            continue  # a torn record: resume skips it and says so
        if isinstance(record, dict):
            return step, record
    return None


def check_metrics_cover_checkpoints(run_dir: str | Path, metrics: pl.DataFrame) -> None:
    """Refuse metrics missing rows that the newest checkpoint records: its evaluation steps,
    and the number of rows up to its step (`metric_rows`, written by newer runs). The trainer
    writes an evaluation's rows before the checkpoint after it, so missing rows were deleted,
    and continuing would finish the run without them."""
    newest = newest_state_record(run_dir)
    if newest is None:
        return
    step, record = newest
    p = paths(run_dir)
    state = record.get("state")
    evals = state.get("eval_steps") if isinstance(state, dict) else None
    if isinstance(evals, list) and all(type(s) is int for s in evals):
        missing = sorted(set(evals) - set(metrics["step"].unique().to_list()))
        if missing:
            found = "is missing" if not p.metrics.exists() else f"has no rows at {len(missing)} of those steps (first {missing[0]})"
            raise RunError(f"{p.metrics} {found}, but {p.state_record(step).name} records evaluations at {len(evals)} steps "
                           "whose rows are part of the run: restore the file, or start the run again with --overwrite")
    rows = record.get("metric_rows")
    have = metrics.filter(pl.col("step") <= step).height
    if type(rows) is int and have < rows:
        raise RunError(f"{p.metrics} holds {have} rows up to step {step}, but {p.state_record(step).name} records {rows}: "
                       "rows were deleted; restore the file, or start the run again with --overwrite")


def check_run_files(run_dir: str | Path) -> None:
    """RunError naming the file when status, summary, metrics or the manifest cannot be read,
    a folder of the layout is a file or a file of it a folder, or the metrics lack rows the
    checkpoints record."""
    check_folders(run_dir)
    check_files_are_files(run_dir)
    manifest.load(Path(run_dir))  # RunError naming manifest.json when it is not readable
    read_status(run_dir)
    read_summary(run_dir)
    check_metrics_cover_checkpoints(run_dir, load_metrics(run_dir))
