"""One writer per run: `.lock`, held with flock(2) for the writer's whole life.

The kernel decides who holds a run: `fcntl.flock(LOCK_EX)` on the open `.lock` admits one
open file at a time and lets go when its process ends, however it ends, so taking over a
dead writer's lock is the same atomic call as taking a free one. The file's content (pid,
host, verb, start time) only says who holds it, for messages. A writer unlinks the file
while it still holds it, so a claimant that opened the old file checks, once it holds the
flock, that it holds the file now at `.lock` (same inode), and tries again otherwise.

Records without the "flock" mark were written by icl-lab before it used flock (or by hand);
their holder is judged by its pid as before: a live process on this host holds the run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from icl_lab.store.checks import check_run_files
from icl_lab.store.files import read_config
from icl_lab.store.layout import RunError, RunLocked, paths

PID_MAX = 1 << 22  # Linux's limit (/proc/sys/kernel/pid_max); larger pids are not processes


@dataclass(frozen=True)
class LockHolder:
    """Who a `.lock` names, and whether that writer holds the run: state is "held",
    "stale" (its writer is gone, or the record is unreadable) or "other host" (cannot tell)."""

    pid: int
    host: str
    verb: str
    started: str
    state: str = "held"
    path: Path | None = None

    def alive(self) -> bool:
        return self.state != "stale"

    def describe(self) -> str:
        if self.pid < 0:
            return f"an icl-lab writer whose record in {self.path} is unreadable"
        return f"`icl-lab {self.verb}` (pid {self.pid} on {self.host}, since {self.started})"

    def refusal(self, run_dir: Path) -> RunLocked:
        if self.state == "other host":
            return RunLocked(f"run {run_dir} is locked by {self.describe()}, another machine; icl-lab cannot tell "
                             f"whether it still runs: if it does not, delete {self.path}")
        if self.pid == os.getpid() and self.host == socket.gethostname():
            return RunLocked(f"run {run_dir} is already held by this process ({self.verb})")
        return RunLocked(f"run {run_dir} is being written by {self.describe()}; try again when it ends")


def _parse(text: str) -> dict | None:
    """The record in a `.lock`; None when it is not one (garbage, empty, another shape)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    keys = {"pid": int, "host": str, "verb": str, "started": str}
    if not isinstance(data, dict) or any(type(data.get(k)) is not t for k, t in keys.items()):
        return None
    return data


def _process_alive(pid: int) -> bool:
    """A process with this pid runs on this host (0, 1 and negative pids are never writers)."""
    if not 1 < pid < PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended


def _judge(path: Path, text: str, flock_held: bool) -> LockHolder:
    record = _parse(text)
    if record is None:
        return LockHolder(-1, "unknown", "unknown", "unknown", "held" if flock_held else "stale", path)
    holder = LockHolder(record["pid"], record["host"], record["verb"], record["started"], "held", path)
    if flock_held:
        return holder
    if holder.host != socket.gethostname():
        return LockHolder(**{**holder.__dict__, "state": "other host"})
    if record.get("flock") or not _process_alive(holder.pid):
        return LockHolder(**{**holder.__dict__, "state": "stale"})
    return holder  # an older icl-lab's record naming a live process


def _open_lock(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except FileNotFoundError:
        if flags & os.O_CREAT:
            raise RunError(f"cannot lock {path}: its run directory is gone") from None
        raise
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR):
            raise RunError(f"{path}: not a lock file (a {'symlink' if err.errno == errno.ELOOP else 'directory'}); "
                           "remove it if no icl-lab process writes this run") from None
        raise RunError(f"cannot lock {path}: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{path}: not a lock file (not a regular file); remove it if no icl-lab process writes this run")
    return fd


def _is_at(fd: int, path: Path) -> bool:
    """The open file `fd` is the one now at `path`."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _read(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")


class RunLock:
    """The run's `.lock`, held with flock for as long as this writer lives (see the module).
    A second writer is refused with `RunLocked` naming the holder; a lock whose writer is gone
    is taken over with a one-line notice on stderr naming the file."""

    def __init__(self, run_dir: str | Path, verb: str):
        self.paths = paths(run_dir)
        self.verb = verb
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    @staticmethod
    def holder(run_dir: str | Path) -> LockHolder | None:
        """Who holds the run (None: no `.lock`). Probes with a shared flock, which a writer's
        exclusive one excludes, so reading never takes the run from anybody."""
        path = paths(run_dir).lock
        try:
            fd = _open_lock(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
            except BlockingIOError:
                held = True
            return _judge(path, _read(fd), held)
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        if not self.paths.dir.is_dir():
            raise RunError(f"{self.paths.dir} is not a run directory (no such directory)")
        path = self.paths.lock
        for _ in range(100):
            fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
            try:
                if self._claim(fd):
                    self.fd, fd = fd, None
                    return self
            finally:
                if fd is not None:
                    os.close(fd)
            time.sleep(0.001)
        raise RunLocked(f"could not lock {self.paths.dir}: {path} keeps changing hands")

    def _claim(self, fd: int) -> bool:
        """True when this open `.lock` is now ours; False to try again; RunLocked when held."""
        path = self.paths.lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:  # only readers' shared probes in the way: try again
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                raise _judge(path, _read(fd), True).refusal(self.paths.dir) from None
        if not _is_at(fd, path):
            return False  # its holder unlinked it as we opened it
        text = _read(fd)
        previous = _judge(path, text, False)
        if previous.state != "stale":  # another host, or an older icl-lab's live writer
            raise previous.refusal(self.paths.dir)
        if text.strip():
            gone = "whose record is unreadable" if previous.pid < 0 else f"from {previous.describe()}, which is gone"
            print(f"icl-lab: taking over the lock {path} {gone}", file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "verb": self.verb,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "flock": True}
        data = json.dumps(record).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:  # unlinked while still held, so nobody can lock the name we are leaving
            if _is_at(self.fd, self.paths.lock):
                self.paths.lock.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    @classmethod
    def of_run(cls, run_dir: str | Path, verb: str) -> RunLock:
        """The lock of an existing run (checked to be one, every file readable), for verbs
        that add to it."""
        check_run(run_dir)
        return cls(run_dir, verb)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_run(run_dir: str | Path) -> None:
    """Refuse, before any work, a run that another live process writes (RunLocked naming it)
    or whose files are unreadable, misshapen or inconsistent (RunError naming the file, see
    `check_run_files`): verbs that add to a run or continue it check it whole first."""
    read_config(run_dir)
    holder = RunLock.holder(run_dir)
    if holder is not None and holder.pid != os.getpid() and holder.alive():
        raise holder.refusal(Path(run_dir))
    check_run_files(run_dir)
