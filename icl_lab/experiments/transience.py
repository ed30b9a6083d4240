"""Transient in-context learning: it appears, then fades; what replaces it, and what keeps it.

Singh et al. (NeurIPS 2023): ICL that emerges in training often fades as training goes on, and
L2 regularisation makes it persist. Singh et al. (ICML 2025): what replaces it is
context-constrained in-weights learning (CIWL), and ICL persists when the query is an exact
copy of its context item. On `bursty/transience` (the Reddy grid's K = 256, B = 4 corner,
trained long), every run is read with the strategy probes (tasks/probes.py): ICL accuracy on
novel classes, flip (ICL), ciwl and iwl accuracy.

Conditions (each over the seeds):
- `none`: the preset;
- `weight_decay`: L2 regularisation, `train.weight_decay` = WEIGHT_DECAY with Adam (coupled:
  λ·θ added to the gradient, the L2 penalty ½λ‖θ‖² of Singh et al. 2023);
- `decoupled_decay`: AdamW, θ ← θ − lr·λ·θ beside the Adam step (Loshchilov & Hutter), λ =
  DECOUPLED_WEIGHT_DECAY: with Adam the coupled penalty's gradient is rescaled per parameter by
  the gradient's running RMS, so it is not the same regulariser;
- `match_exemplars`: their persistent-ICL data (`task.match_exemplars`: every copy of a class
  in a training sequence is one item, and the query its exact copy);
- `hold_induction`: from the end of the `none` run's first ICL rise (same seed; `hold_from`
  to choose the step) on, its strongest layer-1 induction head at that step held to the ideal induction pattern
  (query row): does holding the circuit keep ICL, or does CIWL take the output anyway?

The table, per condition, mean ± sd over seeds: the ICL-accuracy curve's peak and its step,
the flip accuracy's (ICL alone) highest evaluation and its step, the step where it has lost half its gain (seeds with a lasting fall, phases.find_transience),
final ICL, flip, CIWL and IWL accuracy, and which strategy ends on top in each seed: the largest
of ICL = flip accuracy, IWL = iwl accuracy and CIWL = ciwl accuracy − iwl accuracy (the ciwl
probe is answered by IWL too; CIWL alone fails the iwl probe).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from icl_lab import figures
from icl_lab.config import ConfigError, did_you_mean
from icl_lab.experiments.grid import markdown_table, mean_sd, run_grid
from icl_lab.intervention_check import check_interventions
from icl_lab.phases import find_transience
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import load_run
from interventions import Intervention

WEIGHT_DECAY = 1e-3
DECOUPLED_WEIGHT_DECAY = 0.1  # AdamW's: θ shrinks by lr·λ = 3e-4 of itself a step at lr 3e-3
CONDITIONS = {
    "none": "the preset",
    "weight_decay": f"L2 regularisation: Adam with train.weight_decay={WEIGHT_DECAY:g} (Singh et al. 2023)",
    "decoupled_decay": f"decoupled weight decay: AdamW with train.weight_decay={DECOUPLED_WEIGHT_DECAY:g}",
    "match_exemplars": "persistent-ICL data: the query an exact copy of its context item (Singh et al. 2025)",
    "hold_induction": "the strongest layer-1 induction head held to the ideal induction pattern from the end of the first ICL rise on",
}
SETTINGS = {"weight_decay": {"train.weight_decay": WEIGHT_DECAY},
            "decoupled_decay": {"train.optimizer": "adamw", "train.weight_decay": DECOUPLED_WEIGHT_DECAY},
            "match_exemplars": {"task.match_exemplars": True}}
STRATEGY_METRICS = ("icl_accuracy", "flip_accuracy", "ciwl_accuracy", "iwl_accuracy")
FIGURE_STEM = "transience"  # OUT/transience.png and .svg: the probes against steps, a panel per condition


def run_dir_of(out: Path, condition: str, seed: int) -> Path:
    return out / f"{condition}-seed{seed}"


def plan(preset: str, conditions: list[str] | None, steps: int | None, overrides: dict | None) -> dict[str, RunConfig]:
    """Each condition's config (the held clamp's head and step are chosen after `none` ran),
    all checked before any run starts."""
    task, _, name = preset.rpartition("/")
    base = get_preset(task or "bursty", name).config.with_overrides(overrides or {})
    if base.task not in ("bursty", "pairs"):
        raise ConfigError(f"the transience experiment runs on a bursty or pairs preset, not {preset!r} (task {base.task!r})")
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    missing = [m for m in STRATEGY_METRICS if m not in base.measures]
    if missing:
        base = base.with_overrides({"measures": missing})
    wanted = list(CONDITIONS) if conditions is None else list(conditions)
    for c in wanted:
        if c not in CONDITIONS:
            raise ConfigError(f"unknown condition {c!r}.{did_you_mean(c, list(CONDITIONS))} Valid conditions: {', '.join(CONDITIONS)}")
    if "hold_induction" in wanted and "none" not in wanted:
        wanted.append("none")  # the held head and step come from the unclamped run
    return {c: dataclasses.replace(base.with_overrides(SETTINGS.get(c, {})), preset=f"{base.preset}+{c}")
            for c in CONDITIONS if c in wanted}


def first_rise_end(steps, values) -> int:
    """Where ICL's first rise ends: the first evaluation at which the accuracy has come 90% of
    the way from its first value to its highest value in the first quarter of the run's
    evaluations. The early peak, not the curve's global maximum: a run whose ICL fell and then
    rose again late (Nguyen & Reddy's bimodal runs) has its maximum near the end."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    early = values[: max(2, len(values) // 4)]
    level = values[0] + 0.9 * (np.nanmax(early) - values[0])
    return int(steps[np.argmax(values >= level)])


def held_clamp(reference: Path, hold_from: int | None = None) -> Intervention:
    """The `hold_induction` clamp: the reference run's strongest layer-1 induction head at the
    end of its first ICL rise (`first_rise_end`, or at `hold_from`), held to the ideal
    induction pattern from that step on."""
    run = load_run(reference)
    curve = run.curve("icl_accuracy")
    step = hold_from if hold_from is not None else first_rise_end(curve["step"].to_numpy(), curve["value"].to_numpy())
    metrics = run.metrics.filter(pl.col("metric").str.starts_with("induction_score.L1H"))
    at = metrics.filter(pl.col("step") == metrics.filter(pl.col("step") <= step)["step"].max())
    best = at.sort("value", descending=True)["metric"][0]
    head = int(best.rsplit("H", 1)[1])
    return Intervention(hook="blocks.1.attn.hook_pattern", heads=(head,), query_positions="query", target="induction",
                        steps=(int(step), -1), name=f"L1H{head} ideal induction from step {step}")


def run_experiment(out: str | Path, seeds: list[int], conditions: list[str] | None = None, steps: int | None = None,
                   progress: bool = True, overrides: dict | None = None, preset: str = "bursty/transience",
                   group_size: int | None = None, hold_from: int | None = None) -> pl.DataFrame:
    """Train every condition over every seed (batched groups unless group_size is 1; the held
    clamp's runs after the unclamped ones), then tabulate into OUT/transience.{parquet,md} and
    draw OUT/transience.{png,svg}."""
    out = Path(out)
    configs = plan(preset, conditions, steps, overrides)
    if hold_from is not None and hold_from >= next(iter(configs.values())).train.steps:
        raise ConfigError(f"--hold-from {hold_from} is not before the runs' last step {next(iter(configs.values())).train.steps}")
    check_interventions((f"condition {name!r}", config) for name, config in configs.items())
    first = [(run_dir_of(out, c, s), config.with_overrides({"seed": s})) for c, config in configs.items() if c != "hold_induction" for s in seeds]
    run_grid(first, group_size, progress)
    if "hold_induction" in configs:
        held = [(run_dir_of(out, "hold_induction", s), dataclasses.replace(
            configs["hold_induction"], interventions=(held_clamp(run_dir_of(out, "none", s), hold_from),)).with_overrides({"seed": s}))
            for s in seeds]
        check_interventions((f"condition 'hold_induction' seed {s}", config) for s, (_, config) in zip(seeds, held))
        run_grid(held, group_size, progress)
    result = tabulate(out, list(configs), seeds)
    result.write_parquet(out / "transience.parquet")
    (out / "transience.md").write_text(markdown(result))
    figures.save_figure(figures.transience_figure({c: [run_dir_of(out, c, s) for s in seeds] for c in configs}), out / FIGURE_STEM)
    return result


def strategy_on_top(final: dict[str, float]) -> str:
    """ICL = flip accuracy, IWL = iwl accuracy, CIWL = ciwl − iwl accuracy: the largest."""
    scores = {"ICL": final["flip_accuracy"], "IWL": final["iwl_accuracy"], "CIWL": final["ciwl_accuracy"] - final["iwl_accuracy"]}
    return max(scores, key=scores.get)


def tabulate(out: Path, conditions: list[str], seeds: list[int]) -> pl.DataFrame:
    rows = []
    for condition in conditions:
        per_seed = []
        for seed in seeds:
            run = load_run(run_dir_of(out, condition, seed))
            curve = run.curve("icl_accuracy")
            found = find_transience(curve["step"].to_numpy(), curve["value"].to_numpy())
            final = {m: run.summary["final"][m] for m in STRATEGY_METRICS}
            flip = run.curve("flip_accuracy")
            best = int(flip["value"].arg_max())
            per_seed.append({"found": found, "final": final, "top": strategy_on_top(final),
                             "flip_peak": (float(flip["value"][best]), float(flip["step"][best]))})
        row = {"condition": condition, "seeds": len(per_seed)}
        for key, values in (("peak_icl", [s["found"].peak_value for s in per_seed]),
                            ("peak_step", [float(s["found"].peak_step) for s in per_seed]),
                            ("peak_flip", [s["flip_peak"][0] for s in per_seed]),
                            ("peak_flip_step", [s["flip_peak"][1] for s in per_seed]),
                            *((m, [s["final"][m] for s in per_seed]) for m in STRATEGY_METRICS)):
            row[f"{key}_mean"], row[f"{key}_sd"] = mean_sd(values)
        falls = [float(s["found"].half_step) for s in per_seed if s["found"].transient and s["found"].half_step is not None]
        row["fall_seeds"] = len(falls)
        row["fall_step_mean"], row["fall_step_sd"] = mean_sd(falls)
        row["on_top"] = ", ".join(f"{who} {sum(s['top'] == who for s in per_seed)}/{len(per_seed)}"
                                  for who in ("ICL", "CIWL", "IWL") if any(s["top"] == who for s in per_seed))
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def _cell(mean, sd, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def markdown(table: pl.DataFrame) -> str:
    """One row per condition: peak, fall and final strategy accuracies (mean ± sd over seeds)."""
    columns = ["condition", "seeds", "peak ICL acc", "peak step", "peak flip (ICL), step", "fall (½ gain lost): seeds, step", "final ICL acc",
               "final flip (ICL)", "final ciwl", "final iwl", "on top at the end"]
    rows = []
    for r in table.iter_rows(named=True):
        fall = f"{r['fall_seeds']}/{r['seeds']}" + ("" if r["fall_step_mean"] is None else f": {_cell(r['fall_step_mean'], r['fall_step_sd'], 0)}")
        rows.append([r["condition"], r["seeds"], _cell(r["peak_icl_mean"], r["peak_icl_sd"]), _cell(r["peak_step_mean"], r["peak_step_sd"], 0),
                     f"{_cell(r['peak_flip_mean'], r['peak_flip_sd'])} @ {_cell(r['peak_flip_step_mean'], r['peak_flip_step_sd'], 0)}", fall, *(_cell(r[f"{m}_mean"], r[f"{m}_sd"]) for m in STRATEGY_METRICS), r["on_top"]])
    legend = ("on top: the largest of ICL = flip accuracy, IWL = iwl accuracy, CIWL = ciwl − iwl accuracy, "
              "in each seed's last evaluation")
    return "\n".join(markdown_table(columns, rows) + ["", legend]) + "\n"
