"""What the explorer app shows, computed from the run store alone (no Streamlit here).

Every path inside a run comes from `icl_lab.store`. Every reader is defensive: a run whose
files are missing, corrupt or foreign is listed with one line per problem naming the file
(the store's `RunError`), never raised, so one bad run cannot break a page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from icl_lab.config import ConfigError
from icl_lab.store import (
    METRICS_SCHEMA, RunError, checkpoint_steps, list_runs, load_checkpoint, load_metrics, paths, read_config,
    read_status, read_summary, read_table,
)

DEFAULT_ROOT_ENV = "ICL_LAB_RUNS"
# The runs box may point anywhere (even /): the scan looks at most this many folders deep and
# into at most this many folders, then gives up with a message instead of walking the disk.
SCAN_MAX_DEPTH = 6
SCAN_MAX_DIRS = 20_000
ABLATION_COLUMNS = ("layer", "component", "metric", "delta")
CURVE_SCHEMA = {**METRICS_SCHEMA, "run": pl.String, "condition": pl.String}
KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "a table"}


def default_root() -> str:
    return os.environ.get(DEFAULT_ROOT_ENV, "runs")


@dataclass
class RunInfo:
    path: Path
    name: str
    task: str = "?"
    preset: str = ""
    seed: int | None = None
    state: str = "unknown"
    error: str | None = None
    interventions: str = ""
    transitions: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def condition(self) -> str:
        """What distinguishes the run apart from its seed (for mean ± band over seeds)."""
        return f"{self.task}/{self.preset}" + (f" [{self.interventions}]" if self.interventions else "")

    @property
    def status(self) -> str:
        """The run's state, or "corrupt" when one of its files could not be read."""
        return "corrupt" if self.problems else self.state

    def note(self, problem: str) -> None:
        """Record a problem, naming the file relative to the run (the table names the run)."""
        self.problems.append(problem.replace(f"{self.path}{os.sep}", ""))


def find_runs(root: str | Path) -> list[Path]:
    """The run directories under `root`; RunError when the bounded scan gives up."""
    return list_runs(root, max_depth=SCAN_MAX_DEPTH, max_dirs=SCAN_MAX_DIRS)


def run_stamp(run_dirs: list[Path]) -> tuple[int, ...]:
    """Changes whenever one of these runs' files changes, so cached reads refresh."""
    stamp = []
    for run_dir in run_dirs:
        p = paths(run_dir)
        for f in (p.config, p.status, p.summary, p.metrics, p.checkpoints, p.ablations):
            try:
                stat = f.stat()
                stamp += [stat.st_mtime_ns, stat.st_size]
            except OSError:
                stamp += [0, 0]
    return tuple(stamp)


def _read(info: RunInfo, reader, default):
    """reader(run_dir), or `default` with the problem noted when the file is corrupt."""
    try:
        return reader(info.path)
    except RunError as err:
        info.note(str(err))
        return default


def _field(info: RunInfo, data: dict, key: str, kind: type, default, file: str = "config.json"):
    """data[key] when it has the expected type (or is absent), else `default` with a problem noted."""
    value = data.get(key, default)
    if value is default or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    info.note(f"{file}: {key} is {value!r:.60}, not {KIND_NAMES[kind]}")
    return default


def describe_interventions(specs: list[dict]) -> str:
    parts = []
    for s in specs or []:
        label = s.get("name") or f"{s.get('hook', '?')}"
        heads = s.get("heads")
        parts.append(f"{label}{' h' + ','.join(map(str, heads)) if heads else ''}→{s.get('target', '?')}")
    return "; ".join(parts)


def read_run(path: Path, root: Path) -> RunInfo:
    info = RunInfo(path=path, name=str(path.relative_to(root)) if path != root else path.name)
    config = _read(info, read_config, {})
    status = _read(info, read_status, {})
    info.state = status.get("state", "unknown")
    error = status.get("error")
    info.error = None if error is None else str(error)
    if config.get("kind") == "rfm":
        rfm = _field(info, config, "rfm", dict, {})
        info.task, info.preset = "rfm", f"{rfm.get('op', '?')} mod {rfm.get('p', '?')}"
        info.seed = _field(info, rfm, "seed", int, None)
    elif config:
        info.task = _field(info, config, "task", str, "?")
        info.preset = _field(info, config, "preset", str, "")
        info.seed = _field(info, config, "seed", int, None)
        specs = _field(info, config, "interventions", list, [])
        if all(isinstance(s, dict) for s in specs):
            info.interventions = describe_interventions(specs)
        else:
            info.note("config.json: interventions is not a list of intervention specs")
    transitions = _field(info, _read(info, read_summary, {}), "transitions", dict, {}, "summary.json")
    for metric, found in transitions.items():
        step = found.get("transition_step") if isinstance(found, dict) else "?"
        if step is None or (isinstance(step, int) and not isinstance(step, bool)):
            info.transitions[metric] = step
        else:
            info.note(f"summary.json: transitions.{metric} has no integer transition_step")
    if paths(path).metrics.exists():
        _read(info, load_metrics, None)
    elif info.state == "done":
        info.note("metrics.parquet is missing from a finished run")
    return info


def scan_runs(root: str | Path) -> list[RunInfo]:
    """Every run under `root`, read; RunError when the bounded scan gives up."""
    root = Path(root)
    return [read_run(path, root) for path in find_runs(root)]


