"""The run catalogue: finding run directories under a root and reading each into a `RunInfo`
(what it is, how far it got, what it found), and the Runs page's table of them.

Every path inside a run comes from `icl_lab.store`. Every reader is defensive: a run whose
files are missing, corrupt or foreign is listed with one line per problem naming the file
(the store's `RunError`), never raised, so one bad run cannot break a page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from icl_lab.explore.declarations import Declarations, declarations_of
from icl_lab.rfm import RUN_KIND as RFM_RUN_KIND
from icl_lab.store import RunError, list_runs, load_metrics, paths, read_config, read_status, read_summary

DEFAULT_ROOT_ENV = "ICL_LAB_RUNS"
# The runs box may point anywhere (even /): the scan looks at most this many folders deep and
# into at most this many folders, then gives up with a message instead of walking the disk.
SCAN_MAX_DEPTH = 6
SCAN_MAX_DIRS = 20_000
KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "a table"}
HEADLINE_ACCURACIES = ("icl_accuracy", "iwl_accuracy", "train_accuracy", "test_accuracy")
HEADLINE_LOSSES = ("train_loss", "test_loss", "icl_loss", "iwl_loss")
SETTING_SECTIONS = ("task", "model", "train", "rfm")  # config.json sections whose values tell runs apart
NOT_SETTINGS = ("seed", "device", "dtype")  # shown elsewhere (seed) or no part of what the run is
MAX_SETTING_COLUMNS = 6  # the Runs table's columns of settings that vary within a task


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
    transience: dict[str, tuple[int, int]] = field(default_factory=dict)  # metric -> (peak step, half-gain-lost step) of a rise that fell back
    track: list[str] = field(default_factory=list)  # config "track": the metrics the run is about
    final: dict[str, float] = field(default_factory=dict)  # summary "final": each metric's last value
    first_steps: dict[str, int] = field(default_factory=dict)  # summary "first_steps": each milestone's step
    steps: int | None = None
    wall_seconds: float | None = None
    problems: list[str] = field(default_factory=list)
    declared: Declarations = field(default_factory=Declarations)  # what its task (or RFM) declares
    settings: dict[str, str] = field(default_factory=dict)  # "train.lr" -> "0.001": config.json's scalar settings
    modified: float = 0.0  # when its metrics (else status) were last written: the newest of repeated runs wins

    @property
    def axis(self) -> str:
        """What the run's x axis counts, as its task declares it ("step", RFM's "iteration")."""
        return self.declared.x_axis

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
    info.declared = declarations_of(config)
    if config.get("kind") == RFM_RUN_KIND:  # an RFM run's config: its settings under "rfm"
        rfm = _field(info, config, "rfm", dict, {})
        info.task, info.preset = RFM_RUN_KIND, f"{rfm.get('op', '?')} mod {rfm.get('p', '?')}"
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
    info.settings = settings_of(config)
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
    for metric, found in _field(info, summary, "transience", dict, {}, "summary.json").items():
        if isinstance(found, dict) and found.get("reason") is None:  # transient: phases.find_transience
            peak, half = found.get("peak_step"), found.get("half_step")
            if all(isinstance(s, int) and not isinstance(s, bool) for s in (peak, half)):
                info.transience[metric] = (peak, half)
            else:
                info.note(f"summary.json: transience.{metric} has no integer peak_step and half_step")
    info.track = info.track or list(info.transitions)  # an RFM run tracks what its summary found transitions in
    for written in (paths(path).metrics, paths(path).status):
        if written.exists():
            info.modified = written.stat().st_mtime
            break
    if paths(path).metrics.exists():
        _read(info, load_metrics, None)
    elif info.state == "done":
        info.note("metrics.parquet is missing from a finished run")
    return info


def settings_of(config: dict) -> dict[str, str]:
    """"section.key" -> value (as text) of the config's scalar settings in SETTING_SECTIONS
    (a list of numbers counts as one value), seed and device left out."""
    found = {}
    for section in SETTING_SECTIONS:
        values = config.get(section)
        for key, value in (values.items() if isinstance(values, dict) else ()):
            if key in NOT_SETTINGS or isinstance(value, dict):
                continue
            if isinstance(value, list) and not all(isinstance(v, (int, float, str)) for v in value):
                continue
            found[f"{section}.{key}"] = str(value)
    return found


def varying_settings(infos: list[RunInfo], limit: int | None = MAX_SETTING_COLUMNS) -> list[str]:
    """The settings that take more than one value among the runs of one task (a learning rate
    swept, a width changed), at most `limit`, by name: what tells otherwise alike runs apart."""
    by_task: dict[tuple[str, str], set[str]] = {}
    for info in infos:
        for key, value in info.settings.items():
            by_task.setdefault((info.task, key), set()).add(value)
    return sorted({key for (_, key), values in by_task.items() if len(values) > 1})[:limit]


def condition_labels(infos: list[RunInfo]) -> dict[str, str]:
    """run name -> its condition (RunInfo.condition) with the settings that vary within its
    task (varying_settings) appended, e.g. "bursty/small train.lr=0.002": the runs of one label
    differ by seed only, so a band over them is a band over seeds."""
    varying = varying_settings(infos, limit=None)
    labels = {}
    for info in infos:
        extra = ", ".join(f"{k}={info.settings[k]}" for k in varying if k in info.settings)
        labels[info.name] = info.condition + (f" {extra}" if extra else "")
    return labels


def main_task(infos: list[RunInfo]) -> str | None:
    """The task with the most readable runs (ties: by name), what a first view should open on."""
    counts: dict[str, int] = {}
    for info in infos:
        if not info.problems:
            counts[info.task] = counts.get(info.task, 0) + 1
    return min(counts, key=lambda t: (-counts[t], t)) if counts else None


def default_comparison(infos: list[RunInfo], limit: int = 12) -> list[str]:
    """The runs a first view compares: up to `limit` readable runs of main_task, newest first,
    taken in turn from each condition (plain and clamped both shown, not 12 of one)."""
    task = main_task(infos)
    by_condition: dict[str, list[RunInfo]] = {}
    for info in sorted(infos, key=lambda i: (-i.modified, i.name)):
        if info.task == task and not info.problems:
            by_condition.setdefault(info.condition, []).append(info)
    queues, picked = list(by_condition.values()), []
    while len(picked) < limit and any(queues):
        picked += [q.pop(0).name for q in queues if q][: limit - len(picked)]
    return picked


def scan_runs(root: str | Path) -> list[RunInfo]:
    """Every run under `root`, read; RunError when the bounded scan gives up."""
    root = Path(root)
    return [read_run(path, root) for path in find_runs(root)]


def headline(info: RunInfo) -> list[str]:
    """The metrics a run is about, in order: its tracked ones, then the headline accuracies and losses."""
    return list(dict.fromkeys(m for m in [*info.track, *HEADLINE_ACCURACIES, *HEADLINE_LOSSES] if m in info.final))


def runs_table(infos: list[RunInfo]) -> pl.DataFrame:
    """One row per run: what it is, how far it got, and its final headline metrics; then a
    column per setting that varies within a task (varying_settings), "" where a run has none."""
    rows = []
    varying = varying_settings(infos)
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
            # "none found": its tracked metrics were read, no transition in them (not the same as not looked for)
            "transitions": ", ".join([f"{m}@{s}" for m, s in info.transitions.items() if s is not None]
                                     + [f"{m} fell@{half}" for m, (_, half) in info.transience.items()])
            or ("none found" if info.transitions else ""),
            "problems": "; ".join(info.problems),
            **{key: info.settings.get(key, "") for key in varying},
        })
    schema = {"run": pl.String, "task": pl.String, "preset": pl.String, "interventions": pl.String,
              "seed": pl.Int64, "status": pl.String, "steps": pl.Int64, "wall time (s)": pl.Float64,
              "tracked": pl.String, "final tracked": pl.Float64, "final metrics": pl.String,
              "transitions": pl.String, "problems": pl.String, **dict.fromkeys(varying, pl.String)}
    return pl.DataFrame(rows, schema=schema)
