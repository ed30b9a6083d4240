"""One writer per run: an exclusive lock file holding the writer's pid, host, verb and start time."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from icl_lab.store.files import load_metrics, read_config, read_status, read_summary
from icl_lab.store.layout import RunError, RunLocked, paths


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    verb: str
    started: str

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot tell from here: assume it is
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _is_not_zombie(self.pid)

    def describe(self) -> str:
        return f"`icl-lab {self.verb}` (pid {self.pid} on {self.host}, since {self.started})"


def _is_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class RunLock:
    """An exclusive lock file in the run directory, created atomically (hard link of a
    complete temporary file), holding the writer's pid, host, verb and start time.

    A second writer is refused with `RunLocked` naming the holder; a lock whose holder is
    gone (same host, process ended) is taken over with a one-line notice on stderr."""

    def __init__(self, run_dir: str | Path, verb: str):
        self.paths = paths(run_dir)
        self.verb = verb
        self.held = False

    @staticmethod
    def holder(run_dir: str | Path) -> LockHolder | None:
        path = paths(run_dir).lock
        try:
            data = json.loads(path.read_text())
            return LockHolder(int(data["pid"]), str(data["host"]), str(data["verb"]), str(data["started"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return LockHolder(-1, socket.gethostname(), "unknown", "unknown")  # unreadable: stale

    def acquire(self) -> "RunLock":
        if not self.paths.dir.is_dir():
            raise RunError(f"{self.paths.dir} is not a run directory (no such directory)")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "verb": self.verb,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        fd, tmp = tempfile.mkstemp(dir=self.paths.dir, prefix=".lock.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            for _ in range(3):
                try:
                    os.link(tmp, self.paths.lock)
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self.holder(self.paths.dir)
                    if holder is None:
                        continue
                    if holder.pid == os.getpid() and holder.host == record["host"]:
                        raise RunLocked(f"run {self.paths.dir} is already held by this process ({holder.verb})")
                    if holder.alive():
                        raise RunLocked(f"run {self.paths.dir} is being written by {holder.describe()}; try again when it ends")
                    print(f"icl-lab: taking over the lock of {self.paths.dir} from {holder.describe()}, which is gone",
                          file=sys.stderr)
                    self.paths.lock.unlink(missing_ok=True)
            raise RunLocked(f"could not lock {self.paths.dir}: another process keeps taking it")
        finally:
            os.unlink(tmp)

    def release(self) -> None:
        if self.held:
            holder = self.holder(self.paths.dir)
            if holder is not None and holder.pid == os.getpid():
                self.paths.lock.unlink(missing_ok=True)
            self.held = False

    @classmethod
    def of_run(cls, run_dir: str | Path, verb: str) -> "RunLock":
        """The lock of an existing run (checked to be one, every file readable), for verbs
        that add to it."""
        check_run(run_dir)
        return cls(run_dir, verb)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_run(run_dir: str | Path) -> None:
    """Refuse, before any work, a run that another live process writes (RunLocked naming it)
    or whose config, status, summary or metrics cannot be read (RunError naming the file):
    verbs that add to a run or continue it check it whole first."""
    read_config(run_dir)
    holder = RunLock.holder(run_dir)
    if holder is not None and holder.pid != os.getpid() and holder.alive():
        raise RunLocked(f"run {run_dir} is being written by {holder.describe()}; try again when it ends")
    read_status(run_dir)
    read_summary(run_dir)
    load_metrics(run_dir)
