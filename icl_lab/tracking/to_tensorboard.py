"""TensorBoard: event files in FOLDER/<key>/ (`tensorboard --logdir FOLDER`). Scalars are
stored as float32, TensorBoard's scalar type; the config is a text summary at step 0. A run
started again from scratch replaces its folder; a resumed one adds an event file to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


class TensorBoardTracker:
    def __init__(self, log_dir: Path, config: dict[str, Any], resume: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        if not resume and log_dir.is_dir():  # a run started again (--overwrite): its old events would mix in
            shutil.rmtree(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=3600)  # flushed at each evaluation
        if not resume:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open(run_name: str, key: str, config: dict[str, Any], folder: Path, *, resume: bool = False) -> TensorBoardTracker:
    return TensorBoardTracker(folder / key, config, resume)


def exported_entries(folder: Path, key: str) -> list[Path]:
    """Run `key`'s entries in `folder` (an export's staging folder: each is moved to the same
    name in the destination)."""
    return [folder / key] if (folder / key).is_dir() else []
