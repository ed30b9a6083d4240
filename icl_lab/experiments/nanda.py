"""Nanda et al. (ICLR 2023) at their own size on a CPU: `modular/nanda` (a + b mod 113, 30% of
the pairs, full batch, 1 layer, d_model 128) to 15k steps over seeds, and the phase boundaries
read from the progress measures recorded live at every evaluation (every 100 steps, as their
checkpoints), beside the paper's.

Boundaries, read from the stored curves (`phases`):
- memorised (s₁): the first evaluation with train accuracy ≥ 0.99;
- memorisation ends: test loss at its peak before s₂ (their boundary at ~1.4k epochs is there);
- restricted-loss fall: the first evaluation after s₁ at which the restricted loss is below
  `RESTRICTED_FALL` of its value at s₁ (the circuit forming, before the test loss moves), and
  circuit formed: the first at which it is below `RESTRICTED_FIT` (the key frequencies alone
  fit every pair of the grid, training and held-out);
- generalised (s₂): the first evaluation with test accuracy ≥ 0.95; also test loss < 1;
- clean-up ends: after the weight norm's fastest fall (its relative drop over `NORM_WINDOW`
  steps), the first step at which that drop is below `LEVEL_FRACTION` of the fastest;
- key frequencies: Nanda's neuron clustering on the final model's MLP.

The paper's figures for the main run (their notebook's boundaries, drawn by eye) are in
`PAPER`; see docs/nanda.md for the measured table and where ours differs.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from icl_lab import figures
from icl_lab.experiments.grid import markdown_table, mean_sd, run_grid
from icl_lab.presets import PRESETS
from icl_lab.store import load_run

STEPS = 15_000
FIGURE_STEM = "nanda_phases"  # OUT/nanda_phases.png and .svg: Fig. 7's layout, one column per seed
TRAIN_MEMORISED = 0.99
TEST_GENERALISED = 0.95
RESTRICTED_FALL = 0.5
RESTRICTED_FIT = 0.01
NORM_WINDOW = 1000
LEVEL_FRACTION = 0.25

# Nanda et al. 2023, main run (figure 1/7 and their notebook): epochs
PAPER = {
    "memorisation_end": 1400,
    "circuit_formation_end": 9400,
    "cleanup_end": 13_300,
    "test_loss_below_1": "7.6k, 8.8k, 13.8k (three runs)",
    "key_frequencies": "{14, 35, 41, 42, 52} (main run); 3-4 in other seeds",
}


def _first(steps: list[int], values: list[float], test, after: int = -1) -> int | None:
    return next((s for s, v in zip(steps, values) if s > after and v is not None and test(v)), None)


def _at(steps: list[int], values: list[float], step: int | None) -> float | None:
    return None if step is None or step not in steps else values[steps.index(step)]


def cleanup_end(steps: list[int], weight_norm: list[float], after: int | None) -> int | None:
    """The step at which the weight norm's fall levels off after `after` (s₂): the relative drop
    over the next NORM_WINDOW steps, d(t) = (w(t) − w(t + W)) / w(t), peaks, then first falls
    below LEVEL_FRACTION of that peak. None while it has not levelled off in the run."""
    if after is None:
        return None
    by_step = dict(zip(steps, weight_norm))
    drops = [(s, (w - by_step[s + NORM_WINDOW]) / w) for s, w in by_step.items() if s + NORM_WINDOW in by_step and s >= after - NORM_WINDOW]
    if not drops:
        return None
    peak_i = max(range(len(drops)), key=lambda i: drops[i][1])
    peak = drops[peak_i][1]
    return next((s for s, d in drops[peak_i:] if d < LEVEL_FRACTION * peak), None)


def phases(wide: pl.DataFrame) -> dict:
    """The phase boundaries of one run from its wide metrics (one row per evaluation)."""
    steps = wide["step"].to_list()
    col = {name: wide[name].to_list() for name in wide.columns if name != "step"}
    s1 = _first(steps, col["train_accuracy"], lambda a: a >= TRAIN_MEMORISED)
    s2 = _first(steps, col["test_accuracy"], lambda a: a >= TEST_GENERALISED)
    before_s2 = [i for i, s in enumerate(steps) if s2 is None or s <= s2]
    peak_i = max(before_s2, key=lambda i: col["test_loss"][i])
    restricted_at_s1 = _at(steps, col["restricted_loss"], s1)
    restricted_fall = None if restricted_at_s1 is None else _first(
        steps, col["restricted_loss"], lambda v: v < RESTRICTED_FALL * restricted_at_s1, after=s1)
    return {
        "memorised_step": s1,
        "test_loss_peak_step": steps[peak_i],
        "test_loss_peak": col["test_loss"][peak_i],
        "restricted_fall_step": restricted_fall,
        "circuit_formed_step": _first(steps, col["restricted_loss"], lambda v: v < RESTRICTED_FIT, after=s1 or 0),
        "generalised_step": s2,
        "test_loss_below_1_step": _first(steps, col["test_loss"], lambda v: v < 1.0),
        "cleanup_end_step": cleanup_end(steps, col["weight_norm"], s2),
        "final_test_accuracy": col["test_accuracy"][-1],
        "final_test_loss": col["test_loss"][-1],
        "final_restricted_loss": col["restricted_loss"][-1],
        "final_excluded_loss": col["excluded_loss"][-1],
        "gini_embedding_final": col["gini_embedding"][-1],
        "gini_neuron_logit_final": col["gini_neuron_logit"][-1],
        "weight_norm_at_memorised": _at(steps, col["weight_norm"], s1),
        "weight_norm_final": col["weight_norm"][-1],
        "key_frequency_count_final": col["key_frequency_count"][-1],
    }


def final_key_frequencies(run_dir: Path) -> list[int]:
    """Nanda's neuron clustering on the run's final weights (frequencies 1..p//2)."""
    from icl_lab.checkpoints import load_model
    from icl_lab.grokking.measures import key_frequencies_from_model
    from icl_lab.measures.registry import EvalData

    model, task, _ = load_model(run_dir)
    with model.eval_mode():
        return [int(k) for k in key_frequencies_from_model(model, EvalData(task, task.eval_sets()))]


def run_experiment(out: str | Path, seeds: list[int], steps: int | None = None, progress: bool = True,
                   overrides: dict | None = None) -> pl.DataFrame:
    """Train modular/nanda for every seed (finished runs kept, stopped ones resumed) and tabulate."""
    out = Path(out)
    base = PRESETS["modular"]["nanda"].config.with_overrides({"train.steps": STEPS, **(overrides or {})})
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    grid = [(seed, out / f"seed{seed}") for seed in seeds]
    run_grid([(run_dir, base.with_overrides({"seed": seed})) for seed, run_dir in grid], group_size=1, progress=progress)
    rows = []
    for seed, run_dir in grid:
        run = load_run(run_dir)
        rows.append({"seed": seed, **phases(run.wide()), "key_frequencies": final_key_frequencies(run_dir),
                     "wall_minutes": run.summary.get("wall_seconds", float("nan")) / 60, "run": str(run_dir)})
    table = pl.DataFrame(rows)
    table.write_parquet(out / "nanda_phases.parquet")
    figures.save_figure(alt.hconcat(*[figures.nanda_figure(run_dir) for _, run_dir in grid]), out / FIGURE_STEM)
    return table


ROWS = [
    ("memorised (train acc ≥ 0.99)", "memorised_step", "train loss < 0.01 by ~300"),
    ("test loss peak (memorisation ends)", "test_loss_peak_step", f"~{PAPER['memorisation_end']:,}"),
    ("restricted loss < ½ its level at memorised", "restricted_fall_step", f"falls through {PAPER['memorisation_end']:,}–{PAPER['circuit_formation_end']:,}"),
    (f"circuit formed (restricted loss < {RESTRICTED_FIT})", "circuit_formed_step", "restricted loss low well before test loss"),
    ("generalised (test acc ≥ 0.95)", "generalised_step", f"~{PAPER['circuit_formation_end']:,} (clean-up starts)"),
    ("test loss < 1", "test_loss_below_1_step", PAPER["test_loss_below_1"]),
    ("weight norm's fall levels off (clean-up ends)", "cleanup_end_step", f"~{PAPER['cleanup_end']:,}"),
]


def markdown(table: pl.DataFrame) -> str:
    """One row per boundary: each seed's step, the mean ± sd, the paper's."""
    seeds = table["seed"].to_list()
    rows = []
    for label, column, paper in ROWS:
        values = table[column].to_list()
        mean, sd = mean_sd([v for v in values if v is not None])
        summary = "—" if mean is None else f"{mean:,.0f}" + ("" if sd is None else f" ± {sd:,.0f}")
        rows.append([label, *("not reached" if v is None else f"{v:,}" for v in values), summary, paper])
    rows.append(["key frequencies (final)", *(", ".join(map(str, k)) for k in table["key_frequencies"].to_list()), "", PAPER["key_frequencies"]])
    rows.append(["final test loss", *(f"{v:.2e}" for v in table["final_test_loss"].to_list()), "", "~2e-7 (40k epochs)"])
    rows.append(["wall time (min)", *(f"{v:.0f}" for v in table["wall_minutes"].to_list()), "", ""])
    return "\n".join(markdown_table(["boundary (step)", *(f"seed {s}" for s in seeds), "mean ± sd", "paper (epochs)"], rows))
