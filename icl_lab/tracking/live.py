"""Live mirroring (`--log BACKEND[,BACKEND]` on train, sweep, experiment, resume, rfm): each
metrics row a run writes is sent to the trackers as it is flushed (at evaluation steps only;
the training loop never waits on a tracker), and the trackers close when the run ends or fails.

    with mirror_metrics(["tensorboard"], "runs/tracking"):
        train(config, out)       # also every run a sweep's worker processes train

The choice travels in the environment (ICL_LAB_LOG, ICL_LAB_LOG_DIR), so that a sweep's
worker processes and Ray tasks, which inherit it, mirror their runs too. `RunLifecycle`, the
one lifecycle of every run the lab writes, attaches a `LiveMirror` to the run's writer. A
resumed run sends only the steps after those it already held; rows a post-run step adds
(icl_lab.post_run) are sent when the run ends. The run directory stays the source of truth.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from icl_lab.store import load_metrics, read_config
from icl_lab.tracking.backends import Tracker, open_tracker, parse_backends, tracking_key

BACKENDS_ENV, DEST_ENV = "ICL_LAB_LOG", "ICL_LAB_LOG_DIR"
DEFAULT_LOG_DIR = Path("runs") / "tracking"  # <dir>/<backend>: beside the runs, never inside one


@contextlib.contextmanager
def mirror_metrics(backends: str | list[str], dest: str | Path | None = None) -> Iterator[list[str]]:
    """Runs written inside the block (in this process or its workers) mirror their metrics
    to `backends` under `dest`/<backend> (default runs/tracking). Refuses an unknown backend
    or a missing extra first (TrackingError with the install command)."""
    names = parse_backends(backends)
    folder = Path(dest if dest is not None else DEFAULT_LOG_DIR).resolve()  # workers may start elsewhere
    saved = {k: os.environ.get(k) for k in (BACKENDS_ENV, DEST_ENV)}
    os.environ[BACKENDS_ENV], os.environ[DEST_ENV] = ",".join(names), str(folder)
    try:
        yield names
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LiveMirror:
    """Sends a run's new metric rows to its trackers each time the writer flushes."""

    def __init__(self, run_dir: Path, rows: list[tuple[int, str, float]], backends: list[str], dest: Path, resume: bool):
        self.run_dir = Path(run_dir)
        # resume: the steps the run already held were mirrored (or exported) when first written
        self.resumed_through = max((row[0] for row in rows), default=-1) if resume else -1
        self.sent: set[tuple[int, str]] = set()
        config, key = read_config(run_dir), tracking_key(run_dir)
        self.trackers: list[Tracker] = []
        try:
            for backend in backends:
                self.trackers.append(open_tracker(backend, self.run_dir.name, key, config, dest / backend, resume=resume))
        except BaseException:
            self.close_trackers()
            raise

    def send(self, rows: list[tuple[int, str, float]]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for step, metric, value in rows:
            if step > self.resumed_through and (step, metric) not in self.sent:
                by_step.setdefault(step, {})[metric] = value
                self.sent.add((step, metric))
        for step, values in by_step.items():
            for tracker in self.trackers:
                tracker.log(step, values)

    def close(self) -> None:
        """Send the rows written outside the writer (post-run steps), then close every tracker."""
        try:
            self.send([(int(s), str(m), float(v)) for s, m, v in load_metrics(self.run_dir).sort("step", "metric").iter_rows()])
        finally:
            self.close_trackers()

    def close_trackers(self) -> None:
        errors = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001  (close the others, then report the first)
                errors.append(err)
        self.trackers = []
        if errors:
            raise errors[0]


def live_mirror(run_dir: Path, rows: list[tuple[int, str, float]], *, resume: bool) -> LiveMirror | None:
    """The mirror the environment asks for (see `mirror_metrics`), or None."""
    names = os.environ.get(BACKENDS_ENV)
    if not names:
        return None
    dest = Path(os.environ.get(DEST_ENV) or DEFAULT_LOG_DIR)
    return LiveMirror(run_dir, rows, parse_backends(names), dest, resume)
