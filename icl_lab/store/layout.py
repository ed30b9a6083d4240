"""Where everything of a run lives: every path inside a run directory is built here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from icl_lab.config import ConfigError


METRICS_SCHEMA = {"step": pl.Int64, "metric": pl.String, "value": pl.Float64}

STATES = ("running", "done", "failed", "stopped")  # stopped: interrupted on purpose, resumable
# a member's status in a grid's table (a sweep's): its run's state, `locked` while another live
# process writes it, `pending` before it starts; listed in this order in the one-line outcome
MEMBER_STATES = ("done", "failed", "locked", "stopped", "running", "pending")


class RunError(ConfigError):
    """A user-facing problem with a run directory or one of its files (CLI exit code 2)."""


class RunLocked(RunError):
    """Another live process is writing this run."""


@dataclass(frozen=True)
class RunPaths:
    """Every path inside one run directory."""

    dir: Path

    config = property(lambda self: self.dir / "config.json")
    status = property(lambda self: self.dir / "status.json")
    summary = property(lambda self: self.dir / "summary.json")
    metrics = property(lambda self: self.dir / "metrics.parquet")
    lock = property(lambda self: self.dir / ".lock")
    manifest = property(lambda self: self.dir / "manifest.json")
    checkpoints = property(lambda self: self.dir / "checkpoints")
    ablations = property(lambda self: self.dir / "ablations")

    def weights(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.safetensors"

    def state_tensors(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.state.safetensors"

    def state_record(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.state.json"

    def pickled_state(self, step: int) -> Path:
        """Where the lab's old format kept training state (pickle: never read)."""
        return self.checkpoints / f"step_{step}.state.pt"

    def ablation_table(self, name: str) -> Path:
        return self.ablations / f"{name}.parquet"

    def ablation_tables(self) -> dict[str, Path]:
        folder = self.ablations
        return {p.stem: p for p in sorted(folder.glob("*.parquet"))} if folder.is_dir() else {}


# the top-level entries of a run directory (which files --overwrite removes: see manifest.py)
LAYOUT_NAMES = {"config.json", "status.json", "summary.json", "metrics.parquet", "manifest.json", ".lock", "checkpoints", "ablations"}


def paths(run_dir: str | Path) -> RunPaths:
    return RunPaths(Path(run_dir))
