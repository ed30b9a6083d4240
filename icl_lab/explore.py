"""What the explorer app shows, computed from the run store alone (no Streamlit here).

Every path inside a run comes from `icl_lab.store`. Every reader is defensive: a run whose
files are missing, corrupt or foreign is listed with one line per problem naming the file
(the store's `RunError`), never raised, so one bad run cannot break a page.
"""

from __future__ import annotations

import math
import os
import re
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
# grokking's s₁ and s₂ (Nanda et al. 2023): the keys train.py writes in summary.json "first_steps"
GROKKING_MARKS = {"train_accuracy>=1": "s₁ train acc = 1", "test_accuracy>=0.95": "s₂ test acc ≥ 0.95"}
HEADLINE_ACCURACIES = ("icl_accuracy", "iwl_accuracy", "train_accuracy", "test_accuracy")
HEADLINE_LOSSES = ("train_loss", "test_loss", "icl_loss", "iwl_loss")
FREQUENCY = re.compile(r"^(.*\.)?k\d+$")  # a Fourier frequency's measure: `embedding_fourier_norm.k3`
HEAD_SCORES = ("induction_score", "previous_token_score")  # icl_lab.measures.attention, one metric per head


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
    stages: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # LLC metric -> (step, kind) of its stage boundaries
    track: list[str] = field(default_factory=list)  # config "track": the metrics the run is about
    final: dict[str, float] = field(default_factory=dict)  # summary "final": each metric's last value
    first_steps: dict[str, int] = field(default_factory=dict)  # summary "first_steps", e.g. s₁, s₂
    steps: int | None = None
    wall_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def axis(self) -> str:
        """What the run's x axis counts: RFM iterations or training steps."""
        return "iteration" if self.task == "rfm" else "step"
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
        track = _field(info, config, "track", list, [])
        info.track = [m for m in track if isinstance(m, str)]
        specs = _field(info, config, "interventions", list, [])
        if all(isinstance(s, dict) for s in specs):
            info.interventions = describe_interventions(specs)
        else:
            info.note("config.json: interventions is not a list of intervention specs")
    summary = _read(info, read_summary, {})
    transitions = _field(info, summary, "transitions", dict, {}, "summary.json")
    final = _field(info, summary, "final", dict, {}, "summary.json")
    info.final = {k: float(v) for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    first = _field(info, summary, "first_steps", dict, {}, "summary.json")
    info.first_steps = {k: v for k, v in first.items() if isinstance(v, int) and not isinstance(v, bool)}
    steps = status.get("steps", summary.get("final_step"))
    info.steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
    wall = summary.get("wall_seconds", status.get("wall_seconds"))
    info.wall_seconds = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None
    for metric, found in transitions.items():
        step = found.get("transition_step") if isinstance(found, dict) else "?"
        if step is None or (isinstance(step, int) and not isinstance(step, bool)):
            info.transitions[metric] = step
        else:
            info.note(f"summary.json: transitions.{metric} has no integer transition_step")
    for metric, found in _field(info, summary, "stages", dict, {}, "summary.json").items():
        boundaries = found.get("boundaries") if isinstance(found, dict) else None
        if isinstance(boundaries, list) and all(isinstance(b, dict) and isinstance(b.get("step"), int) for b in boundaries):
            info.stages[metric] = [(b["step"], str(b.get("kind", "?"))) for b in boundaries]
        else:
            info.note(f"summary.json: stages.{metric} has no list of boundaries with integer steps")
    info.track = info.track or list(info.transitions)  # an RFM run tracks what its summary found transitions in
    if paths(path).metrics.exists():
        _read(info, load_metrics, None)
    elif info.state == "done":
        info.note("metrics.parquet is missing from a finished run")
    return info


def scan_runs(root: str | Path) -> list[RunInfo]:
    """Every run under `root`, read; RunError when the bounded scan gives up."""
    root = Path(root)
    return [read_run(path, root) for path in find_runs(root)]


def headline(info: RunInfo) -> list[str]:
    """The metrics a run is about, in order: its tracked ones, then the headline accuracies and losses."""
    return list(dict.fromkeys(m for m in [*info.track, *HEADLINE_ACCURACIES, *HEADLINE_LOSSES] if m in info.final))


def runs_table(infos: list[RunInfo]) -> pl.DataFrame:
    """One row per run: what it is, how far it got, and its final headline metrics."""
    rows = []
    for info in infos:
        tracked = info.track[0] if info.track and info.track[0] in info.final else None
        rows.append({
            "run": info.name,
            "task": info.task,
            "preset": info.preset,
            "interventions": info.interventions,
            "seed": info.seed,
            "status": info.status,
            "steps": info.steps,
            "wall time (s)": info.wall_seconds,
            "tracked": tracked or "",
            "final tracked": info.final.get(tracked) if tracked else None,
            "final metrics": ", ".join(f"{m}={info.final[m]:.4g}" for m in headline(info)),
            "transitions": ", ".join(f"{m}@{s}" for m, s in info.transitions.items() if s is not None) or "",
            "problems": "; ".join(info.problems),
        })
    schema = {"run": pl.String, "task": pl.String, "preset": pl.String, "interventions": pl.String,
              "seed": pl.Int64, "status": pl.String, "steps": pl.Int64, "wall time (s)": pl.Float64,
              "tracked": pl.String, "final tracked": pl.Float64, "final metrics": pl.String,
              "transitions": pl.String, "problems": pl.String}
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


def metric_family(name: str) -> str:
    """`induction_score.L1H0` -> `induction_score.*`, `embedding_fourier_norm.k3` ->
    `embedding_fourier_norm.k*`, `test_accuracy` -> `*_accuracy`, `lr` -> `other`."""
    found = FREQUENCY.match(name)
    if found:
        return f"{found.group(1) or ''}k*"
    if "." in name:
        return name.split(".", 1)[0] + ".*"
    if "_" in name:
        return "*_" + name.rsplit("_", 1)[1]
    return "other"


def metric_families(names: list[str]) -> dict[str, list[str]]:
    """family -> its metrics, families in name order, a family's metrics in natural order (k2 before k10)."""
    natural = lambda m: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", m)]  # noqa: E731
    families: dict[str, list[str]] = {}
    for name in sorted(names, key=natural):
        families.setdefault(metric_family(name), []).append(name)
    return dict(sorted(families.items()))


def default_panels(names: list[str]) -> list[list[str]]:
    """Two panels as W&B would open them: the headline accuracies together, the losses together."""
    panels = [[m for m in HEADLINE_ACCURACIES if m in names], [m for m in HEADLINE_LOSSES if m in names]]
    return [p for p in panels if p] or [names[:2]]


def for_log_axes(curves: pl.DataFrame, log_x: bool, log_y: bool, y: str = "value") -> tuple[pl.DataFrame, list[str]]:
    """The rows a log axis can draw (step > 0 on log x, value > 0 on log y), and a note per kind dropped."""
    notes = []
    if log_x and curves.height and (dropped := curves.filter(pl.col("step") <= 0).height):
        curves = curves.filter(pl.col("step") > 0)
        notes.append(f"{dropped} points at step 0 are left out: a log axis has no 0.")
    if log_y and curves.height and (dropped := curves.filter(pl.col(y) <= 0).height):
        curves = curves.filter(pl.col(y) > 0)
        notes.append(f"{dropped} values ≤ 0 are left out of the log y axis.")
    return curves, notes


def decade_ticks(high: float) -> list[int]:
    """1, 10, 100, … up to the first decade at or past `high` (the ticks of a log step axis)."""
    return [10**k for k in range(max(1, math.ceil(math.log10(max(high, 10)))) + 1)]


def delta_domain(values) -> list[float]:
    """A colour domain symmetric about zero, so that no change is the scale's neutral middle."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    reach = float(finite.max()) if finite.size else 0.0
    reach = reach if reach > 0 else 1e-9  # all zero: still a valid, centred domain
    return [-reach, reach]


def robust_range(matrix: np.ndarray, mask_diagonal: bool) -> tuple[float, float]:
    """The 1st to 99th percentile of a matrix's entries (off the diagonal when it is masked), so
    that a few large entries, such as an RFM feature matrix's diagonal, do not wash out the rest."""
    keep = ~np.eye(matrix.shape[0], dtype=bool) if mask_diagonal and matrix.shape[0] > 1 else np.ones(matrix.shape, bool)
    low, high = np.percentile(matrix[keep], [1, 99])
    return float(low), float(high if high > low else low + 1e-9)


def condition_bands(curves: pl.DataFrame) -> pl.DataFrame:
    """Mean and ± one standard deviation over the runs of each condition, per step and metric."""
    return (
        curves.group_by(["condition", "metric", "step"])
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().fill_null(0.0).alias("sd"), pl.len().alias("runs"))
        .with_columns((pl.col("mean") - pl.col("sd")).alias("low"), (pl.col("mean") + pl.col("sd")).alias("high"))
        .sort(["condition", "metric", "step"])
    )


