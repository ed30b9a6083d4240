"""Sweeps: a TOML file expands to a grid of runs, run in parallel, resumable, one table.

    [sweep]
    task = "bursty"
    preset = "small"
    set = { "train.steps" = 3000 }          # base overrides (any `--set` key)

    [axes]                                  # the grid: every combination, in file order
    seed = [0, 1, 2]
    "task.num_classes" = [512, 2048]
    condition = ["none", "induction"]       # names of [conditions.*] tables

    [conditions.none]
    [[conditions.induction.intervention]]   # the same tables as an --intervention file
    hook = "blocks.1.attn.hook_pattern"
    heads = [0]
    query_positions = "query"
    target = "induction"

    [[ablation]]                            # optional scans of each finished run
    kind = "zero"
    over = "heads"

Layout: OUT/sweep.toml (the spec), OUT/runs/<name>/ (one run directory each, named by its
axis values), OUT/sweep.parquet (one row per run: axis values, status, final metrics,
transition steps). A run whose status is `done` is never redone; a `failed` one is redone
only with retry_failed; a run killed mid-way (status `running`) resumes from its last
checkpoint (exactly as if it had never stopped).
Everything in the file is checked before any run starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import tomllib
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from icl_lab.config import ConfigError, did_you_mean
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import atomic_write, atomic_write_bytes, atomic_write_json, load_run, read_json
from interventions.spec import Intervention

EXECUTORS = ("local", "ray")
SECTIONS = ("sweep", "axes", "conditions", "ablation")


@dataclass(frozen=True)
class SweepRun:
    name: str
    axes: dict[str, Any]
    config: dict[str, Any]  # RunConfig.to_dict()
    ablations: tuple[dict[str, Any], ...] = ()


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf'^\s*(\[+\s*)?("?){re.escape(key)}\2\s*(=|\]|\.)', re.M)
    match = pattern.search(text)
    return text[: match.start()].count("\n") + 1 if match else None


def _where(source: str, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{source}, line {line}" if line else source


def _value_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_") or "x"


def load_sweep(path: str | Path) -> tuple[list[SweepRun], str]:
    """Parse and validate a sweep file: (the grid of runs, the file's text). No run starts."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} does not exist")
    text = path.read_text()
    return expand(text, source=str(path)), text


def expand(text: str, source: str = "<sweep>") -> list[SweepRun]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{_where(source, text, key)}: unknown section {key!r}.{did_you_mean(key, list(SECTIONS))} Valid: {', '.join(SECTIONS)}")
    head = data.get("sweep")
    if not isinstance(head, dict) or "task" not in head:
        raise ConfigError(f"{source}: needs a [sweep] table with task = \"...\" (and optionally preset, set)")
    for key in head:
        if key not in ("task", "preset", "set"):
            raise ConfigError(f"{_where(source, text, key)}: unknown key {key!r} in [sweep]; valid: task, preset, set")
    try:
        base = get_preset(head["task"], head.get("preset"))
        config = base.config.with_overrides(head.get("set", {}))
    except ConfigError as err:
        bad = next((k for k in head.get("set", {}) if k in str(err)), "task")
        raise ConfigError(f"{_where(source, text, bad)}: {err}") from None

    conditions: dict[str, tuple[Intervention, ...]] = {}
    for name, table in (data.get("conditions") or {}).items():
        specs = table.get("intervention", []) if isinstance(table, dict) else None
        if specs is None or not isinstance(specs, list) or set(table) - {"intervention"}:
            raise ConfigError(f"{_where(source, text, name)}: [conditions.{name}] holds only [[conditions.{name}.intervention]] tables")
        conditions[name] = tuple(Intervention.from_dict(s, where=f"{_where(source, text, name)}: conditions.{name}") for s in specs)

    axes = data.get("axes") or {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_where(source, text, key)}: axis {key!r} needs a non-empty list of values")
        if key == "condition":
            for v in values:
                if v not in conditions:
                    raise ConfigError(f"{_where(source, text, key)}: condition {v!r} has no [conditions.{v}] table; defined: {', '.join(conditions) or 'none'}")
            continue
        try:
            config.with_overrides({key: values[0]})
        except ConfigError as err:
            raise ConfigError(f"{_where(source, text, key)}: axis {key!r}: {err}") from None

    ablations = data.get("ablation") or []
    for table in ablations:
        from icl_lab.ablate import KINDS, OVER

        unknown = set(table) - {"kind", "over", "metrics"}
        if unknown or table.get("kind", "zero") not in KINDS or table.get("over", "heads") not in OVER:
            raise ConfigError(f"{_where(source, text, 'ablation')}: [[ablation]] takes kind ({', '.join(KINDS)}), over ({', '.join(OVER)}), metrics; got {table}")

    runs, names = [], set()
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo))
        overrides = {k: v for k, v in values.items() if k != "condition"}
        try:
            run_config = config.with_overrides(overrides)
        except ConfigError as err:
            raise ConfigError(f"{source}: the grid point {values} is invalid: {err}") from None
        if "condition" in values:
            run_config = dataclasses.replace(run_config, interventions=run_config.interventions + conditions[values["condition"]])
        name = "-".join(f"{k.split('.')[-1]}={_value_name(v)}" for k, v in values.items()) or "run"
        if name in names:
            raise ConfigError(f"{source}: two grid points share the run name {name!r}")
        names.add(name)
        runs.append(SweepRun(name=name, axes=values, config=run_config.to_dict(), ablations=tuple(ablations)))
    return runs


