"""What the explorer app shows, computed from the run store alone (no Streamlit here).

Every reader is defensive: a run whose files are missing or corrupt is reported with a
message, never raised, so one bad run cannot break a page.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from icl_lab.store import checkpoint_steps, list_runs

DEFAULT_ROOT_ENV = "ICL_LAB_RUNS"


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


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.exists():
        problems.append(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        problems.append(f"{path.name} is unreadable ({type(err).__name__}: {err})")
        return None


def describe_interventions(specs: list[dict]) -> str:
    parts = []
    for s in specs or []:
        label = s.get("name") or f"{s.get('hook', '?')}"
        heads = s.get("heads")
        parts.append(f"{label}{' h' + ','.join(map(str, heads)) if heads else ''}→{s.get('target', '?')}")
    return "; ".join(parts)


def read_run(path: Path, root: Path) -> RunInfo:
    info = RunInfo(path=path, name=str(path.relative_to(root)) if path != root else path.name)
    config = _read_json(path / "config.json", info.problems) or {}
    status = _read_json(path / "status.json", info.problems) or {}
    info.state = status.get("state", "unknown") if isinstance(status, dict) else "unknown"
    info.error = status.get("error") if isinstance(status, dict) else None
    if config.get("kind") == "rfm":
        rfm = config.get("rfm", {})
        info.task, info.preset, info.seed = "rfm", f"{rfm.get('op', '?')} mod {rfm.get('p', '?')}", rfm.get("seed")
    else:
        info.task, info.preset, info.seed = config.get("task", "?"), config.get("preset", ""), config.get("seed")
        info.interventions = describe_interventions(config.get("interventions", []))
    if (path / "summary.json").exists():
        summary = _read_json(path / "summary.json", info.problems) or {}
        for metric, t in (summary.get("transitions") or {}).items():
            if isinstance(t, dict) and "transition_step" in t:
                info.transitions[metric] = t["transition_step"]
    metrics_path = path / "metrics.parquet"
    if metrics_path.exists():
        try:
            pl.read_parquet_schema(metrics_path)
        except Exception as err:  # polars raises several error types for a damaged file
            info.problems.append(f"metrics.parquet is unreadable ({type(err).__name__})")
    elif info.state != "running":
        info.problems.append("metrics.parquet is missing")
    return info


def scan_runs(root: str | Path) -> list[RunInfo]:
    root = Path(root)
    return [read_run(path, root) for path in list_runs(root)]


def runs_table(infos: list[RunInfo]) -> pl.DataFrame:
    rows = []
    for info in infos:
        rows.append({
            "run": info.name,
            "task": info.task,
            "preset": info.preset,
            "interventions": info.interventions,
            "seed": info.seed,
            "status": "corrupt" if info.problems and info.state != "failed" else info.state,
            "transitions": ", ".join(f"{m}@{s}" for m, s in info.transitions.items() if s is not None) or "",
            "problems": "; ".join(info.problems),
        })
    schema = {"run": pl.String, "task": pl.String, "preset": pl.String, "interventions": pl.String,
              "seed": pl.Int64, "status": pl.String, "transitions": pl.String, "problems": pl.String}
    return pl.DataFrame(rows, schema=schema)


def load_curves(infos: list[RunInfo], metrics: list[str] | None = None) -> pl.DataFrame:
    """Long table run, condition, step, metric, value for the given runs (unreadable ones skipped)."""
    frames = []
    for info in infos:
        path = info.path / "metrics.parquet"
        if not path.exists():
            continue
        try:
            frame = pl.read_parquet(path)
        except Exception:
            continue
        if metrics is not None:
            frame = frame.filter(pl.col("metric").is_in(metrics))
        frames.append(frame.with_columns(pl.lit(info.name).alias("run"), pl.lit(info.condition).alias("condition")))
    if not frames:
        return pl.DataFrame(schema={"step": pl.Int64, "metric": pl.String, "value": pl.Float64, "run": pl.String, "condition": pl.String})
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
    curves = load_curves([info])
    spec = curves.filter(pl.col("metric").str.starts_with("embedding_fourier_norm.k"))
    return spec.with_columns(pl.col("metric").str.replace("embedding_fourier_norm.k", "").cast(pl.Int64).alias("frequency")).select(
        "step", "frequency", pl.col("value").alias("norm")
    )


def feature_matrix(info: RunInfo, step: int) -> np.ndarray:
    from safetensors.torch import load_file

    return load_file(str(info.path / "checkpoints" / f"step_{step}.safetensors"))["M"].double().numpy()


def ablation_tables(info: RunInfo) -> dict[str, pl.DataFrame]:
    folder = info.path / "ablations"
    tables = {}
    for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        try:
            tables[path.stem] = pl.read_parquet(path)
        except Exception:
            continue
    return tables


def checkpoints(info: RunInfo) -> list[int]:
    return checkpoint_steps(info.path)


def attention_patterns(info: RunInfo, step: int, example: int = 0, eval_set: str | None = None):
    """({layer: [heads, T, T] array}, token labels) for one example sequence at a checkpoint."""
    import torch

    from icl_lab.checkpoints import load_model

    model, task, _ = load_model(info.path, step, device="cpu")
    sets = task.eval_sets()
    name = eval_set or next(iter(sets))
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