def transition_marks(infos: list[RunInfo]) -> pl.DataFrame:
    """run, condition, metric, step, kind of every detected transition (kind "transition") and
    every LLC stage boundary (kind "stage boundary: peak", ...; icl_lab.stages)."""
    rows = [{"run": i.name, "condition": i.condition, "metric": m, "step": s, "kind": "transition"}
            for i in infos for m, s in i.transitions.items() if s is not None]
    rows += [{"run": i.name, "condition": i.condition, "metric": m, "step": s, "kind": f"stage boundary: {kind}"}
             for i in infos for m, found in i.stages.items() for s, kind in found]
    return pl.DataFrame(rows, schema={"run": pl.String, "condition": pl.String, "metric": pl.String, "step": pl.Int64, "kind": pl.String})


def grokking_marks(info: RunInfo) -> pl.DataFrame:
    """step, label of the run's s₁ (train accuracy first 1) and s₂ (test accuracy first ≥ 0.95)."""
    rows = [{"step": info.first_steps[key], "label": label} for key, label in GROKKING_MARKS.items() if key in info.first_steps]
    return pl.DataFrame(rows, schema={"step": pl.Int64, "label": pl.String})


def eval_set_sizes(info: RunInfo) -> dict[str, int]:
    """name -> number of sequences of each evaluation set of the run's task (what an example
    index may be); RunError naming config.json when the run's config is not a run config."""
    from icl_lab.checkpoints import run_config_of
    from icl_lab.tasks import make_task

    config = run_config_of(info.path)
    task = make_task(config.task, config.task_config, seed=config.seed, device="cpu")
    return {name: int(batch.inputs.shape[0]) for name, batch in task.eval_sets().items()}


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


def head_scores(layer: int, head: int) -> list[str]:
    """The metrics that score one head over training: `induction_score.L1H0`, `previous_token_score.L1H0`."""
    return [f"{score}.L{layer}H{head}" for score in HEAD_SCORES]


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
        return [f"a={a}", f"b={b}", "query ="]
    return [str(t) for t in range(T)]
