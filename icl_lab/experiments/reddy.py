"""Reddy (ICLR 2024), figure 2 style: in-context vs in-weights learning over the number of
classes K and the burstiness B, on the reference model (`bursty/small` by default).

Every cell (K, B) is trained for each seed from the preset with only `task.num_classes` and
`task.burstiness` changed (N = 8 context pairs, L = 32 labels, ε = 0.1, all sequences bursty:
the preset's task). The whole grid is one call of `run_grid`: the runs share the model's
shapes, so they train as batched groups (`--group-size 1`: one at a time, the baseline for
the wall time).

The table, per cell, mean ± sd over seeds of the final
- ICL accuracy (novel classes, query class in context: only in-context use can be right),
- IWL accuracy (trained classes drawn i.i.d., query class rarely in the context: only the
  class → label mapping stored in the weights can be right),
and the step of the ICL transition where one was found (phases.find_transition).

Reddy's figure 2: ICL rises with K and with B; small K (few classes, each seen often) favours
in-weights learning, and ICL then fails to appear or fades.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import polars as pl

from icl_lab import figures
from icl_lab.config import ConfigError
from icl_lab.experiments.grid import mean_sd, run_grid
from icl_lab.phases import find_transition
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import atomic_write_json, load_run

CLASSES = (256, 512, 1024, 2048, 8192)  # K
BURSTINESS = (1, 2, 4)  # B
GRID_KEYS = {"task.num_classes": "K", "task.burstiness": "B"}
FIGURE_STEM = "reddy_phases"  # OUT/reddy_phases.png and .svg: the two heatmaps, beside the table


def cell_name(k: int, b: int, seed: int) -> str:
    return f"K{k}-B{b}-seed{seed}"


def plan(
    preset: str, seeds: list[int], steps: int | None, overrides: dict | None, grid: dict[str, list[int]] | None
) -> list[tuple[int, int, int, RunConfig]]:
    """(K, B, seed, config) for every run, each config checked (a bad K or B names itself)
    before any run starts."""
    task, _, name = preset.rpartition("/")
    base = get_preset(task or "bursty", name).config.with_overrides(overrides or {})
    if base.task != "bursty":
        raise ConfigError(f"the reddy-phases experiment runs on a bursty preset, not {preset!r} (task {base.task!r})")
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    grid = dict(grid or {})
    for key in grid:
        if key not in GRID_KEYS:
            raise ConfigError(f"--grid {key}: the reddy-phases grid has axes {', '.join(GRID_KEYS)}")
    classes = grid.get("task.num_classes", list(CLASSES))
    bursts = grid.get("task.burstiness", list(BURSTINESS))
    runs = []
    for k in classes:
        for b in bursts:
            cell = base.with_overrides({"task.num_classes": k, "task.burstiness": b})
            for seed in seeds:
                runs.append((k, b, seed, dataclasses.replace(cell.with_overrides({"seed": seed}), preset=f"{base.preset}+K{k}-B{b}")))
    return runs


def run_experiment(
    out: str | Path,
    seeds: list[int],
    steps: int | None = None,
    progress: bool = True,
    overrides: dict | None = None,
    preset: str = "bursty/small",
    grid: dict[str, list[int]] | None = None,
    group_size: int | None = None,
) -> pl.DataFrame:
    """Train the grid (batched groups unless `group_size` is 1), then tabulate. The wall time
    of this call's training is written to OUT/reddy_phases.json beside the table."""
    out = Path(out)
    runs = plan(preset, seeds, steps, overrides, grid)
    timing = run_grid([(out / cell_name(k, b, s), config) for k, b, s, config in runs], group_size, progress)
    result = tabulate(out, runs)
    result.write_parquet(out / "reddy_phases.parquet")
    atomic_write_json(out / "reddy_phases.json", {"runs": len(runs), **timing.to_dict()})
    (out / "reddy_phases.md").write_text(markdown(result, timing.to_dict()))
    figures.save_figure(figures.reddy_figure(result), out / FIGURE_STEM)
    return result


def tabulate(out: Path, runs: list[tuple[int, int, int, RunConfig]]) -> pl.DataFrame:
    cells: dict[tuple[int, int], list[dict]] = {}
    for k, b, seed, _ in runs:
        run = load_run(out / cell_name(k, b, seed))
        curve = run.curve("icl_accuracy")
        t = find_transition(curve["step"].to_numpy(), curve["value"].to_numpy())
        final = run.summary["final"]
        cells.setdefault((k, b), []).append(
            {"icl": final["icl_accuracy"], "iwl": final["iwl_accuracy"], "step": t.transition_step}
        )
    rows = []
    for (k, b), seeds in cells.items():
        icl, icl_sd = mean_sd([s["icl"] for s in seeds])
        iwl, iwl_sd = mean_sd([s["iwl"] for s in seeds])
        found = [s["step"] for s in seeds if s["step"] is not None]
        rows.append({
            "K": k, "B": b, "seeds": len(seeds),
            "icl_accuracy_mean": icl, "icl_accuracy_sd": icl_sd,
            "iwl_accuracy_mean": iwl, "iwl_accuracy_sd": iwl_sd,
            "icl_transition_seeds": len(found),
            "icl_transition_step_mean": statistics.fmean(found) if found else None,
        })
    return pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in ("icl_accuracy_sd", "iwl_accuracy_sd", "icl_transition_step_mean")})


def _cell(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


def markdown(table: pl.DataFrame, timing: dict | None = None) -> str:
    """Two grids, K down and B across: final ICL accuracy and final IWL accuracy (mean ± sd
    over seeds), and the ICL transition (seeds with one / mean step)."""
    bursts = sorted(set(table["B"].to_list()))
    lines = []
    for title, key in (("final ICL accuracy", "icl_accuracy"), ("final IWL accuracy", "iwl_accuracy")):
        lines += [f"{title} (mean ± sd over seeds)", "", "| K \\ B | " + " | ".join(map(str, bursts)) + " |",
                  "|---|" + "---|" * len(bursts)]
        for k in sorted(set(table["K"].to_list())):
            row = {r["B"]: r for r in table.filter(pl.col("K") == k).iter_rows(named=True)}
            lines.append(f"| {k} | " + " | ".join(_cell(row[b][f"{key}_mean"], row[b][f"{key}_sd"]) if b in row else "" for b in bursts) + " |")
        lines.append("")
    lines += ["ICL transition (seeds with one: mean step)", "", "| K \\ B | " + " | ".join(map(str, bursts)) + " |",
              "|---|" + "---|" * len(bursts)]
    for k in sorted(set(table["K"].to_list())):
        row = {r["B"]: r for r in table.filter(pl.col("K") == k).iter_rows(named=True)}
        cells = []
        for b in bursts:
            r = row.get(b)
            cells.append("" if r is None else f"{r['icl_transition_seeds']}/{r['seeds']}" + (
                "" if r["icl_transition_step_mean"] is None else f": {r['icl_transition_step_mean']:.0f}"))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if timing:
        lines += ["", timing_line(timing)]
    return "\n".join(lines) + "\n"


def timing_line(timing: dict) -> str:
    return (f"wall time {timing['wall_seconds']:.0f} s: {timing['trained']} runs trained "
            f"({timing['groups']} batched groups; group size {timing['group_size'] or 'all that fit'}), "
            f"{timing['resumed']} resumed, {timing['kept']} kept")


def report(out: str | Path) -> str:
    """The wall-time line of the last `run_experiment` into `out`."""
    return timing_line(json.loads((Path(out) / "reddy_phases.json").read_text()))
