"""The run store: one directory per run, written atomically, read back with polars.

    RUN/
      config.json                 full RunConfig + seed + package versions + git commit
      metrics.parquet             long form: step (int64), metric (string), value (float64)
      checkpoints/step_<N>.safetensors
      status.json                 {"state": "running" | "done" | "failed", "error": ..., ...}
      summary.json                transitions found and run facts (when the run ends)

Every file is written to a temporary name in the same directory, flushed, then renamed over
the old one, so a run killed at any moment leaves each file either old or new, never torn.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors.torch import load_file, save_file

METRICS_SCHEMA = {"step": pl.Int64, "metric": pl.String, "value": pl.Float64}
STATES = ("running", "done", "failed")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def metrics_frame(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")


class RunWriter:
    """Writes one run directory. Metrics accumulate in memory; each flush rewrites the file."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "checkpoints").mkdir(exist_ok=True)
        self.rows: list[tuple[int, str, float]] = []
        atomic_write_json(self.dir / "config.json", config)
        self.set_status("running")

    @classmethod
    def reopen(cls, run_dir: str | Path, keep_until: int) -> "RunWriter":
        """Continue writing an existing run: metrics after `keep_until` are dropped (they are
        recomputed), config.json is kept, the status goes back to running."""
        writer = cls.__new__(cls)
        writer.dir = Path(run_dir)
        kept = load_metrics(writer.dir).filter(pl.col("step") <= keep_until)
        writer.rows = [(int(s), str(m), float(v)) for s, m, v in kept.iter_rows()]
        writer.flush_metrics()
        writer.set_status("running", resumed_from=keep_until)
        return writer

    def save_training_state(self, step: int, state: dict[str, Any]) -> Path:
        """Optimizer, schedule, RNG and loss-window state beside the step's weights (for resume)."""
        path = self.dir / "checkpoints" / f"step_{step}.state.pt"
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def add_metrics(self, step: int, values: dict[str, float]) -> None:
        for name in sorted(values):
            self.rows.append((int(step), name, float(values[name])))

    def flush_metrics(self) -> None:
        frame = metrics_frame(self.rows)
        atomic_write(self.dir / "metrics.parquet", lambda tmp: frame.write_parquet(tmp))

    def save_checkpoint(self, step: int, tensors: dict[str, torch.Tensor]) -> Path:
        path = self.dir / "checkpoints" / f"step_{step}.safetensors"
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata={"step": str(step)}))
        return path

    def set_status(self, state: str, error: str | None = None, **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"status {state!r} is not one of {STATES}")
        atomic_write_json(self.dir / "status.json", {"state": state, "error": error, **extra})

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.dir / "summary.json", summary)


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


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def load_metrics(run_dir: str | Path) -> pl.DataFrame:
    path = Path(run_dir) / "metrics.parquet"
    if not path.exists():
        return metrics_frame([])
    return pl.read_parquet(path)


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.exists():
        return []
    steps = []
    for p in folder.glob("step_*.safetensors"):
        try:
            steps.append(int(p.stem.removeprefix("step_")))
        except ValueError:
            continue
    return sorted(steps)


def load_checkpoint(run_dir: str | Path, step: int) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / "checkpoints" / f"step_{step}.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at step {step} in {run_dir}; steps: {checkpoint_steps(run_dir)}"
        )
    return load_file(str(path))


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    return Run(
        dir=run_dir,
        config=read_json(run_dir / "config.json"),
        status=read_json(run_dir / "status.json", {"state": "unknown"}),
        metrics=load_metrics(run_dir),
        summary=read_json(run_dir / "summary.json", {}),
    )


def list_runs(root: str | Path) -> list[Path]:
    """Every run directory under `root` (directories holding a config.json), sorted."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.rglob("config.json"))


def append_metrics(run_dir: str | Path, rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    """Add (step, metric, value) rows to a run's metrics, replacing rows with the same
    (step, metric); written atomically. Returns the new metrics."""
    run_dir = Path(run_dir)
    new = metrics_frame(rows)
    old = load_metrics(run_dir)
    keep = old.join(new.select("step", "metric"), on=["step", "metric"], how="anti")
    merged = pl.concat([keep, new]).sort(["step", "metric"])
    atomic_write(run_dir / "metrics.parquet", lambda tmp: merged.write_parquet(tmp))
    return merged
