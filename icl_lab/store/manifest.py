"""manifest.json: every file the lab wrote into a run, so `--overwrite` removes those and nothing else.

    {"format": "icl-lab run manifest", "version": 1,
     "files": {"metrics.parquet": {"size": 5123, "sha256": "9f…", "replaces": "41…"}, ...}}

Paths are relative to the run directory, with "/". `atomic_write` keeps the manifest current:
it records a file's size and sha256 (hashed from the temporary file it just wrote, so no
second read) before renaming it into place, with the digest of the content it replaces
("replaces"), so a run killed between the two steps leaves a file the manifest still accepts.
Removed files are forgotten. Only the run's one writer (holding its lock) writes either.

Runs written before the manifest existed have none; they count as the lab's only when their
config.json and status.json are the lab's (`is_run_dir`) and every file at every depth fits
the run layout (`is_layout_file`: the layout's names, step numbers, the lab's temporary
files). They get a manifest when they are next created anew (`--overwrite`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from icl_lab.store.layout import RunError

NAME = "manifest.json"
FORMAT = "icl-lab run manifest"
FOLDERS = ("checkpoints", "ablations")  # a run's only folders

_LAYOUT = re.compile(
    r"(config\.json|status\.json|summary\.json|metrics\.parquet"
    r"|checkpoints/step_\d+\.(safetensors|state\.safetensors|state\.json|state\.pt)"
    r"|ablations/\w+_step\d+\.parquet)"
)
_TEMPORARY = re.compile(r"(?P<folder>(\w+/)?)\.(?P<name>[^/]+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's names


def is_layout_file(relative: str) -> bool:
    """A path (relative, "/") that the run layout names, or a temporary file the lab's atomic
    writes (or a lab killed mid-write) leave beside one."""
    if relative in (NAME, ".lock") or _LAYOUT.fullmatch(relative):
        return True
    temporary = _TEMPORARY.fullmatch(relative)
    return bool(temporary) and is_layout_file(temporary["folder"] + temporary["name"])


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def run_of(path: Path) -> tuple[Path, str] | None:
    """(run directory, path relative to it) when `path` lies in a run that has a manifest."""
    folder = path.parent
    if (folder / NAME).is_file():
        return folder, path.name
    if folder.name in FOLDERS and (folder.parent / NAME).is_file():
        return folder.parent, f"{folder.name}/{path.name}"
    return None


def load(run_dir: Path) -> dict[str, dict] | None:
    """The manifest's files (None: the run has no manifest); RunError when it is not ours."""
    path = Path(run_dir) / NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunError(f"{path}: not readable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        raise RunError(f"{path}: not a run manifest written by icl-lab")
    return data["files"]


def save(run_dir: Path, files: dict[str, dict]) -> None:
    path = Path(run_dir) / NAME
    body = json.dumps({"format": FORMAT, "version": 1, "files": dict(sorted(files.items()))}, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def note(path: Path, written: Path) -> str:
    """Record `written` (the new content of `path`, about to be renamed over it) in the
    manifest of the run holding `path`, if any. Returns its sha256."""
    sha = digest(written)
    found = run_of(path)
    try:
        files = load(found[0]) if found is not None else None
    except RunError:
        files = None  # someone else's manifest.json (a folder that is not a run): not ours to keep
    if files is not None:
        run_dir, relative = found
        entry = {"size": os.path.getsize(written), "sha256": sha}
        old = files.get(relative)
        if isinstance(old, dict) and old.get("sha256") != sha:
            entry["replaces"] = old.get("sha256")
        files[relative] = entry
        save(run_dir, files)
    return sha


def forget(run_dir: Path, removed: list[Path]) -> None:
    """Drop removed files from the manifest (after they are gone: a kill in between leaves
    the manifest naming a missing file, which is harmless)."""
    files = load(run_dir)
    if files is None:
        return
    for path in removed:
        files.pop(Path(path).relative_to(run_dir).as_posix(), None)
    save(run_dir, files)


def _matches(path: Path, entry: dict) -> bool:
    if not isinstance(entry, dict):
        return False
    accepted = {entry.get("sha256"), entry.get("replaces")} - {None}
    if os.path.getsize(path) != entry.get("size") and entry.get("replaces") is None:
        return False
    return digest(path) in accepted


def lab_files(run_dir: Path) -> tuple[list[Path], list[str]]:
    """(every file and folder of the run that the lab wrote, each folder after its content;
    the relative paths of everything else, with why). With a manifest a file is the lab's when
    the manifest lists it with these bytes; without one, when its path fits the run layout
    (the caller checks that config.json is the lab's)."""
    files = load(run_dir)
    ours: list[Path] = []
    foreign: list[str] = []
    for folder, dirnames, filenames in os.walk(run_dir, topdown=False):
        for name in filenames + dirnames:
            path = Path(folder) / name
            relative = path.relative_to(run_dir).as_posix()
            why = _why_not_ours(path, relative, files)
            if why is None:
                ours.append(path)
            else:
                foreign.append(f"{relative}{why}")
    return ours, sorted(foreign)


def _why_not_ours(path: Path, relative: str, files: dict[str, dict] | None) -> str | None:
    """None when the lab wrote `path`; else why not ("" when it is simply not the lab's)."""
    if path.is_symlink() or not (path.is_file() or path.is_dir()):
        return " (not a plain file or folder)"
    if path.is_dir():
        return None if relative in FOLDERS else ""
    if relative in (NAME, ".lock") or (_TEMPORARY.fullmatch(relative) and is_layout_file(relative)):
        return None
    if files is None:
        return None if is_layout_file(relative) else ""
    if relative not in files:
        return ""
    return None if _matches(path, files[relative]) else " (changed since icl-lab wrote it)"
