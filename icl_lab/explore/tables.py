"""The explorer's tables beside the metrics, read from the store alone (no Streamlit here): a
run's ablation and patching tables; the folders holding sweep and experiment tables, a sweep's
axes and phase diagram, a clamp experiment's conditions. Readers raise the store's `RunError`,
naming the file, when a table is unreadable or foreign."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import polars as pl

from icl_lab.explore.catalogue import HEADLINE_ACCURACIES, SCAN_MAX_DEPTH, SCAN_MAX_DIRS, RunInfo
from icl_lab.store import MEMBER_STATES, RunError, paths, read_table  # noqa: F401  (MEMBER_STATES: for the Sweeps page)


SWEEP_TABLE = "sweep.parquet"  # icl_lab.sweep.SweepPaths(OUT).table
CLAMP_TABLE = "singh_clamps.parquet"  # icl_lab.experiments.singh.run_experiment's table
ABLATION_COLUMNS = ("layer", "component", "metric", "delta")
SWEEP_COLUMNS = ("run", "status")
CLAMP_COLUMNS = ("condition", "baseline", "seeds", "transition_steps", "transition_steps_mean", "transition_sequences_mean",
                 "transition_sequences_sd", "ratio_to_baseline", "plateau_seeds")


def find_tables(root: str | Path, names: tuple[str, ...] = (SWEEP_TABLE, CLAMP_TABLE)) -> dict[str, list[Path]]:
    """name -> the folders under `root` holding a file of that name (a sweep's OUT, an
    experiment's OUT), bounded like the run scan (SCAN_MAX_DEPTH, SCAN_MAX_DIRS; RunError past
    them); run directories, hidden folders and links are not entered."""
    root = Path(root)
    found: dict[str, list[Path]] = {name: [] for name in names}
    frontier, seen = ([(root, 0)] if root.is_dir() else []), 0
    while frontier:
        folder, depth = frontier.pop()
        seen += 1
        if seen > SCAN_MAX_DIRS:
            raise RunError(f"gave up scanning {root} for sweep tables after {SCAN_MAX_DIRS} directories; point it at a runs folder")
        if paths(folder).config.is_file():
            continue  # a run: its own folders hold no tables of these kinds
        for name in names:
            if (folder / name).is_file():
                found[name].append(folder)
        if depth < SCAN_MAX_DEPTH:
            try:
                frontier += [(c, depth + 1) for c in folder.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith(".")]
            except OSError:
                continue
    return {name: sorted(folders) for name, folders in found.items()}


def _checked_table(path: Path, needed: tuple[str, ...], kind: str) -> pl.DataFrame:
    table = read_table(path)
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise RunError(f"{path}: not {kind} (no column {', '.join(missing)}; it has {', '.join(table.columns) or 'none'})")
    return table


def ablation_tables(info: RunInfo) -> dict[str, Path]:
    """name -> file of the run's ablation and patching tables (not read yet)."""
    return paths(info.path).ablation_tables()


def read_ablation_table(path: Path) -> pl.DataFrame:
    """An ablation or patching table; RunError when it is unreadable or lacks the columns the page draws."""
    return _checked_table(Path(path), ABLATION_COLUMNS, "an ablation table")


def read_sweep_table(sweep_dir: Path) -> pl.DataFrame:
    """A sweep's table (one row per member); RunError when unreadable or not a sweep table."""
    return _checked_table(Path(sweep_dir) / SWEEP_TABLE, SWEEP_COLUMNS, "a sweep table")


def sweep_axes(table: pl.DataFrame) -> list[str]:
    """The swept axes (the `axis.<key>` columns), in the sweep file's order."""
    return [c.removeprefix("axis.") for c in table.columns if c.startswith("axis.")]


def sweep_metrics(table: pl.DataFrame) -> list[str]:
    """The summary values a sweep's cells can be coloured by: the final metrics (`final.<metric>`,
    headline ones first), then the transition steps (`transition.<metric>`), then any other
    numeric column (a `first_steps.*` milestone, say) that is not an axis."""
    numeric = [c for c, kind in table.schema.items() if kind.is_numeric() and not c.startswith("axis.")]
    finals = [c for c in numeric if c.startswith("final.")]
    first = [f"final.{m}" for m in HEADLINE_ACCURACIES if f"final.{m}" in finals]
    transitions = sorted(c for c in numeric if c.startswith("transition."))
    return list(dict.fromkeys([*first, *sorted(finals), *transitions, *sorted(numeric)]))


def value_title(column: str) -> str:
    """A sweep column as a heatmap names it: `final.icl_accuracy` -> "icl_accuracy (final)",
    `transition.icl_accuracy` -> "icl_accuracy transition step"."""
    if column.startswith("final."):
        return f"{column.removeprefix('final.')} (final)"
    if column.startswith("transition."):
        return f"{column.removeprefix('transition.')} transition step"
    return column


