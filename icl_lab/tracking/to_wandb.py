"""Weights & Biases, offline: a run folder FOLDER/wandb/offline-run-<time>-<key>/ holding the
`.wandb` transaction log (`wandb sync` uploads it later, if ever). The run never asks for a
login or reaches the network. Each row is logged with its training step as the `step` metric
(`define_metric("*", step_metric="step")`), so rows added at earlier steps are kept. A run
started again from scratch replaces its offline run; a resumed one adds a part with the same
id (`resume="allow"`), which `wandb sync` joins."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT = "icl-lab"
# offline, quiet, no git/code/system probing; the user's own W&B settings are otherwise kept
OFFLINE_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
               "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}


class WandbTracker:
    def __init__(self, run_name: str, key: str, config: dict[str, Any], folder: Path, resume: bool):
        os.environ.update(OFFLINE_ENV)
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        if not resume:  # a run started again (--overwrite): its old offline run has the same id
            for old in exported_entries(folder, key):
                shutil.rmtree(old)
        # W&B names a run's folder by its start second: a part resumed within the same second
        # as the last one would write into that part's folder (and lose its rows)
        while (folder / "wandb" / f"offline-run-{datetime.now():%Y%m%d_%H%M%S}-{key}").exists():
            time.sleep(0.05)
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True, save_code=False,
                                  disable_git=True, silent=True)
        self.run = wandb.init(project=PROJECT, name=run_name, id=key, dir=str(folder), mode="offline", config=config,
                              settings=settings, reinit="create_new", resume="allow" if resume else None)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"step": int(step), **values})

    def close(self) -> None:
        self.run.finish()


def open(run_name: str, key: str, config: dict[str, Any], folder: Path, *, resume: bool = False) -> WandbTracker:
    return WandbTracker(run_name, key, config, folder, resume)


def exported_entries(folder: Path, key: str) -> list[Path]:
    """Run `key`'s offline run folders in `folder` (in an export's staging folder, the one it
    made; the `latest-run` and log links beside it are not kept)."""
    return sorted((folder / "wandb").glob(f"offline-run-*-{key}"))