def runs_table(infos: list[RunInfo]) -> pl.DataFrame:
    rows = []
    for info in infos:
        rows.append({
            "run": info.name,
            "task": info.task,
            "preset": info.preset,
            "interventions": info.interventions,
            "seed": info.seed,
            "status": info.status,
            "transitions": ", ".join(f"{m}@{s}" for m, s in info.transitions.items() if s is not None) or "",
            "problems": "; ".join(info.problems),
        })
    schema = {"run": pl.String, "task": pl.String, "preset": pl.String, "interventions": pl.String,
              "seed": pl.Int64, "status": pl.String, "transitions": pl.String, "problems": pl.String}
    return pl.DataFrame(rows, schema=schema)


def load_curves(infos: list[RunInfo], metrics: list[str] | None = None) -> pl.DataFrame:
    """Long table step, metric, value, run, condition for the given runs; a run whose metrics
    cannot be read is left out (the Runs page lists it as corrupt, with the reason)."""
    frames = []
    for info in infos:
        try:
            frame = load_metrics(info.path)
        except RunError:
            continue
        if metrics is not None:
            frame = frame.filter(pl.col("metric").is_in(metrics))
        frames.append(frame.with_columns(pl.lit(info.name).alias("run"), pl.lit(info.condition).alias("condition")))
    if not frames:
        return pl.DataFrame(schema=CURVE_SCHEMA)
    return pl.concat(frames, how="vertical")


def metric_names(curves: pl.DataFrame) -> list[str]:
    return sorted(curves["metric"].unique().to_list())


def condition_bands(curves: pl.DataFrame) -> pl.DataFrame:
    """Mean and ± one standard deviation over the runs of each condition, per step and metric."""
    return (
        curves.group_by(["condition", "metric", "step"])
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().fill_null(0.0).alias("sd"), pl.len().alias("runs"))
        .with_columns((pl.col("mean") - pl.col("sd")).alias("low"), (pl.col("mean") + pl.col("sd")).alias("high"))
        .sort(["condition", "metric", "step"])
    )


def transition_marks(infos: list[RunInfo]) -> pl.DataFrame:
    rows = [{"run": i.name, "metric": m, "step": s} for i in infos for m, s in i.transitions.items() if s is not None]
    return pl.DataFrame(rows, schema={"run": pl.String, "metric": pl.String, "step": pl.Int64})


def fourier_spectrum(info: RunInfo) -> pl.DataFrame:
    """step, frequency, norm from the stored `embedding_fourier_norm.k*` metrics."""
    prefix = "embedding_fourier_norm.k"
    spec = load_curves([info]).filter(pl.col("metric").str.starts_with(prefix))
    frequency = pl.col("metric").str.strip_prefix(prefix).cast(pl.Int64, strict=False).alias("frequency")
    return spec.with_columns(frequency).drop_nulls("frequency").select("step", "frequency", pl.col("value").alias("norm"))


def feature_matrix(info: RunInfo, step: int) -> np.ndarray:
    """The RFM feature matrix M at an iteration; RunError when its checkpoint is unreadable."""
    tensors = load_checkpoint(info.path, step)
    M = tensors.get("M")
    if M is None or M.ndim != 2 or M.shape[0] != M.shape[1]:
        found = f"'M' of shape {tuple(M.shape)}" if M is not None else f"tensors {sorted(tensors)[:5]}"
        raise RunError(f"{paths(info.path).weights(step)}: no square feature matrix 'M' (it holds {found})")
    return M.double().numpy()


def ablation_tables(info: RunInfo) -> dict[str, Path]:
    """name -> file of the run's ablation and patching tables (not read yet)."""
    return paths(info.path).ablation_tables()


def read_ablation_table(path: Path) -> pl.DataFrame:
    """An ablation or patching table; RunError when it is unreadable or lacks the columns the page draws."""
    table = read_table(path)
    missing = [c for c in ABLATION_COLUMNS if c not in table.columns]
    if missing:
        raise RunError(f"{path}: not an ablation table (no column {', '.join(missing)}; it has {', '.join(table.columns)})")
    return table


def checkpoints(info: RunInfo) -> list[int]:
    return checkpoint_steps(info.path)


def attention_patterns(info: RunInfo, step: int, example: int = 0, eval_set: str | None = None):
    """({layer: [heads, T, T] array}, token labels) for one example sequence at a checkpoint.
    RunError (a ConfigError) when the run's config or that checkpoint cannot be loaded."""
    import torch

    from icl_lab.checkpoints import load_model

    try:
        model, task, _ = load_model(info.path, step, device="cpu")
    except (KeyError, RuntimeError) as err:  # a readable weights file that is not this model's
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunError(f"{paths(info.path).weights(step)}: weights do not fit the run's model ({first})") from None
    sets = task.eval_sets()
    name = eval_set or next(iter(sets))
    size = sets[name].inputs.shape[0]
    if not 0 <= example < size:
        raise ConfigError(f"example {example} is outside evaluation set {name!r} (0 to {size - 1})")
    batch = sets[name].slice(example, example + 1)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)
    return {l: cache[n][0].numpy() for l, n in enumerate(names)}, token_labels(task, batch)


def token_labels(task, batch) -> list[str]:
    T = batch.inputs.shape[1]
    if getattr(task, "name", "") == "bursty":
        N = (T - 1) // 2
        labels = []
        for i in range(N):
            labels += [f"x{i + 1} c{int(batch.context_classes[0, i])}", f"ℓ{i + 1}={int(batch.context_labels[0, i])}"]
        return labels + [f"query c{int(batch.query_class[0])}"]
    if getattr(task, "name", "") == "modular":
        a, b = int(batch.inputs[0, 0]), int(batch.inputs[0, 1])
        return [f"a={a}", f"b={b}", "="]
    return [str(t) for t in range(T)]
