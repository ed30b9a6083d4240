"""trackio: its local store, FOLDER/icl-lab.db (SQLite; `TRACKIO_DIR=FOLDER trackio show`),
one trackio run per lab run in the project `icl-lab`. No Space, server or bucket is used. A
run started again from scratch replaces its rows; a resumed one appends (`resume="allow"`).

trackio keeps its store folder in a module constant read when it is imported (TRACKIO_DIR);
`use_store` points every loaded trackio module at the folder, so one process can write to
two stores (an export's staging folder, then its destination)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

PROJECT = "icl-lab"
# trackio uses a Space, a server or a bucket when one of these is set: never here
REMOTE_ENV = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID")


def use_store(folder: Path) -> None:
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in REMOTE_ENV:
        os.environ.pop(name, None)
    os.environ["TRACKIO_DIR"] = str(folder)
    import trackio  # noqa: F401  (loads the modules patched below)

    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "trackio" and isinstance(getattr(module, "TRACKIO_DIR", None), Path):
            module.TRACKIO_DIR = folder
            for sub, name in (("MEDIA_DIR", "media"), ("ARTIFACTS_DIR", "artifacts")):
                if isinstance(getattr(module, sub, None), Path):
                    setattr(module, sub, folder / name)


class TrackioTracker:
    def __init__(self, key: str, config: dict[str, Any], folder: Path, resume: bool):
        use_store(folder)
        import trackio

        if not resume and key in run_names(folder):  # a run started again (--overwrite) replaces its rows
            from trackio.sqlite_storage import SQLiteStorage

            SQLiteStorage.delete_run(PROJECT, key)
        with contextlib.redirect_stdout(io.StringIO()):  # its banner (dashboard hints) is not ours to print
            self.run = trackio.init(project=PROJECT, name=key, config=config, embed=False, auto_log_cpu=False,
                                    auto_log_gpu=False, resume="allow" if resume else "never")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=int(step))

    def close(self) -> None:
        from trackio import context_vars

        with contextlib.redirect_stdout(io.StringIO()):
            self.run.finish()
        if context_vars.current_run.get() is self.run:  # else trackio's exit hook finishes it again
            context_vars.current_run.set(None)


def open(run_name: str, key: str, config: dict[str, Any], folder: Path, *, resume: bool = False) -> TrackioTracker:
    return TrackioTracker(key, config, folder, resume)


def read_logs(folder: Path, key: str) -> list[dict[str, Any]]:
    """The rows trackio stored for run `key` in the store at `folder` (trackio's own reader)."""
    use_store(folder)
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs(PROJECT, key)


def run_names(folder: Path) -> list[str]:
    use_store(folder)
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_runs(PROJECT) if (Path(folder) / f"{PROJECT}.db").exists() else []
