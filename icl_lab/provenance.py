"""What a run records about where it ran: package versions, git commit, device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path

import torch

from icl_lab.config import ConfigError

# the keys provenance_record writes into config.json beside the run's config, and the list of
# `icl-lab resume --steps` parts; RunConfig.from_dict reads a config.json past them
PROVENANCE_KEYS = ("resolved_device", "device_description", "versions", "git", "created")
RECORD_KEYS = (*PROVENANCE_KEYS, "extended")
PACKAGES = ("torch", "transformer-lens", "numpy", "polars", "einops", "safetensors", "icl-lab")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(path: Path | None = None) -> dict[str, str | bool | None]:
    """The commit of the source tree icl_lab was imported from, and whether it had changes."""
    path = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance_record(device: torch.device) -> dict[str, object]:
    """What every run's config.json records about where and with what it ran."""
    return {
        "resolved_device": str(device),
        "device_description": device_description(device),
        "versions": package_versions(),
        "git": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cpu`/`cuda`/`cuda:N` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} asked for but CUDA is not available in this torch "
                f"({torch.__version__}); use --device auto or cpu"
            )
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
