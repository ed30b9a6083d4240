"""Tracking: a run's metrics in TensorBoard, Weights & Biases or trackio, offline (issue 26).

The run directory stays the source of truth: `export_run` copies a run's metrics.parquet
into a tracker and never changes the run; `mirror_metrics` (the `--log` option) mirrors each
metrics row to the trackers as a run writes it. No account, no network: TensorBoard event
files, W&B's offline mode, trackio's local store. Each library is an optional extra
(`pip install "icl-lab[tensorboard]"`, `[wandb]`, `[trackio]`). See docs/tracking.md.

    backends.py        names, extras, the tracker interface (log(step, values), close())
    to_tensorboard.py  TensorBoard event files
    to_wandb.py        a W&B offline run
    to_trackio.py      trackio's local SQLite store
    export.py          export_run / export_runs: checked first, staged, moved into place
    live.py            mirror_metrics, LiveMirror: rows mirrored as they are flushed
"""

from icl_lab.tracking.backends import BACKENDS, TrackingError, install_command, parse_backends, tracking_key
from icl_lab.tracking.export import check_exportable, default_destination, export_run, export_runs, rows_by_step
from icl_lab.tracking.live import LiveMirror, live_mirror, mirror_metrics

__all__ = [
    "BACKENDS", "LiveMirror", "TrackingError", "check_exportable", "default_destination", "export_run", "export_runs",
    "install_command", "live_mirror", "mirror_metrics", "parse_backends", "rows_by_step", "tracking_key",
]
