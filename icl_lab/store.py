"""The run store: it owns the run layout. Every path inside a run is built here.

    RUN/
      config.json                      full config + seed + package versions + git commit
      status.json                      {"state": "running" | "done" | "failed" | "stopped", ...}
      metrics.parquet                  long form: step (int64), metric (string), value (float64)
      summary.json                     transitions found and run facts (when the run ends)
      checkpoints/step_<N>.safetensors            weights at step N
      checkpoints/step_<N>.state.safetensors      training state tensors (optimizer, RNG, ...)
      checkpoints/step_<N>.state.json             training state plain data + sha256 of both files
      ablations/<kind>_<over>_step<N>.parquet     ablation / patching tables
      .lock                            the writer holding the run (pid, host, verb, start time)

Every file is written to a temporary name in the same directory, flushed, then renamed over
the old one, so a run killed at any moment leaves each file either old or new, never torn.
Nothing read back can run code: tensors are safetensors, everything else JSON or parquet.
A run has one writer at a time (`RunLock`); readers (`load_run`, the app) never take the lock.
Problems with a directory or its files are `RunError`s: one line naming the file and what is
wrong, which the CLI reports with exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from icl_lab.config import ConfigError

METRICS_SCHEMA = {"step": pl.Int64, "metric": pl.String, "value": pl.Float64}
STATES = ("running", "done", "failed", "stopped")  # stopped: interrupted on purpose, resumable
RESUMABLE_STATES = ("running", "failed", "stopped")


class RunError(ConfigError):
    """A user-facing problem with a run directory or one of its files (CLI exit code 2)."""


class RunLocked(RunError):
    """Another live process is writing this run."""


# -- layout --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPaths:
    """Every path inside one run directory."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.parquet"

    @property
    def lock(self) -> Path:
        return self.dir / ".lock"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def ablations(self) -> Path:
        return self.dir / "ablations"

    def weights(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.safetensors"

    def state_tensors(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.state.safetensors"

    def state_record(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.state.json"

    def ablation_table(self, name: str) -> Path:
        return self.ablations / f"{name}.parquet"

    def ablation_tables(self) -> dict[str, Path]:
        folder = self.ablations
        return {p.stem: p for p in sorted(folder.glob("*.parquet"))} if folder.is_dir() else {}


# entries a run directory may hold; --overwrite refuses a directory with anything else in it
LAYOUT_NAMES = {"config.json", "status.json", "summary.json", "metrics.parquet", ".lock", "checkpoints", "ablations"}


def paths(run_dir: str | Path) -> RunPaths:
    return RunPaths(Path(run_dir))


# -- atomic writes -------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, fsync it, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading, with errors that name the file -----------------------------------------------
def read_json(path: Path, default: Any = None, expect: type | None = dict) -> Any:
    """A JSON file's content, `default` when it does not exist; RunError when it is not JSON
    or not of the `expect`ed type."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: not readable JSON ({type(err).__name__}: {err})") from None
    if expect is not None and not isinstance(data, expect):
        raise RunError(f"{path}: expected a JSON {expect.__name__}, found {type(data).__name__}")
    return data


def metrics_frame(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")


def load_metrics(run_dir: str | Path) -> pl.DataFrame:
    path = paths(run_dir).metrics
    if not path.exists():
        return metrics_frame([])
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # polars raises several types for a torn or foreign file
        raise RunError(f"{path}: not a readable metrics table ({type(err).__name__}: {err})") from None
    if dict(frame.schema) != METRICS_SCHEMA:
        raise RunError(f"{path}: columns {dict(frame.schema)} are not the store's {METRICS_SCHEMA}")
    return frame


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run; RunError when the directory is not a run or the file is corrupt."""
    p = paths(run_dir)
    if not p.dir.is_dir():
        raise RunError(f"{p.dir} is not a run directory (no such directory)")
    config = read_json(p.config)
    if config is None:
        raise RunError(f"{p.dir} is not a run directory (no config.json)")
    if "task" not in config and config.get("kind") != "rfm":
        raise RunError(f"{p.config}: not a run config written by icl-lab (no 'task' key)")
    return config


def read_status(run_dir: str | Path) -> dict[str, Any]:
    p = paths(run_dir)
    status = read_json(p.status, {"state": "unknown"})
    if status.get("state") not in STATES + ("unknown",):
        raise RunError(f"{p.status}: state {status.get('state')!r} is not one of {', '.join(STATES)}")
    return status


def run_state(run_dir: str | Path) -> str:
    """A run's state, or "missing" when it has no status.json (never started)."""
    return read_json(paths(run_dir).status, {"state": "missing"}).get("state", "missing")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return read_json(paths(run_dir).summary, {})


def is_run_dir(path: str | Path) -> bool:
    """True when `path` holds a run this lab wrote: config.json and status.json parse as ours."""
    try:
        read_config(path)
        return read_status(path)["state"] in STATES
    except RunError:
        return False


def check_new_run_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse, before any work, a place a new run cannot go. Writes nothing.

    A non-empty directory is replaced only with `overwrite`, and only when it is a run the
    lab wrote holding nothing but the run layout; a file, an unwritable place or anything
    else is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(not e.name.startswith(".lock") for e in out.iterdir()):  # the lock may be ours
        if not overwrite:
            raise RunError(f"run directory {out} already exists and is not empty; choose another --out or pass --overwrite")
        if not is_run_dir(out):
            raise RunError(f"--overwrite refused: {out} is not a run directory written by icl-lab (its config.json/status.json are missing or not ours); nothing was removed")
        foreign = sorted(e.name for e in out.iterdir() if e.name not in LAYOUT_NAMES and not e.name.startswith("."))
        if foreign:
            raise RunError(f"--overwrite refused: {out} holds files that are not part of a run ({', '.join(foreign[:5])}); nothing was removed")
        holder = RunLock.holder(out)
        if holder is not None and holder.pid != os.getpid() and holder.alive():
            raise RunLocked(f"run {out} is being written by {holder.describe()}; not overwritten")
    parent = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise RunError(f"--out {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to {parent}: permission denied (choose another --out)")
    return out


# -- one writer at a time ------------------------------------------------------------------
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
        """The lock of an existing run (checked to be one), for verbs that add to it."""
        read_config(run_dir)
        return cls(run_dir, verb)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -- training state: tensors in safetensors, the rest in JSON ------------------------------
def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Nested state (dicts with any keys, lists, tuples, tensors) -> JSON-able data with
    tensors moved into `tensors` under dotted names. Dicts whose keys are not all strings
    (optimizer states keyed by parameter index) and tuples are tagged so they come back."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split_tensors(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in training state")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


@dataclass
class TrainingState:
    """What resume needs beyond the weights, saved with each checkpoint."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data_generator: torch.Tensor  # torch.Generator.get_state()
    torch_rng: torch.Tensor
    loss_sum: torch.Tensor  # training loss summed since the last evaluation (device scalar)
    loss_count: int
    eval_steps: list[int]
    first_nonfinite_step: torch.Tensor  # -1 while every training loss has been finite
    intervention_calls: dict[str, int]  # "spec|hook|phase" -> calls
    intervention_running: dict[str, torch.Tensor]  # running-mean clamp targets

    def to_parts(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        data = {name: _split_tensors(getattr(self, name), tensors, name) for name in self.__dataclass_fields__}
        return data, tensors

    @classmethod
    def from_parts(cls, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "TrainingState":
        return cls(**{name: _join_tensors(data[name], tensors) for name in cls.__dataclass_fields__})


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None


def intact_state_steps(run_dir: str | Path) -> tuple[list[int], list[str]]:
    """(steps whose weights and training state are complete and match their checksums, sorted;
    one line for each checkpoint skipped and why)."""
    p = paths(run_dir)
    good, skipped = [], []
    for step in checkpoint_steps(run_dir):
        record = p.state_record(step)
        if not record.exists():
            pickled = pickled_state(run_dir, step)
            if pickled.exists():  # the lab's old format: pickle can run code, so it is never read
                skipped.append(f"step {step}: {pickled} is a pickle file (an old or foreign format), which icl-lab does not read")
            continue  # a weights-only checkpoint (or one killed before its state was written)
        try:
            data = read_json(record)
            sums = data["sha256"]
        except (RunError, KeyError, TypeError):
            skipped.append(f"step {step}: {record.name} is unreadable")
            continue
        bad = [f.name for f, key in ((p.weights(step), "weights"), (p.state_tensors(step), "state"))
               if not f.exists() or sha256_of(f) != sums.get(key)]
        if bad:
            skipped.append(f"step {step}: {', '.join(bad)} missing or does not match its checksum")
        else:
            good.append(step)
    return good, skipped


def pickled_state(run_dir: str | Path, step: int) -> Path:
    """Where the lab's old format kept training state (pickle, so never read)."""
    return paths(run_dir).checkpoints / f"step_{step}.state.pt"


def load_training_state(run_dir: str | Path, step: int) -> TrainingState | None:
    """The training state saved with checkpoint `step`; None when it has none. A state only
    in the old pickle format is refused (unpickling a file can run code)."""
    p = paths(run_dir)
    data = read_json(p.state_record(step))
    if data is None:
        if pickled_state(run_dir, step).exists():
            raise RunError(f"{pickled_state(run_dir, step)}: a pickle file (an old or foreign format), which icl-lab does not read")
        return None
    try:
        return TrainingState.from_parts(data["state"], _load_safetensors(p.state_tensors(step)))
    except (KeyError, TypeError) as err:
        raise RunError(f"{p.state_record(step)}: not a training state written by icl-lab ({err})") from None


# -- writing a run -------------------------------------------------------------------------
class RunWriter:
    """The one writer of a run directory, holding its lock. Metrics accumulate in memory;
    each flush rewrites the file. `create` starts a run, `reopen` continues one."""

    def __init__(self, run_dir: str | Path, lock: RunLock, rows: list[tuple[int, str, float]]):
        self.paths = paths(run_dir)
        self.dir = self.paths.dir
        self.lock = lock
        self.rows = rows

    @classmethod
    def create(cls, out: str | Path, record: dict[str, Any], *, verb: str, overwrite: bool = False) -> "RunWriter":
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
            for entry in out.iterdir():
                if entry.name in LAYOUT_NAMES - {".lock"}:
                    _remove(entry)
            paths(out).checkpoints.mkdir()
            writer = cls(out, lock, [])
            atomic_write_json(writer.paths.config, record)
            writer.set_status("running")
        except BaseException:
            lock.release()
            raise
        return writer

    @classmethod
    def reopen(cls, run_dir: str | Path, *, verb: str) -> "RunWriter":
        """Lock an existing run to continue writing it (resume, post-hoc measures, ablation
        tables); its metrics are loaded so that flushes keep them."""
        read_config(run_dir)
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
        for step in checkpoint_steps(self.dir):
            if step > keep_until:
                for f in (self.paths.weights(step), self.paths.state_tensors(step), self.paths.state_record(step)):
                    f.unlink(missing_ok=True)
        self.flush_metrics()
        self.set_status("running", resumed_from=keep_until)

    def add_metrics(self, step: int, values: dict[str, float]) -> None:
        for name in sorted(values):
            self.rows.append((int(step), name, float(values[name])))

    def flush_metrics(self) -> None:
        frame = metrics_frame(self.rows)
        atomic_write(self.paths.metrics, lambda tmp: frame.write_parquet(tmp))

    def save_checkpoint(self, step: int, tensors: dict[str, torch.Tensor], state: TrainingState | None = None) -> Path:
        """Weights at `step`; with `state`, the training state beside them and, written last,
        a record with both files' checksums (its presence marks a complete checkpoint)."""
        path = self.paths.weights(step)
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata={"step": str(step)}))
        if state is not None:
            data, state_tensors = state.to_parts()
            tensor_path = self.paths.state_tensors(step)
            atomic_write(tensor_path, lambda tmp: save_file(state_tensors, tmp))
            atomic_write_json(self.paths.state_record(step), {
                "state": data,
                "sha256": {"weights": sha256_of(path), "state": sha256_of(tensor_path)},
            })
        return path

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
            atomic_write_json(writer.paths.config, record)
        writer.set_status("failed", error=error)


