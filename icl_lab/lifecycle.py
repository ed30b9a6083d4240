"""One run lifecycle for everything that writes a run (the trainer, RFM, resume):

    with RunLifecycle.start(out, record, verb="train", overwrite=False) as run:
        run.writer.add_metrics(...); run.writer.flush_metrics(); run.writer.save_checkpoint(...)
        run.finish(summary, steps=n)

`start` checks the directory (only a run the lab wrote is ever replaced), takes the run's
lock, records the config and marks the run running; `resume` takes the lock of an existing
run. Leaving the block by an exception flushes the metrics and marks the run failed with the
traceback (the exception gets `failed_run`, the run's directory: the command line reports it in
one line, exit code 1); Ctrl-C (KeyboardInterrupt) marks it stopped, which is resumable; either way the
lock is released and the exception propagates.

A stopped run's status.json says how to continue it: `icl-lab resume RUN` by default; a
command that trains runs as part of a grid (a sweep, an experiment) names itself instead,

    with continued_by("icl-lab sweep grid.toml --out runs/grid"):
        train(...)

since running it again resumes the run and also finishes its table.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from icl_lab.store import RunWriter
from icl_lab.tracking.live import live_mirror

# the command that continues the runs started in this context (None: `icl-lab resume RUN`)
_continue_command: ContextVar[str | None] = ContextVar("continue_command", default=None)


@contextlib.contextmanager
def continued_by(command: str):
    """Runs stopped inside this block advise `command` (run again) to continue them."""
    token = _continue_command.set(command)
    try:
        yield
    finally:
        _continue_command.reset(token)


def continue_advice(run_dir: str | Path, verb: str) -> str:
    """How to continue a stopped run that `verb` writes, for its status.json."""
    command = _continue_command.get()
    if command is not None:
        return f"run `{command}` again to continue it"
    if verb == "rfm":  # an RFM run keeps no training state
        return "an RFM run does not resume; run the command that started it again (a single `icl-lab rfm` run with --overwrite)"
    return f"resume it with `icl-lab resume {run_dir}`"


class RunLifecycle:
    def __init__(self, writer: RunWriter, *, resume: bool = False):
        self.writer = writer
        self.started = time.perf_counter()
        self.finished = False
        self.advice = continue_advice(writer.dir, writer.lock.verb)  # read now: the block may end outside the context
        try:  # `--log`: the run's metric rows mirrored to trackers as they are flushed
            self.mirror = live_mirror(writer.dir, writer.rows, resume=resume)
        except BaseException:
            writer.close()
            raise
        if self.mirror is not None:
            writer.listeners.append(self.mirror.send)

    @classmethod
    def start(cls, out: str | Path, record: dict[str, Any], *, verb: str, overwrite: bool = False) -> RunLifecycle:
        return cls(RunWriter.create(out, record, verb=verb, overwrite=overwrite))

    @classmethod
    def resume(cls, out: str | Path, *, verb: str) -> RunLifecycle:
        return cls(RunWriter.reopen(out, verb=verb), resume=True)

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started

    def finish(self, summary: dict[str, Any], **status: Any) -> None:
        """summary.json, then status done (with this part's wall time)."""
        self.writer.write_summary(summary)
        self.writer.set_status("done", wall_seconds=self.wall_seconds, **status)
        self.finished = True

    def __enter__(self) -> RunLifecycle:
        return self

    def __exit__(self, kind, err, tb) -> None:
        try:
            if err is not None:
                self.writer.flush_metrics()
                if isinstance(err, KeyboardInterrupt):
                    self.writer.set_status("stopped", error=f"interrupted (Ctrl-C); {self.advice}",
                                           wall_seconds=self.wall_seconds)
                else:
                    self.writer.set_status("failed", error="".join(traceback.format_exception(kind, err, tb)),
                                           wall_seconds=self.wall_seconds)
                    err.failed_run = self.writer.dir  # the CLI says so in one line; status.json keeps the traceback
        finally:
            try:
                if self.mirror is not None:
                    self.mirror.close()
            finally:
                self.writer.close()
