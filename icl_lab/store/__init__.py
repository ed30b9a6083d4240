"""The run store: it owns the run layout. Every path inside a run is built here (`layout`).

    RUN/
      config.json                      full config + seed + package versions + git commit
      status.json                      {"state": "running" | "done" | "failed" | "stopped", ...}
      metrics.parquet                  long form: step (int64), metric (string), value (float64)
      summary.json                     transitions found and run facts (when the run ends)
      checkpoints/step_<N>.safetensors            weights at step N
      checkpoints/step_<N>.state.safetensors      training state tensors (optimizer, RNG, ...)
      checkpoints/step_<N>.state.json             training state plain data + sha256 of both files
      ablations/<kind>_<over>_step<N>.parquet     ablation / patching tables
      manifest.json                    every file above the lab wrote: path, size, sha256
      .lock                            held (flock) by the run's one writer; says who (pid, host, verb, time)

Every file is written to a temporary name in the same directory, flushed, then renamed over
the old one, so a run killed at any moment leaves each file either old or new, never torn;
the manifest records it first, so `--overwrite` removes what the lab wrote and nothing else.
Nothing read back can run code: tensors are safetensors, everything else JSON or parquet.
A run has one writer at a time (`RunLock`); readers (`load_run`, the app) never take the lock.
Problems with a directory or its files are `RunError`s: one line naming the file and what is
wrong, which the CLI reports with exit code 2.

    layout.py   RunPaths: every path of a run; RunError
    files.py    atomic writes; reading config, status, summary, metrics, checkpoints; list_runs
    manifest.py manifest.json: the files the lab wrote; what --overwrite may remove
    checks.py   a run checked whole (folders, files, rows the checkpoints record) before work
    lock.py     RunLock: one writer at a time (flock)
    state.py    TrainingState: what resume needs, with checksums
    writer.py   RunWriter: create (only a run the lab wrote is replaced) or reopen a run
"""

from icl_lab.store.files import (
    Run,
    append_metrics,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    checkpoint_steps,
    is_run_dir,
    list_runs,
    load_checkpoint,
    load_metrics,
    load_run,
    metrics_frame,
    read_config,
    read_json,
    read_status,
    read_summary,
    read_table,
    run_state,
    sha256_of,
    write_ablation_table,
)
from icl_lab.store.layout import LAYOUT_NAMES, MEMBER_STATES, METRICS_SCHEMA, STATES, RunError, RunLocked, RunPaths, paths
from icl_lab.store.lock import LockHolder, RunLock, check_run
from icl_lab.store.state import TrainingState, intact_state_steps, load_training_state
from icl_lab.store.writer import RunWriter, check_new_run_dir, record_failure

__all__ = [
    "LAYOUT_NAMES", "MEMBER_STATES",
    "METRICS_SCHEMA", "STATES", "LockHolder", "Run", "RunError", "RunLock", "RunLocked",
    "RunPaths", "RunWriter", "TrainingState", "append_metrics", "atomic_write", "atomic_write_bytes",
    "atomic_write_json", "check_new_run_dir", "check_run", "checkpoint_steps", "intact_state_steps", "is_run_dir",
    "list_runs", "load_checkpoint", "load_metrics", "load_run", "load_training_state", "metrics_frame",
    "paths", "read_config", "read_json", "read_status", "read_summary", "read_table", "record_failure",
    "run_state", "sha256_of", "write_ablation_table",
]
