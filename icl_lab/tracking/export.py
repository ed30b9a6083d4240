"""`export_run`: one finished (or stopped, or failed) run's metrics into a tracker, offline.

The run directory is only read (metrics.parquet is the source of truth; no byte of the run
changes). Every run is checked before anything is written: a run another process is writing,
one marked running that nobody holds (killed: resume it first), or one whose files fail the
store's checks is refused, naming it. The export is written into a staging folder inside
`dest` and moved into place at the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from icl_lab.store import RunError, RunLock, load_metrics, read_config, read_status
from icl_lab.store.checks import check_run_files
from icl_lab.tracking.backends import TrackingError, backend_module, open_tracker, parse_backends, tracking_key


def default_destination(backend: str) -> Path:
    """runs/tracking/<backend>: beside the runs, never inside one (an export never changes a run)."""
    return Path("runs") / "tracking" / backend


def rows_by_step(run_dir: str | Path) -> list[tuple[int, dict[str, float]]]:
    """metrics.parquet as (step, {metric: value}), steps ascending, metrics sorted."""
    frame = load_metrics(run_dir).sort("step", "metric")
    grouped: dict[int, dict[str, float]] = {}
    for step, metric, value in frame.iter_rows():
        grouped.setdefault(int(step), {})[metric] = float(value)
    return list(grouped.items())


def check_exportable(run_dir: str | Path) -> None:
    """TrackingError naming the run when it is not a run, is being written, was killed while
    running, or fails the store's checks (a corrupt file)."""
    run_dir = Path(run_dir)
    try:
        read_config(run_dir)
    except RunError as err:
        hint = f" (a folder of runs? name them: {run_dir / 'runs'}/*)" if (run_dir / "runs").is_dir() else ""
        raise TrackingError(f"{err}{hint}; nothing was exported") from None
    try:
        holder = RunLock.holder(run_dir)
        if holder is not None and holder.alive():
            raise TrackingError(f"run {run_dir} is running ({holder.describe()} holds it); export it when it ends; nothing was exported")
        state = read_status(run_dir).get("state")
        if state == "running":
            raise TrackingError(f"run {run_dir} is marked running but no process holds it (it was killed): "
                                f"continue it with `icl-lab resume {run_dir}`, then export it; nothing was exported")
        check_run_files(run_dir)
        load_metrics(run_dir)
    except TrackingError:
        raise
    except RunError as err:
        raise TrackingError(f"run {run_dir} is corrupt, nothing was exported: {err}") from None


def already_exported(backend: str, key: str, dest: Path) -> Path | None:
    """Where `dest` already holds run `key` for `backend` (None: it does not)."""
    if backend == "tensorboard":
        return dest / key if (dest / key).exists() else None
    if backend == "wandb":
        found = sorted((dest / "wandb").glob(f"offline-run-*-{key}"))
        return found[0] if found else None
    names = backend_module("trackio").run_names(dest)
    return dest / f"{backend_module('trackio').PROJECT}.db" if key in names else None


def write_run(run_dir: Path, backend: str, folder: Path) -> None:
    """All of a run's metric rows, one log call per evaluation step, into a tracker at `folder`."""
    tracker = open_tracker(backend, run_dir.name, tracking_key(run_dir), read_config(run_dir), folder)
    try:
        for step, values in rows_by_step(run_dir):
            tracker.log(step, values)
    finally:
        tracker.close()


def export_runs(run_dirs: Iterable[str | Path], backend: str, dest: str | Path | None = None, *,
                replace: bool = False) -> list[Path]:
    """Export each run's metrics to `backend` under `dest` (default runs/tracking/<backend>);
    returns where each run went. All or nothing: every run is checked first, then written into
    a staging folder, then moved into place. A run already in `dest` is refused, or with
    `replace` its earlier copy is replaced once the new one is staged (rows added since by
    `icl-lab measure`, say)."""
    parse_backends([backend])
    runs = [Path(r) for r in run_dirs]
    dest = Path(dest) if dest is not None else default_destination(backend)
    keys = [tracking_key(r) for r in runs]
    if len(set(keys)) < len(keys):
        raise TrackingError("the same run is named twice; nothing was exported")
    for run in runs:
        check_exportable(run)
    for run, key in zip(runs, keys):
        there = already_exported(backend, key, dest)
        if there is not None and not replace:
            raise TrackingError(f"run {run} is already exported to {there}; pass --replace to replace it, or choose "
                                "another --dest; nothing was exported")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=dest))
    try:
        for run in runs:
            write_run(run, backend, staging)
        return move_into_place(backend, runs, keys, staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(backend: str, runs: list[Path], keys: list[str], staging: Path, dest: Path) -> list[Path]:
    if backend == "trackio":
        # one SQLite store per folder: a new store is moved whole; into an existing one the
        # rows are logged again, once the staging export has succeeded
        trackio = backend_module("trackio")
        store = dest / f"{trackio.PROJECT}.db"
        if not store.exists():
            (staging / store.name).rename(store)
        else:
            for run in runs:
                write_run(run, backend, dest)  # a fresh trackio run replaces one of the same name
        return [store] * len(runs)
    placed = []
    for key in keys:
        for entry in backend_module(backend).exported_entries(staging, key):
            target = dest / entry.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            for old in backend_module(backend).exported_entries(dest, key):  # only with replace (checked above)
                shutil.rmtree(old)
            entry.rename(target)
            placed.append(target)
    return placed


def export_run(run_dir: str | Path, backend: str, dest: str | Path | None = None, *, replace: bool = False) -> Path:
    """Export one run (see `export_runs`); returns where it went."""
    return export_runs([run_dir], backend, dest, replace=replace)[0]
