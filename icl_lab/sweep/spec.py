"""A sweep file: parsed, expanded to its grid of runs and checked, before any run starts.

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

Each problem is a ConfigError naming the file, the line and the valid choices; every member's
interventions are checked against that member's model too.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icl_lab.config import ConfigError, did_you_mean
from icl_lab.intervention_check import check_interventions
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from interventions.spec import Intervention

SECTIONS = ("sweep", "axes", "conditions", "ablation")


@dataclass(frozen=True)
class SweepRun:
    """One member of the grid: its run's name (from its axis values), those values, its config
    (RunConfig.to_dict()) and the ablation scans of its finished run."""

    name: str
    axes: dict[str, Any]
    config: dict[str, Any]
    ablations: tuple[dict[str, Any], ...] = ()

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config)


def _line_of(text: str, key: str) -> int | None:
    """The line where `key` is defined: as a table or key at a line's start, else inside an
    inline table (`set = { "train.steps" = 300 }`)."""
    at_start = re.compile(rf'^\s*(\[+\s*)?("?){re.escape(key)}\2\s*(=|\]|\.)', re.M)
    inline = re.compile(rf'[{{,]\s*("?){re.escape(key)}\1\s*=')
    match = at_start.search(text) or inline.search(text)
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
    if not path.is_file():
        raise ConfigError(f"sweep file {path} is not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"sweep file {path} is not readable ({type(err).__name__}: {err})") from None
    runs = expand(text, source=str(path))
    check_interventions((_member_label(run, text, str(path)), run.run_config()) for run in runs if run.config.get("interventions"))
    return runs, text


def _member_label(run: SweepRun, text: str, source: str) -> str:
    """Where a member's interventions come from: its condition's table, and its name."""
    condition = run.axes.get("condition")
    where = _where(source, text, f"conditions.{condition}") if condition is not None else source
    return f"{where}: member {run.name!r}"


def expand(text: str, source: str = "<sweep>") -> list[SweepRun]:
    """The grid of runs of a sweep file's `text` (`source`: its name in errors), every key checked."""
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
        bad = next((k for k in head.get("set", {}) if k in str(err)), "set" if "set" in head else "task")
        raise ConfigError(f"{_where(source, text, bad)}: {err}") from None

    conditions: dict[str, tuple[Intervention, ...]] = {}
    for name, table in (data.get("conditions") or {}).items():
        specs = table.get("intervention", []) if isinstance(table, dict) else None
        if specs is None or not isinstance(specs, list) or set(table) - {"intervention"}:
            raise ConfigError(f"{_where(source, text, f'conditions.{name}')}: [conditions.{name}] holds only [[conditions.{name}.intervention]] tables")
        conditions[name] = tuple(Intervention.from_dict(s, where=f"{_where(source, text, f'conditions.{name}')}: conditions.{name}") for s in specs)

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