def run_one(run: SweepRun, runs_dir: str, threads: int = 1, resume: bool = False) -> dict[str, Any]:
    """Train one grid point (in a worker); `resume` continues a killed run from its last
    checkpoint. Never raises: a failure is recorded in its status."""
    import torch

    from icl_lab.train import train

    torch.set_num_threads(threads)
    out = Path(runs_dir) / run.name
    try:
        config = RunConfig.from_dict(run.config)
        train(config, out, progress=False, overwrite=True, resume=resume)
        for scan in run.ablations:
            from icl_lab.ablate import ablation_scan

            ablation_scan(out, kind=scan.get("kind", "zero"), over=scan.get("over", "heads"), metrics=scan.get("metrics"))
        return {"name": run.name, "state": "done"}
    except BaseException as err:  # recorded, not fatal to the sweep
        message = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        status = read_json(out / "status.json", {})
        if status.get("state") != "failed":
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "config.json").exists():
                atomic_write_json(out / "config.json", run.config)
            atomic_write_json(out / "status.json", {"state": "failed", "error": message})
        return {"name": run.name, "state": "failed", "error": str(err)}


def pending(runs: list[SweepRun], runs_dir: Path, retry_failed: bool) -> list[SweepRun]:
    todo = []
    for run in runs:
        state = read_json(runs_dir / run.name / "status.json", {}).get("state")
        if state == "done" or (state == "failed" and not retry_failed):
            continue
        todo.append(run)
    return todo


def run_sweep(
    spec: str | Path, out: str | Path, executor: str = "local", workers: int = 1,
    retry_failed: bool = False, progress: bool = True,
) -> pl.DataFrame:
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    runs, text = load_sweep(spec)
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "sweep.toml", text.encode())
    todo = pending(runs, runs_dir, retry_failed)
    resumable = set()
    for run in todo:  # a run killed mid-way resumes from its last checkpoint; others start afresh
        folder = runs_dir / run.name
        killed = read_json(folder / "status.json", {}).get("state") == "running"
        if killed and any((folder / "checkpoints").glob("*.state.pt")):
            resumable.add(run.name)
        elif folder.exists():
            shutil.rmtree(folder)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 1
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), disable=not progress, desc="sweep", unit="run")
    if executor == "local":
        if workers == 1:
            for run in todo:
                run_one(run, str(runs_dir), threads, run.name in resumable)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_one, run, str(runs_dir), threads, run.name in resumable) for run in todo]
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
    else:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=1)(run_one)
        refs = [remote.remote(run, str(runs_dir), threads, run.name in resumable) for run in todo]
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            ray.get(done)
            bar.update(1)
    bar.close()
    table = summarize_sweep(runs, runs_dir)
    atomic_write(out / "sweep.parquet", lambda tmp: table.write_parquet(tmp))
    return table


def summarize_sweep(runs: list[SweepRun], runs_dir: Path) -> pl.DataFrame:
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name}
        row.update({f"axis.{k}": str(v) for k, v in run.axes.items()})
        status = read_json(runs_dir / run.name / "status.json", {})
        row["status"] = status.get("state", "missing")
        row["error"] = (status.get("error") or "").strip().splitlines()[-1] if status.get("error") else ""
        if row["status"] == "done":
            r = load_run(runs_dir / run.name)
            for metric, value in sorted(r.summary.get("final", {}).items()):
                row[f"final.{metric}"] = float(value)
            for metric, t in r.summary.get("transitions", {}).items():
                row[f"transition.{metric}"] = t.get("transition_step")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)