def _remove(entry: Path) -> None:
    import shutil

    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


# -- reading a run -------------------------------------------------------------------------
@dataclass
class Run:
    """A run read back from its directory."""

    dir: Path
    config: dict[str, Any]
    status: dict[str, Any]
    metrics: pl.DataFrame
    summary: dict[str, Any]

    @property
    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.dir)

    def curve(self, metric: str) -> pl.DataFrame:
        """(step, value) of one metric, sorted by step."""
        return self.metrics.filter(pl.col("metric") == metric).select("step", "value").sort("step")

    def wide(self) -> pl.DataFrame:
        """One row per step, one column per metric."""
        return self.metrics.pivot(on="metric", index="step", values="value").sort("step")


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    folder = paths(run_dir).checkpoints
    if not folder.is_dir():
        return []
    steps = []
    for p in folder.glob("step_*.safetensors"):
        stem = p.name.removesuffix(".safetensors").removeprefix("step_")
        if stem.isdigit():
            steps.append(int(stem))
    return sorted(steps)


def load_checkpoint(run_dir: str | Path, step: int) -> dict[str, torch.Tensor]:
    path = paths(run_dir).weights(step)
    if not path.exists():
        raise RunError(f"no checkpoint at step {step} in {run_dir}; steps: {checkpoint_steps(run_dir)}")
    return _load_safetensors(path)


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    return Run(
        dir=run_dir,
        config=read_config(run_dir),
        status=read_status(run_dir),
        metrics=load_metrics(run_dir),
        summary=read_summary(run_dir),
    )


