"""Reading and writing a run's files: atomic writes, and reads that name the file when it is
corrupt or foreign (`RunError`). Readers never take the run's lock."""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import icl_lab.store.manifest as manifest
from icl_lab.store.layout import METRICS_SCHEMA, STATES, RunError, paths


def atomic_write(path: Path, write: Callable[[str], Any]) -> str:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, record it in the
    run's manifest (when `path` is in a run that has one), rename it over `path`. Returns
    the sha256 of what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        sha = manifest.note(path, Path(tmp))
        os.replace(tmp, path)
        return sha
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> str:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> str:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


sha256_of = manifest.digest


def exists(path: Path) -> bool:
    """Whether `path` exists; RunError when it is a symlink to nothing or a symlink loop (which
    `Path.exists` calls missing: a reader would take the file for empty, a writer replace it)."""
    if path.exists():
        return True
    if os.path.lexists(path):
        raise RunError(f"{path}: a symlink that leads nowhere (or a symlink loop); icl-lab writes plain files here")
    return False


def read_json(path: Path, default: Any = None, expect: type | None = dict) -> Any:
    """A JSON file's content, `default` when it does not exist; RunError when it is not JSON
    or not of the `expect`ed type."""
    path = Path(path)
    if not exists(path):
        return default
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: not readable JSON ({type(err).__name__}: {err})") from None
    if expect is not None and not isinstance(data, expect):
        raise RunError(f"{path}: expected a JSON {expect.__name__}, found {type(data).__name__}")
    return data


def metrics_frame(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")


def load_metrics(run_dir: str | Path) -> pl.DataFrame:
    path = paths(run_dir).metrics
    if not exists(path):
        return metrics_frame([])
    try:  # one read of the bytes: a writer's rename mid-read cannot mix two versions
        frame = pl.read_parquet(io.BytesIO(path.read_bytes()))
    except Exception as err:  # polars raises several types for a torn or foreign file
        raise RunError(f"{path}: not a readable metrics table ({type(err).__name__}: {err})") from None
    if dict(frame.schema) != METRICS_SCHEMA:
        raise RunError(f"{path}: columns {dict(frame.schema)} are not the store's {METRICS_SCHEMA}")
    return frame


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run; RunError when the directory is not a run or the file is corrupt."""
    p = paths(run_dir)
    if not p.dir.is_dir():
        why = "a file, not a directory" if p.dir.exists() else "no such directory"
        raise RunError(f"{p.dir} is not a run directory ({why})")
    config = read_json(p.config)
    if config is None:
        raise RunError(f"{p.dir} is not a run directory (no config.json)")
    if "task" not in config and config.get("kind") != "rfm":
        raise RunError(f"{p.config}: not a run config written by icl-lab (no 'task' key)")
    return config


def read_status(run_dir: str | Path) -> dict[str, Any]:
    p = paths(run_dir)
    status = read_json(p.status, {"state": "unknown"})
    if status.get("state") not in STATES + ("unknown",):
        raise RunError(f"{p.status}: state {status.get('state')!r} is not one of {', '.join(STATES)}")
    return status


def run_state(run_dir: str | Path) -> str:
    """A run's state, or "missing" when it has no status.json (never started)."""
    return read_json(paths(run_dir).status, {"state": "missing"}).get("state", "missing")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return read_json(paths(run_dir).summary, {})


def is_run_dir(path: str | Path) -> bool:
    """True when `path` holds a run this lab wrote: config.json and status.json parse as ours."""
    try:
        read_config(path)
        return read_status(path)["state"] in STATES
    except RunError:
        return False


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None


@dataclass
class Run:
    """A run read back from its directory."""

    dir: Path
    config: dict[str, Any]
    status: dict[str, Any]
    metrics: pl.DataFrame
    summary: dict[str, Any]

    @property
    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.dir)

    def curve(self, metric: str) -> pl.DataFrame:
        """(step, value) of one metric, sorted by step."""
        return self.metrics.filter(pl.col("metric") == metric).select("step", "value").sort("step")

    def wide(self) -> pl.DataFrame:
        """One row per step, one column per metric."""
        return self.metrics.pivot(on="metric", index="step", values="value").sort("step")


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    folder = paths(run_dir).checkpoints
    if not folder.is_dir():
        return []
    steps = []
    for p in folder.glob("step_*.safetensors"):
        stem = p.name.removesuffix(".safetensors").removeprefix("step_")
        if stem.isdigit():
            steps.append(int(stem))
    return sorted(steps)


def load_checkpoint(run_dir: str | Path, step: int) -> dict[str, torch.Tensor]:
    path = paths(run_dir).weights(step)
    if not path.exists():
        raise RunError(f"no checkpoint at step {step} in {run_dir}; steps: {checkpoint_steps(run_dir)}")
    return _load_safetensors(path)


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    return Run(
        dir=run_dir,
        config=read_config(run_dir),
        status=read_status(run_dir),
        metrics=load_metrics(run_dir),
        summary=read_summary(run_dir),
    )


def list_runs(root: str | Path, max_depth: int = 6, max_dirs: int = 20_000) -> list[Path]:
    """Every run directory (holding a config.json) under `root`, at most `max_depth` levels
    down and after looking in at most `max_dirs` directories (hidden ones and a run's own
    folders are skipped), sorted. Raises RunError when the bound stops the scan."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[Path] = []
    frontier, seen = [(root, 0)], 0
    while frontier:
        folder, depth = frontier.pop()
        seen += 1
        if seen > max_dirs:
            raise RunError(f"gave up scanning {root} for runs after {max_dirs} directories; point it at a runs folder")
        if (folder / "config.json").is_file():
            found.append(folder)
            continue  # a run's own folders hold no runs
        if depth >= max_depth:
            continue
        try:
            children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith(".")]
        except OSError:
            continue
        frontier += [(c, depth + 1) for c in children]
    return sorted(found)


def append_metrics(run_dir: str | Path, rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    """Add (step, metric, value) rows to a run's metrics, replacing rows with the same
    (step, metric); written atomically. The caller holds the run's lock. Returns the new metrics."""
    new = metrics_frame(rows)
    old = load_metrics(run_dir)
    keep = old.join(new.select("step", "metric"), on=["step", "metric"], how="anti")
    merged = pl.concat([keep, new]).sort(["step", "metric"])
    atomic_write(paths(run_dir).metrics, lambda tmp: merged.write_parquet(tmp))
    return merged


def write_ablation_table(run_dir: str | Path, name: str, table: pl.DataFrame) -> Path:
    path = paths(run_dir).ablation_table(name)
    atomic_write(path, lambda tmp: table.write_parquet(tmp))
    return path


def read_table(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(io.BytesIO(path.read_bytes()))
    except Exception as err:
        raise RunError(f"{path}: not a readable table ({type(err).__name__}: {err})") from None
