"""Curves of runs picked by folder, grouped as a figure wants them, and `icl-lab plot`'s chart."""

from __future__ import annotations

import os
from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts


def read_runs(paths: list[Path]) -> list[explore.RunInfo]:
    """RunInfo of each run folder, named by its path below the folders' common parent (one
    run: its folder's name), so runs in different experiments keep different names."""
    paths = [Path(p) for p in paths]
    root = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else Path(".")
    return [explore.read_run(p.resolve(), root) for p in paths]


def grouped_curves(groups: dict[str, list[Path]], metrics: list[str]) -> pl.DataFrame:
    """step, metric, value, run, condition of `metrics` for every run of every group; the
    group's name is the runs' condition (a figure's legend: "prev_token", "K=256", ...)."""
    frames = []
    for name, paths in groups.items():
        curves = explore.load_curves(read_runs(paths), metrics)
        frames.append(curves.with_columns(pl.lit(name).alias("condition")))
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=explore.CURVE_SCHEMA)


def by_metric(curves: pl.DataFrame) -> pl.DataFrame:
    """One run's curves with each metric as its own colour (the papers draw one colour per
    measure): `run` holds the metric's name."""
    return curves.with_columns(pl.col("metric").alias("run"))


def panels_of(metrics: list[str]) -> list[list[str]]:
    """One panel per metric family, in the order given (train_loss and test_loss share `*_loss`)."""
    panels: dict[str, list[str]] = {}
    for m in metrics:
        panels.setdefault(explore.metric_family(m), []).append(m)
    return list(panels.values())


def axis_of(infos: list[explore.RunInfo]) -> str:
    """The x title: what the runs' steps count, stated as a unit ("training steps", "RFM iterations")."""
    axes = sorted({i.axis for i in infos})
    return " / ".join(unit(a) for a in axes) or unit(explore.Declarations().x_axis)


def unit(axis: str) -> str:
    """A declared x axis ("training step", "iteration") as an axis title's unit."""
    return {"training step": "training steps", "iteration": "RFM iterations"}.get(axis, axis)


def runs_figure(paths: list[Path], metrics: list[str], *, by: str = "run", log_x: bool = False,
                log_y: bool = False) -> tuple[alt.VConcatChart, list[str]]:
    """Any runs' curves of `metrics`, one panel per metric family, coloured by run (or mean ±
    sd per condition, `by="condition"`), as the app's Phase changes page draws them; and the
    notes of points a log axis left out."""
    infos = read_runs(paths)
    curves = explore.load_curves(infos, metrics)
    domain = sorted({i.condition if by == "condition" else i.name for i in infos})
    data = explore.condition_bands(curves) if by == "condition" else curves
    data, notes = explore.for_log_axes(data, log_x, log_y, "mean" if by == "condition" else "value")
    rules, _ = explore.for_log_axes(explore.transition_marks(infos), log_x, False)
    chart = charts.curve_panels(data, panels_of(metrics), by=by, domain=domain, axis=axis_of(infos),
                                log_x=log_x, log_y=log_y, rules=rules)
    return chart, notes