def list_runs(root: str | Path, max_depth: int = 6, max_dirs: int = 20_000) -> list[Path]:
    """Every run directory (holding a config.json) under `root`, at most `max_depth` levels
    down and after looking in at most `max_dirs` directories (hidden ones and a run's own
    folders are skipped), sorted. Raises RunError when the bound stops the scan."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[Path] = []
    frontier, seen = [(root, 0)], 0
    while frontier:
        folder, depth = frontier.pop()
        seen += 1
        if seen > max_dirs:
            raise RunError(f"gave up scanning {root} for runs after {max_dirs} directories; point it at a runs folder")
        if (folder / "config.json").is_file():
            found.append(folder)
            continue  # a run's own folders hold no runs
        if depth >= max_depth:
            continue
        try:
            children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith(".")]
        except OSError:
            continue
        frontier += [(c, depth + 1) for c in children]
    return sorted(found)


def append_metrics(run_dir: str | Path, rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    """Add (step, metric, value) rows to a run's metrics, replacing rows with the same
    (step, metric); written atomically. The caller holds the run's lock. Returns the new metrics."""
    new = metrics_frame(rows)
    old = load_metrics(run_dir)
    keep = old.join(new.select("step", "metric"), on=["step", "metric"], how="anti")
    merged = pl.concat([keep, new]).sort(["step", "metric"])
    atomic_write(paths(run_dir).metrics, lambda tmp: merged.write_parquet(tmp))
    return merged


def write_ablation_table(run_dir: str | Path, name: str, table: pl.DataFrame) -> Path:
    path = paths(run_dir).ablation_table(name)
    atomic_write(path, lambda tmp: table.write_parquet(tmp))
    return path


def read_table(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as err:
        raise RunError(f"{path}: not a readable table ({type(err).__name__}: {err})") from None
