"""Creating and writing a run: the one writer, holding the run's lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import icl_lab.store.manifest as manifest
from icl_lab.store.files import atomic_write, atomic_write_json, checkpoint_steps, is_run_dir, load_metrics, metrics_frame
from icl_lab.store.layout import STATES, RunError, paths
from icl_lab.store.lock import RunLock, check_run
from icl_lab.store.state import TrainingState


def check_new_run_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse, before any work, a place a new run cannot go. Writes nothing.

    A non-empty directory is replaced only with `overwrite`, and only when it is a run the
    lab wrote holding nothing the lab did not write, at any depth (see `manifest`); a file,
    an unwritable place or anything else is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(not e.name.startswith(".lock") for e in out.iterdir()):  # the lock may be ours
        if not overwrite:
            raise RunError(f"run directory {out} already exists and is not empty; choose another --out or pass --overwrite")
        if manifest.load(out) is None and not is_run_dir(out):  # a run from before manifests
            raise RunError(f"--overwrite refused: {out} is not a run directory written by icl-lab (no {manifest.NAME}, "
                           "and its config.json/status.json are missing or not ours); nothing was removed")
        foreign = manifest.lab_files(out)[1]
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise RunError(f"--overwrite refused: {out} holds files icl-lab did not write ({', '.join(foreign[:5])}{more}); "
                           "nothing was removed")
        holder = RunLock.holder(out)
        if holder is not None and holder.pid != os.getpid() and holder.alive():
            raise holder.refusal(out)
    parent = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise RunError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to {parent}: permission denied (choose another --out)")
    return out


class RunWriter:
    """The one writer of a run directory, holding its lock. Metrics accumulate in memory;
    each flush rewrites the file. `create` starts a run, `reopen` continues one."""

    def __init__(self, run_dir: str | Path, lock: RunLock, rows: list[tuple[int, str, float]]):
        self.paths = paths(run_dir)
        self.dir = self.paths.dir
        self.lock = lock
        self.rows = rows
        self.listeners: list = []  # called with all rows after each flush (live tracking: icl_lab.tracking.live)

    @classmethod
    def create(cls, out: str | Path, record: dict[str, Any], *, verb: str, overwrite: bool = False) -> RunWriter:
        """Check `out` (see check_new_run_dir), lock it, clear an old run's files, write
        config.json and mark the run running."""
        out = check_new_run_dir(out, overwrite)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create run directory {out}: {err.strerror}") from None
        lock = RunLock(out, verb).acquire()
        try:
            check_new_run_dir(out, overwrite)  # again, now that we hold the lock
            for path in manifest.lab_files(out)[0]:  # only the lab's, as just checked; folders after their files
                if path.is_dir():
                    path.rmdir()
                elif path.name != ".lock":
                    path.unlink()
            manifest.save(out, {})  # first: every file written from now on is recorded in it
            paths(out).checkpoints.mkdir()
            writer = cls(out, lock, [])
            atomic_write_json(writer.paths.config, record)
            writer.set_status("running")
        except BaseException:
            lock.release()
            raise
        return writer

    @classmethod
    def reopen(cls, run_dir: str | Path, *, verb: str) -> RunWriter:
        """Lock an existing run to continue writing it (resume, post-hoc measures, ablation
        tables); its metrics are loaded so that flushes keep them."""
        check_run(run_dir)
        lock = RunLock(run_dir, verb).acquire()
        try:
            rows = [(int(s), str(m), float(v)) for s, m, v in load_metrics(run_dir).iter_rows()]
        except BaseException:
            lock.release()
            raise
        return cls(run_dir, lock, rows)

    def rewind(self, keep_until: int) -> None:
        """Drop metrics and checkpoints after `keep_until` (they are recomputed on resume) and
        mark the run running again; config.json is kept."""
        self.rows = [row for row in self.rows if row[0] <= keep_until]
        removed = []
        for step in checkpoint_steps(self.dir):
            if step > keep_until:
                for f in (self.paths.weights(step), self.paths.state_tensors(step), self.paths.state_record(step)):
                    f.unlink(missing_ok=True)
                    removed.append(f)
        manifest.forget(self.dir, removed)
        self.flush_metrics()
        self.set_status("running", resumed_from=keep_until)

    def add_metrics(self, step: int, values: dict[str, float]) -> None:
        for name in sorted(values):
            self.rows.append((int(step), name, float(values[name])))

    def flush_metrics(self) -> None:
        frame = metrics_frame(self.rows)
        atomic_write(self.paths.metrics, lambda tmp: frame.write_parquet(tmp))
        for listener in self.listeners:
            listener(self.rows)

    def save_checkpoint(self, step: int, tensors: dict[str, torch.Tensor], state: TrainingState | None = None) -> Path:
        """Weights at `step`; with `state`, the training state beside them and, written last,
        a record with both files' checksums (its presence marks a complete checkpoint)."""
        path = self.paths.weights(step)
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        weights_sha = atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata={"step": str(step)}))
        if state is not None:
            data, state_tensors = state.to_parts()
            state_sha = atomic_write(self.paths.state_tensors(step), lambda tmp: save_file(state_tensors, tmp))
            rows = sum(1 for row in self.rows if row[0] <= step)  # flushed before the checkpoint: resume checks them
            atomic_write_json(self.paths.state_record(step), {"state": data, "sha256": {"weights": weights_sha, "state": state_sha},
                                                              "metric_rows": rows})
        return path

    def prune_states(self, keep: int) -> list[int]:
        """Drop the training state of every checkpoint but the `keep` newest that have one:
        those checkpoints become weights-only (the attention view and `load_model` read them;
        resume starts from the newest intact state). The record, whose presence marks a
        complete checkpoint, goes first, so a kill mid-way leaves at most an unread state file.
        Returns the steps pruned."""
        with_state = [s for s in checkpoint_steps(self.dir) if self.paths.state_record(s).exists()]
        pruned = with_state[:-keep] if keep > 0 else with_state
        removed = []
        for step in pruned:
            for f in (self.paths.state_record(step), self.paths.state_tensors(step)):
                f.unlink(missing_ok=True)
                removed.append(f)
        if removed:
            manifest.forget(self.dir, removed)
        return pruned

    def set_status(self, state: str, error: str | None = None, **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"status {state!r} is not one of {STATES}")
        atomic_write_json(self.paths.status, {"state": state, "error": error, **extra})

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.paths.summary, summary)

    def close(self) -> None:
        self.lock.release()


def record_failure(run_dir: str | Path, record: dict[str, Any], error: str, *, verb: str) -> None:
    """Mark a run failed from outside its writer: a run that failed before it started (no
    config.json yet: `record` is written) or work after training (an ablation scan). Takes the
    run's lock (RunLocked when a live process holds it)."""
    with RunLock(run_dir, verb) as lock:
        writer = RunWriter(run_dir, lock, [])
        if not writer.paths.config.exists():
            if all(e.name.startswith(".lock") for e in writer.dir.iterdir()):
                manifest.save(writer.dir, {})  # a run that failed before it started is the lab's too
            atomic_write_json(writer.paths.config, record)
        writer.set_status("failed", error=error)
