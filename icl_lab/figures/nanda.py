"""Nanda et al. (ICLR 2023) Fig. 7's layout for one `modular` run: train and test loss with
the restricted and excluded loss on a log scale against training steps (their epochs: full
batch, one step per epoch), and the phase boundaries the task's milestones record (s₁: train
accuracy reaches 1, the end of memorisation; s₂: test accuracy reaches 0.95, cleanup). A
second panel draws the total weight norm Σθ², which falls through circuit formation and cleanup.

The restricted and excluded losses are the ones measured with the final model's key frequencies
at every checkpoint (`*_final_keys`, the paper's protocol) where the run has them, else those
measured with each evaluation's own key frequencies.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import explore
from icl_lab.explore import charts
from icl_lab.figures.runs import by_metric, read_runs, unit

NANDA_LOSSES = ("train_loss", "test_loss", "restricted_loss", "excluded_loss")
FINAL_KEYS = "_final_keys"  # icl_lab.grokking.posthoc: recomputed with the final model's key frequencies


def nanda_losses(names: list[str]) -> list[str]:
    """The four losses of Fig. 7 the run has, the final-key restricted/excluded loss preferred."""
    chosen = []
    for m in NANDA_LOSSES:
        if m + FINAL_KEYS in names:
            chosen.append(m + FINAL_KEYS)
        elif m in names:
            chosen.append(m)
    return chosen


def reached(info: explore.RunInfo, curves: pl.DataFrame) -> pl.DataFrame:
    """step, label of each milestone read from the curves: a run still training has no
    summary.json (whose first_steps the finished run's marks come from) yet."""
    rows = []
    for m in info.declared.milestones:
        hit = curves.filter((pl.col("metric") == m.metric) & (pl.col("value") >= m.level))
        if hit.height:
            rows.append({"step": int(hit["step"].min()), "label": m.label})
    return pl.DataFrame(rows, schema={"step": pl.Int64, "label": pl.String})


def nanda_figure(run_dir: Path) -> alt.VConcatChart:
    """The figure of one modular run; the curves are the run's metrics.parquet, unchanged."""
    (info,) = read_runs([Path(run_dir)])
    curves = explore.load_curves([info])
    names = explore.metric_names(curves)
    losses = nanda_losses(names)
    panels = [losses] + ([["weight_norm"]] if "weight_norm" in names else [])
    wanted = [m for p in panels for m in p]
    loss_rows, _ = explore.for_log_axes(curves.filter(pl.col("metric").is_in(losses)), False, True)
    data = pl.concat([loss_rows, curves.filter(pl.col("metric") == "weight_norm")])
    # drawn under the paper's names (one `*_loss` family: the panel's y title reads "loss"); the title says which keys
    final_keys = any(m.endswith(FINAL_KEYS) for m in losses)
    data = by_metric(data.with_columns(pl.col("metric").str.strip_suffix(FINAL_KEYS)))
    losses, wanted = [m.removesuffix(FINAL_KEYS) for m in losses], [m.removesuffix(FINAL_KEYS) for m in wanted]
    marks = explore.milestone_marks(info) if info.first_steps else reached(info, curves)
    loss_panel = charts.curve_panels(data, [losses], by="run", domain=wanted, axis=unit(info.axis), log_y=True, marks=marks,
                                     colour_title="measure")
    keys = "the final model's key frequencies" if final_keys else "each evaluation's key frequencies"
    loss_panel = loss_panel.properties(title=f"Nanda et al. Fig. 7: restricted and excluded loss with {keys}")
    if len(panels) == 1:
        return loss_panel
    norm_panel = charts.curve_panels(data, [["weight_norm"]], by="run", domain=wanted, axis=unit(info.axis), marks=marks,
                                     colour_title="measure")
    with warnings.catch_warnings():  # the two parts share the hover ruler, as curve_panels' panels do
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return alt.vconcat(loss_panel, norm_panel).resolve_scale(color="shared", strokeDash="independent")
