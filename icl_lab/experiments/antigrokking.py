"""Anti-grokking (Prakash & Martin 2025) at CPU length: the `digits/cpu` preset with and
without weight decay, over seeds, and a table of the phases each run went through with the
HTSR α of its hidden layers at each phase.

Phases, read from the stored curves (train/test accuracy at every evaluation):
- memorised: the first evaluation with train accuracy 1.0;
- grokking: test accuracy rises by at least `GAIN` after memorisation, to its peak;
- anti-grokking: at the end test accuracy sits at least `DROP` below its peak while train
  accuracy stays at least 0.99 (generalisation collapses with the training set still fitted).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from icl_lab import figures
from icl_lab.experiments.grid import run_grid
from icl_lab.presets import PRESETS
from icl_lab.store import load_run

GAIN = 0.05
DROP = 0.03
FIGURE_STEM = "anti_grokking"  # OUT/anti_grokking.png and .svg, beside the table


def _at(wide: pl.DataFrame, step: int | None, column: str) -> float | None:
    if step is None or column not in wide.columns:
        return None
    row = wide.filter(pl.col("step") == step)
    return None if row.height == 0 else row[column][0]


def phases(wide: pl.DataFrame) -> dict:
    """The phase summary of one run from its wide metrics (one row per evaluation)."""
    steps = wide["step"].to_list()
    train_acc, test_acc = wide["train_accuracy"].to_list(), wide["test_accuracy"].to_list()
    memorised = next((s for s, a in zip(steps, train_acc) if a >= 1.0), None)
    peak_i = max(range(len(steps)), key=lambda i: (test_acc[i], -i))
    peak_step, peak = steps[peak_i], test_acc[peak_i]
    at_memorised = _at(wide, memorised, "test_accuracy")
    grokked = at_memorised is not None and peak - at_memorised >= GAIN and peak_step > memorised
    anti = peak - test_acc[-1] >= DROP and train_acc[-1] >= 0.99 and steps[-1] > peak_step
    alpha = "alpha_hidden_mean"
    return {
        "memorised_step": memorised,
        "test_at_memorised": at_memorised,
        "peak_test_step": peak_step,
        "peak_test_accuracy": peak,
        "final_test_accuracy": test_acc[-1],
        "final_train_accuracy": train_acc[-1],
        "grokking": grokked,
        "anti_grokking": anti,
        "alpha_init": _at(wide, steps[0], alpha),
        "alpha_memorised": _at(wide, memorised, alpha),
        "alpha_peak": _at(wide, peak_step, alpha),
        "alpha_final": _at(wide, steps[-1], alpha),
        "alpha_min": wide[alpha].min() if alpha in wide.columns else None,
        "traps_peak": _at(wide, peak_step, "correlation_traps_total"),
        "traps_final": _at(wide, steps[-1], "correlation_traps_total"),
        "weight_norm_peak": _at(wide, peak_step, "weight_norm"),
        "weight_norm_final": _at(wide, steps[-1], "weight_norm"),
    }


def run_experiment(out: str | Path, seeds: list[int], steps: int | None = None, weight_decays=(0.0, 0.01),
                   progress: bool = True, overrides: dict | None = None) -> pl.DataFrame:
    """Train digits/cpu for every (weight decay, seed) (finished runs are kept, stopped ones resumed) and tabulate."""
    out = Path(out)
    base = PRESETS["digits"]["cpu"].config.with_overrides(overrides or {})
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    grid = [(wd, seed, out / f"wd{wd:g}-seed{seed}") for wd in weight_decays for seed in seeds]
    # one run at a time: the grid policy keeps finished runs and resumes stopped ones
    run_grid([(run_dir, base.with_overrides({"train.weight_decay": wd, "seed": seed})) for wd, seed, run_dir in grid],
             group_size=1, progress=progress)
    rows = []
    for wd, seed, run_dir in grid:
        run = load_run(run_dir)
        rows.append({"weight_decay": wd, "seed": seed, **phases(run.wide()), "run": str(run_dir)})
    table = pl.DataFrame(rows)
    table.write_parquet(out / "anti_grokking.parquet")
    groups = {f"weight decay {wd:g}": [run_dir for w, _, run_dir in grid if w == wd] for wd in weight_decays}
    figures.save_figure(figures.anti_grokking_figure(groups), out / FIGURE_STEM)
    return table


def markdown(table: pl.DataFrame) -> str:
    cols = ["weight_decay", "seed", "memorised_step", "peak_test_step", "peak_test_accuracy", "final_test_accuracy",
            "grokking", "anti_grokking", "alpha_init", "alpha_peak", "alpha_final", "alpha_min", "traps_final"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.select(cols).iter_rows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)
