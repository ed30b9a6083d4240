"""The tracking backends: their names, the extra that installs each, and one small interface.

    tracker = open_tracker("tensorboard", run_name, key, config, folder)
    tracker.log(step, {"icl_accuracy": 0.93, "train_loss": 0.41})   # at evaluation steps only
    tracker.close()

Every backend writes offline into `folder`: TensorBoard event files, a W&B offline run
(`mode="offline"`, synced later with `wandb sync` if wanted), trackio's local SQLite store.
Nothing needs an account or the network. Each library is an optional extra, imported only
when a tracker opens; `check_backends` refuses a name or a missing extra before any work.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any, Protocol

from icl_lab.config import ConfigError

# backend -> (module of ours, the library it needs, the pyproject extra that installs it)
BACKENDS = {
    "tensorboard": ("icl_lab.tracking.to_tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("icl_lab.tracking.to_wandb", "wandb", "wandb"),
    "trackio": ("icl_lab.tracking.to_trackio", "trackio", "trackio"),
}


class TrackingError(ConfigError):
    """An unknown backend, a missing extra, or a run that cannot be exported (exit code 2)."""


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def install_command(backend: str) -> str:
    return f'pip install "icl-lab[{BACKENDS[backend][2]}]"'


def parse_backends(text: str | list[str]) -> list[str]:
    """'tensorboard,wandb' -> ['tensorboard', 'wandb'], each known and installed, in order,
    without repeats; else TrackingError naming the bad name and the choices, or the install command."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    if not names or any(not n for n in names):
        raise TrackingError(f"no tracking backend in {text!r}; choose from {', '.join(BACKENDS)} (comma-separated)")
    for name in names:
        if name not in BACKENDS:
            raise TrackingError(f"unknown tracking backend {name!r}; choose from {', '.join(BACKENDS)}")
        library = BACKENDS[name][1]
        if importlib.util.find_spec(library) is None:
            raise TrackingError(f"tracking backend {name!r} needs the {library} package, which is not installed: "
                                f"{install_command(name)}")
    return list(dict.fromkeys(names))


def tracking_key(run_dir: str | Path) -> str:
    """The run's name in a tracker: its folder name and a hash of its absolute path, so runs
    with the same name in two sweeps stay apart (a W&B run id allows letters, digits, - and _)."""
    run_dir = Path(run_dir).resolve()
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", run_dir.name)[:48] or "run"
    return f"{name}-{hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]}"


def backend_module(backend: str):
    return importlib.import_module(BACKENDS[backend][0])


def open_tracker(backend: str, run_name: str, key: str, config: dict[str, Any], folder: Path, *, resume: bool = False) -> Tracker:
    """A tracker writing run `key` (shown as `run_name`) under `folder`, offline."""
    return backend_module(backend).open(run_name, key, config, Path(folder), resume=resume)
