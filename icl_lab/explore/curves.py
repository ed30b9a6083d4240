"""Curves as the pages draw them: the metrics of several runs in one long table, grouped into
families, averaged into bands over seeds, trimmed for log axes, and the marks drawn on them
(transitions, LLC stage boundaries, the task's milestones).

Frames here are polars, long format: step, metric, value, run, condition.
"""

from __future__ import annotations

import math
import re

import polars as pl

from icl_lab.explore.catalogue import HEADLINE_ACCURACIES, HEADLINE_LOSSES, RunInfo
from icl_lab.store import METRICS_SCHEMA, RunError, load_metrics

CURVE_SCHEMA = {**METRICS_SCHEMA, "run": pl.String, "condition": pl.String}
FREQUENCY = re.compile(r"^(.*\.)?k\d+$")  # a Fourier frequency's measure: `embedding_fourier_norm.k3`
FOURIER_NORM = "embedding_fourier_norm.k"  # icl_lab.measures: one metric per frequency k
HEAD_SCORES = ("induction_score", "previous_token_score")  # icl_lab.measures.attention, one metric per head


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


def default_panels(names: list[str], track: list[str] | tuple[str, ...] = ()) -> list[list[str]]:
    """The panels a page opens with, as W&B would: the accuracies together, the losses together,
    the runs' tracked metrics (their config's `track`, what the task's preset is about) first in
    each, and a tracked metric of neither family in a panel of its own before them."""
    tracked = [m for m in track if m in names]
    accuracies = list(dict.fromkeys([*(m for m in tracked if metric_family(m) == "*_accuracy"), *(m for m in HEADLINE_ACCURACIES if m in names)]))
    losses = list(dict.fromkeys([*(m for m in tracked if metric_family(m) == "*_loss"), *(m for m in HEADLINE_LOSSES if m in names)]))
    others = [m for m in tracked if m not in accuracies and m not in losses]
    return [p for p in (others, accuracies, losses) if p] or [names[:2]]


def metric_range(metric: str) -> tuple[float | None, float | None]:
    """(low, high) a metric can take, from its family: an accuracy in [0, 1], a loss ≥ 0,
    anything else unbounded (None)."""
    family = metric_family(metric)
    if family == "*_accuracy":
        return 0.0, 1.0
    if family == "*_loss" or metric == "loss":
        return 0.0, None
    return None, None


def one_run_per_seed(infos: list[RunInfo], conditions: dict[str, str] | None = None) -> tuple[list[RunInfo], list[RunInfo]]:
    """(kept, left out): of the runs of one condition (`conditions`: run name -> label, e.g.
    catalogue.condition_labels; else RunInfo.condition) with the same seed (a run repeated), the
    newest (last written) is kept, so a band over seeds averages independent seeds only; a run
    without a seed stands for itself."""
    newest: dict[tuple, RunInfo] = {}
    for info in infos:
        condition = (conditions or {}).get(info.name, info.condition)
        key = (condition, info.seed) if info.seed is not None else (condition, info.name)
        if key not in newest or (info.modified, info.name) > (newest[key].modified, newest[key].name):
            newest[key] = info
    kept = {id(i) for i in newest.values()}
    return [i for i in infos if id(i) in kept], [i for i in infos if id(i) not in kept]


def head_scores(layer: int, head: int) -> list[str]:
    """The metrics that score one head over training: `induction_score.L1H0`, `previous_token_score.L1H0`."""
    return [f"{score}.L{layer}H{head}" for score in HEAD_SCORES]


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


def condition_bands(curves: pl.DataFrame) -> pl.DataFrame:
    """Mean and ± one standard deviation over the runs of each condition, per step and metric
    (give it one run per seed: one_run_per_seed); the band clipped to the metric's range
    (metric_range: a loss band never dips below 0, an accuracy band stays in [0, 1])."""
    bands = (
        curves.group_by(["condition", "metric", "step"])
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().fill_null(0.0).alias("sd"), pl.len().alias("runs"))
        .with_columns((pl.col("mean") - pl.col("sd")).alias("low"), (pl.col("mean") + pl.col("sd")).alias("high"))
        .sort(["condition", "metric", "step"])
    )
    ranges = {m: metric_range(m) for m in bands["metric"].unique().to_list()}
    low = pl.col("metric").replace_strict({m: r[0] for m, r in ranges.items()}, default=None, return_dtype=pl.Float64)
    high = pl.col("metric").replace_strict({m: r[1] for m, r in ranges.items()}, default=None, return_dtype=pl.Float64)
    return bands.with_columns(pl.max_horizontal("low", low).alias("low"), pl.min_horizontal("high", high).alias("high"))


def transition_marks(infos: list[RunInfo]) -> pl.DataFrame:
    """run, condition, metric, step, kind of every detected transition (kind "transition"),
    every LLC stage boundary (kind "stage boundary: peak", ...; icl_lab.stages) and the peak and
    half-gain-lost step of a rise that fell back (kind "transience: ..."; phases.find_transience)."""
    rows = [{"run": i.name, "condition": i.condition, "metric": m, "step": s, "kind": "transition"}
            for i in infos for m, s in i.transitions.items() if s is not None]
    rows += [{"run": i.name, "condition": i.condition, "metric": m, "step": s, "kind": f"stage boundary: {kind}"}
             for i in infos for m, found in i.stages.items() for s, kind in found]
    rows += [{"run": i.name, "condition": i.condition, "metric": m, "step": s, "kind": kind}
             for i in infos for m, (peak, half) in i.transience.items()
             for s, kind in ((peak, "transience: peak"), (half, "transience: half the gain lost"))]
    return pl.DataFrame(rows, schema={"run": pl.String, "condition": pl.String, "metric": pl.String, "step": pl.Int64, "kind": pl.String})


def milestone_marks(info: RunInfo) -> pl.DataFrame:
    """step, label of each milestone the run's task declares that the run reached (its
    summary.json first_steps), e.g. grokking's s₁ and s₂ (Nanda et al. 2023)."""
    rows = [{"step": info.first_steps[m.key], "label": m.label} for m in info.declared.milestones if m.key in info.first_steps]
    return pl.DataFrame(rows, schema={"step": pl.Int64, "label": pl.String})


def fourier_spectrum(info: RunInfo) -> pl.DataFrame:
    """step, frequency, norm from the stored `embedding_fourier_norm.k*` metrics."""
    spec = load_curves([info]).filter(pl.col("metric").str.starts_with(FOURIER_NORM))
    frequency = pl.col("metric").str.strip_prefix(FOURIER_NORM).cast(pl.Int64, strict=False).alias("frequency")
    return spec.with_columns(frequency).drop_nulls("frequency").select("step", "frequency", pl.col("value").alias("norm"))