def axis_values(table: pl.DataFrame, axis: str) -> list[str]:
    """An axis's values in grid order (the table's rows follow the sweep file)."""
    return [str(v) for v in table[f"axis.{axis}"].cast(pl.String).unique(maintain_order=True).to_list()]


def phase_diagram(table: pl.DataFrame, metric: str, x_axis: str, y_axis: str | None) -> pl.DataFrame:
    """x, y, mean, sd, seeds (how many members were averaged), runs: `metric` of the done
    members averaged over every axis but `x_axis` and `y_axis` (the seeds, usually); one row
    per cell of the grid, a cell without a finished member has mean null and seeds 0.
    y_axis None: one row of cells, y = "all"."""
    y = pl.col(f"axis.{y_axis}").cast(pl.String) if y_axis else pl.lit("all")
    members = table.select(pl.col(f"axis.{x_axis}").cast(pl.String).alias("x"), y.alias("y"), "run", "status",
                           pl.col(metric).cast(pl.Float64).alias("value") if metric in table.columns else pl.lit(None, pl.Float64).alias("value"))
    done = pl.col("value").filter((pl.col("status") == "done") & pl.col("value").is_not_null())
    cells = members.group_by("x", "y").agg(done.mean().alias("mean"), done.std().alias("sd"), done.len().alias("seeds"),
                                           pl.col("run").alias("runs"))
    grid = pl.DataFrame([(x, y) for y in (axis_values(table, y_axis) if y_axis else ["all"]) for x in axis_values(table, x_axis)],
                        schema={"x": pl.String, "y": pl.String}, orient="row")
    return grid.join(cells, on=["x", "y"], how="left", maintain_order="left").with_columns(pl.col("seeds").fill_null(0))


def failed_members(table: pl.DataFrame) -> list[tuple[str, str]]:
    """(member, last line of its error) of each failed member."""
    failed = table.filter(pl.col("status") == "failed")
    errors = failed["error"] if "error" in failed.columns else pl.Series([""] * failed.height)
    return [(run, str(error or "no error text")) for run, error in zip(failed["run"], errors)]


def read_clamp_table(folder: Path) -> pl.DataFrame:
    """An experiment's condition table (`singh_clamps.parquet`); RunError when unreadable or not one."""
    return _checked_table(Path(folder) / CLAMP_TABLE, CLAMP_COLUMNS, "a clamp-condition table")


def clamp_summary(table: pl.DataFrame) -> pl.DataFrame:
    """What the condition table shows: condition, baseline, transition in steps (mean ± sd over
    the seeds where one was found; -1 marks a seed without one) and in training sequences,
    ratio to the baseline, plateau seeds; baselines first (each condition after its own)."""
    parents = dict(zip(table["condition"], table["baseline"]))

    def depth(condition: str) -> int:  # how many baselines stand above it (a cycle cannot loop)
        chain = []
        while parents.get(condition) and condition not in chain:
            chain.append(condition)
            condition = parents[condition]
        return len(chain)

    rows = []
    for r in table.iter_rows(named=True):
        found = [s for s in (r["transition_steps"] or []) if s is not None and s >= 0]
        rows.append({
            "condition": r["condition"], "baseline": r["baseline"] or "",
            "transition (steps)": _plus_minus(r["transition_steps_mean"], statistics.stdev(found) if len(found) > 1 else None),
            "transition (sequences)": _plus_minus(r["transition_sequences_mean"], r["transition_sequences_sd"]),
            "ratio to baseline": r["ratio_to_baseline"],
            "plateau": f"{r['plateau_seeds']}/{r['seeds']} seeds",
            "seeds with a transition": f"{len(found)}/{r['seeds']}",
            "depth": depth(r["condition"]),
        })
    return pl.DataFrame(rows, schema_overrides={"ratio to baseline": pl.Float64}).sort("depth", maintain_order=True).drop("depth")


def _plus_minus(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "none found"
    # sd to two significant figures, written out: "400 ± 110", never "400 ± 1.1e+02"
    return f"{mean:.4g}" + (f" ± {float(f'{sd:.2g}'):g}" if sd is not None else "")


def condition_runs(folder: Path, condition: str, run_dirs: list[Path]) -> list[Path]:
    """The runs of one condition of an experiment in `folder` (`<condition>-seed<N>`), among `run_dirs`."""
    pattern = re.compile(rf"{re.escape(condition)}-seed\d+")
    return [d for d in run_dirs if d.parent == Path(folder) and pattern.fullmatch(d.name)]


def sweep_member_dirs(sweep_dir: Path, members: list[str]) -> list[Path]:
    """Where the sweep keeps each named member's run (icl_lab.sweep.SweepPaths)."""
    from icl_lab.sweep import SweepPaths

    layout = SweepPaths(sweep_dir)
    return [layout.run(name) for name in members]
