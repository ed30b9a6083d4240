"""Singh et al. (ICML 2024) clamp experiments: each condition a list of intervention specs
(held for the whole run, in training and at evaluation) and task settings, over seeds.

On the `pairs` task (their layout x_a ℓ_a x_b ℓ_b x_q, icl_lab/tasks/pairs.py; presets
`pairs/paper`, `pairs/cpu`), with their heads: the kept layer-2 head L1H3, the clamped layer-1
previous-token head L0H2 (`PAIRS_CONDITIONS`, mirrored in sweeps/singh_pairs.toml):

- `none`: no intervention; `keep_one`: the seven other layer-2 heads ablated (hook_z zero) for
  the whole run, the baseline of every clamp below;
- `prev_token`: + L0H2's pattern clamped to the previous token (their strength-s semantics,
  target `previous_token_or_self`, s = 1); `prev_token_labels`: the same on the label rows only
  (their option);
- `prev_token_input`: + all of layer 1 replaced by an ideal previous-token computation, as
  their `perfect_prev_token_input`: layer 2's patterns computed from inputs where each inner
  position holds its predecessor's embedding alone (`previous_token_input_pattern`, gradient to
  layer 2's QK), and layer 1's output zeroed so layer 2's values read the embeddings;
- `induction`: + L1H3's query row clamped to the ideal induction pattern (matching; s = 1,
  where target `induction_or_other`, their semantics for s < 1, is the same);
- `perfect_copying`: + the output logits taken from L1H3's scores over the two context labels
  (`perfect_copying`); `perfect_copying_prev_token`: the same with the L0H2 clamp;
- `labels_10`, `labels_15`, `classes_200`: the data conditions, no clamp, on `keep_one` as in
  their scaling runs (`ih_paper_runs.sh` ablates the other layer-2 heads there too), baseline
  `keep_one`; `labels_15_all_heads`: 15 labels with all eight layer-2 heads, baseline `none`.

Their lengths are in sequences: their `main.py` steps its iteration counter by the batch size,
and the figures plot it as "# sequences seen". The main run is 1e6 sequences (31,250 steps at
batch 32: `pairs/paper`), the clamp runs 6e5 (18,750 steps), the label and class scaling runs
2e6 (62,500 steps); their transitions (≈ 2.7e5 no clamp, 3.1e5 with one layer-2 head,
1.4e6 with 15 labels) are sequences too, as this table's `transition_sequences` are.

On the bursty task (`bursty/small`, today's CPU experiment, `CONDITIONS`): `none`,
`prev_token` (L0H0 ideal previous-token on label rows), `induction` (L1H0 ideal induction),
`learned_head` (the `none` run's strongest layer-2 head clamped to its own final pattern).

The table reports the transition (phases.find_transition; pairs: the training loss's drop
from ln 2, read on min(loss, ln 2), so its midpoint is where the loss first falls halfway from
ln 2 to its final level; bursty: ICL accuracy's rise) in steps and in
training sequences (steps × batch), mean ± sd over seeds, the ratio to the condition's baseline,
and whether the plateau sits where it should (pairs: the training loss within 0.1 of ln 2 for
at least 3 evaluations before the transition; bursty: ICL accuracy within 0.1 of B/N).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from icl_lab import figures
from icl_lab.config import ConfigError, did_you_mean
from icl_lab.experiments.grid import markdown_table, mean_sd, run_grid
from icl_lab.intervention_check import check_interventions
from icl_lab.phases import Reading
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import load_run
from icl_lab.tasks.pairs import PairsTask
from interventions import Intervention


@dataclass(frozen=True)
class Condition:
    description: str
    specs: tuple[Intervention, ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()  # config overrides (task settings)
    baseline: str | None = "none"  # the condition its transition is compared with


KEEP_ONE = Intervention(
    hook="blocks.1.attn.hook_z", heads=(0, 1, 2, 4, 5, 6, 7), target="zero",
    name="layer-2 heads other than L1H3 ablated",
)
PREV_TOKEN = Intervention(
    hook="blocks.0.attn.hook_pattern", heads=(2,), target="previous_token_or_self", strength=1.0,
    name="L0H2 previous-token clamp",
)
# their perfect_prev_token_input: layer 2's patterns computed as if layer 1 had put each item
# exactly into its label's position, layer 2's values read the embeddings alone
PREV_TOKEN_INPUT = (
    Intervention(hook="blocks.0.hook_attn_out", target="zero", name="layer 1's output removed"),
    Intervention(
        hook="blocks.1.attn.hook_pattern", target="previous_token_input_pattern", gradient="value",
        name="layer-2 patterns from the ideal previous-token input",
    ),
)
INDUCTION = Intervention(
    hook="blocks.1.attn.hook_pattern", heads=(3,), query_positions="query", target="induction", name="L1H3 induction (ideal)",
)
PERFECT_COPYING = Intervention(
    hook="hook_unembed", positions="query", target="perfect_copying", key="L1H3", gradient="value",
    name="perfect copying from L1H3",
)

PAIRS_CONDITIONS = {
    "none": Condition("no intervention", baseline=None),
    "keep_one": Condition("only L1H3 kept in layer 2", (KEEP_ONE,)),
    "prev_token": Condition("keep_one + L0H2 previous-token clamp", (KEEP_ONE, PREV_TOKEN), baseline="keep_one"),
    "prev_token_labels": Condition(
        "keep_one + L0H2 previous-token clamp on the label rows only",
        (KEEP_ONE, dataclasses.replace(PREV_TOKEN, query_positions="labels", name="L0H2 previous-token clamp (label rows)")),
        baseline="keep_one",
    ),
    "prev_token_input": Condition("keep_one + layer 1 = ideal previous-token input", (KEEP_ONE, *PREV_TOKEN_INPUT), baseline="keep_one"),
    "induction": Condition("keep_one + L1H3 ideal induction pattern", (KEEP_ONE, INDUCTION), baseline="keep_one"),
    "perfect_copying": Condition("keep_one + perfect copying", (KEEP_ONE, PERFECT_COPYING), baseline="keep_one"),
    "perfect_copying_prev_token": Condition(
        "keep_one + perfect copying + L0H2 clamp", (KEEP_ONE, PREV_TOKEN, PERFECT_COPYING), baseline="keep_one"
    ),
    # their data conditions (ih_paper_runs.sh, Figure 6) keep one layer-2 head too
    "labels_10": Condition("keep_one + 10 labels", (KEEP_ONE,), settings=(("task.num_labels", 10),), baseline="keep_one"),
    "labels_15": Condition("keep_one + 15 labels", (KEEP_ONE,), settings=(("task.num_labels", 15),), baseline="keep_one"),
    "classes_200": Condition("keep_one + 200 training classes", (KEEP_ONE,), settings=(("task.num_classes", 200),), baseline="keep_one"),
    # the same with all eight layer-2 heads (the factor study's row: how many heads can copy)
    "labels_15_all_heads": Condition("15 labels, all layer-2 heads", settings=(("task.num_labels", 15),)),
}

CONDITIONS = ("none", "prev_token", "induction", "learned_head")  # the bursty experiment's


def condition_specs(condition: str, reference_run: Path | None = None) -> tuple[Intervention, ...]:
    """The bursty experiment's specs for `condition`."""
    if condition == "none":
        return ()
    if condition == "prev_token":
        return (
            Intervention(
                hook="blocks.0.attn.hook_pattern", heads=(0,), query_positions="labels",
                target="previous_token", name="L0H0 previous-token (ideal)",
            ),
        )
    if condition == "induction":
        return (dataclasses.replace(INDUCTION, heads=(0,), name="L1H0 induction (ideal)"),)
    if condition == "learned_head":
        if reference_run is None:
            raise ValueError("learned_head needs the unclamped reference run")
        head = strongest_induction_head(reference_run)
        return (
            Intervention(
                hook="blocks.1.attn.hook_pattern", heads=(head,), target="checkpoint",
                checkpoint_run=str(reference_run), checkpoint_step=-1,
                name=f"L1H{head} from the unclamped run's last checkpoint",
            ),
        )
    raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")


def strongest_induction_head(run_dir: Path) -> int:
    final = load_run(run_dir).summary["final"]
    scores = {k: v for k, v in final.items() if k.startswith("induction_score.L1H")}
    best = max(scores, key=scores.get)
    return int(best.rsplit("H", 1)[1])


@dataclass(frozen=True)
class Plateau:
    """Where the curve of `metric` should sit before the transition (of `transition`, rising
    or falling per `direction`), within `tolerance`."""

    metric: str
    level: float
    tolerance: float = 0.1
    min_evals: int = 3
    transition: str = "icl_accuracy"
    reading: Reading = Reading()  # how the transition metric's curve is read


def conditions_for(task: str) -> dict[str, Condition]:
    if task == "pairs":
        return PAIRS_CONDITIONS
    if task == "bursty":
        specs = {c: () if c == "learned_head" else condition_specs(c) for c in CONDITIONS}  # learned_head: at run time
        return {c: Condition(c, specs[c], baseline=None if c == "none" else "none") for c in CONDITIONS}
    raise ConfigError(f"the singh-clamps experiment runs on task pairs or bursty, not {task!r}")


def plateau_for(config: RunConfig) -> Plateau:
    if config.task == "pairs":
        # the drop of the training loss from ln 2 (held-out ICL accuracy rises more gradually),
        # read on min(loss, ln 2): the early fall from ln L to ln 2 is not part of it (with 15
        # labels it is long and would put the midpoint inside it), and a run without a plateau
        # starts its drop at ln 2 at once; its best value 0 as the ceiling. The task's own
        # reading, which its runs' summary.json uses too
        return Plateau("train_loss", math.log(2), transition="train_loss", reading=PairsTask.transition_readings["train_loss"])
    c = config.task_config
    return Plateau("icl_accuracy", c.burstiness / c.context_pairs)  # a random context label


def plan(
    preset: str, conditions: list[str] | None, steps: int | None, overrides: dict | None
) -> tuple[RunConfig, dict[str, RunConfig], dict[str, Condition]]:
    """Every condition's config, checked before any run: the preset (`TASK/NAME`, or a `pairs`
    preset's NAME), the overrides, the condition names. Baselines are added."""
    task, _, name = preset.rpartition("/")
    base = get_preset(task or "pairs", name).config.with_overrides(overrides or {})
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    table = conditions_for(base.task)
    wanted = list(table) if conditions is None else list(conditions)
    for c in wanted:
        if c not in table:
            raise ConfigError(f"unknown condition {c!r} for task {base.task!r}.{did_you_mean(c, list(table))} Valid conditions: {', '.join(table)}")
    for c in list(wanted):  # each condition's baseline runs too (and first)
        if (b := table[c].baseline) is not None and b not in wanted:
            wanted.append(b)
    order = [c for c in table if c in wanted]
    configs = {}
    for c in order:
        config = base.with_overrides(dict(table[c].settings))
        configs[c] = dataclasses.replace(config, interventions=table[c].specs, preset=f"{base.preset}+{c}")
    return base, configs, {c: table[c] for c in order}


FIGURE_STEM = "singh_clamps"  # OUT/singh_clamps.png and .svg, beside the table


def run_dir_of(out: Path, condition: str, seed: int) -> Path:
    return out / f"{condition}-seed{seed}"


def run_experiment(
    out: str | Path,
    seeds: list[int],
    conditions: list[str] | None = None,
    steps: int | None = None,
    progress: bool = True,
    overrides: dict | None = None,
    preset: str = "pairs/cpu",
    group_size: int | None = None,
) -> pl.DataFrame:
    """Run every condition over every seed (as batched groups where the runs share shapes;
    `group_size=1`: one at a time), then tabulate. Finished runs are kept, stopped ones resumed."""
    out = Path(out)
    base, configs, table = plan(preset, conditions, steps, overrides)
    check_interventions((f"condition {name!r}", config) for name, config in configs.items())
    later = [c for c in configs if c == "learned_head"]  # needs the finished `none` runs
    for batch in ([c for c in configs if c not in later], later):
        runs = []
        for condition in batch:
            for seed in seeds:
                config = configs[condition]
                if condition == "learned_head":
                    config = dataclasses.replace(config, interventions=condition_specs(condition, run_dir_of(out, "none", seed)))
                runs.append((run_dir_of(out, condition, seed), config.with_overrides({"seed": seed})))
        run_grid(runs, group_size, progress)
    result = tabulate(out, table, seeds, configs, plateau_for(base))
    result.write_parquet(out / "singh_clamps.parquet")
    (out / "singh_clamps.md").write_text(markdown(result))
    draw(out, result, seeds, base)
    return result


def draw(out: Path, result: pl.DataFrame, seeds: list[int], base: RunConfig) -> tuple[Path, Path]:
    """The figure beside the table: the curve the transition is read on (pairs: training loss)
    against sequences, one curve per condition, its plateau (ln 2) and each transition marked."""
    plateau = plateau_for(base)
    label = "ln 2" if base.task == "pairs" else f"B/N = {plateau.level:.3g}"
    groups = {c: [run_dir_of(out, c, s) for s in seeds] for c in result["condition"].to_list()}
    transitions = dict(zip(result["condition"].to_list(), result["transition_sequences_mean"].to_list()))
    chart = figures.singh_figure(groups, plateau.transition, batch_size=base.train.batch_size, level=plateau.level,
                                 level_label=label, transitions=transitions)
    return figures.save_figure(chart.properties(title=f"Singh et al. clamps: {base.task}/{base.preset}"), out / FIGURE_STEM)


def transition_of(steps: np.ndarray, values: np.ndarray, plateau: Plateau):
    """phases.find_transition of the curve of `plateau.transition`, read as the plateau says."""
    return plateau.reading.find(steps, values)


def plateau_present(run, plateau: Plateau, before_step: int | None) -> bool:
    """At least `min_evals` evaluations (after step 0, before the transition) within tolerance."""
    curve = run.curve(plateau.metric)
    early = curve.filter((pl.col("step") > 0) & (pl.col("step") < (before_step if before_step is not None else 2**62)))
    near = (early["value"] - plateau.level).abs() <= plateau.tolerance
    return int(near.sum()) >= plateau.min_evals


def tabulate(out: Path, table: dict[str, Condition], seeds: list[int], configs: dict[str, RunConfig], plateau: Plateau) -> pl.DataFrame:
    rows, means = [], {}
    for condition, spec in table.items():
        batch = configs[condition].train.batch_size
        steps, plateaus, finals = [], [], []
        for seed in seeds:
            run = load_run(run_dir_of(out, condition, seed))
            curve = run.curve(plateau.transition)
            t = transition_of(curve["step"].to_numpy(), curve["value"].to_numpy(), plateau)
            steps.append(t.transition_step)
            plateaus.append(plateau_present(run, plateau, t.transition_step))
            finals.append(run.summary["final"]["icl_accuracy"])
        found = [s * batch for s in steps if s is not None]
        mean, sd = mean_sd(found)
        means[condition] = mean
        base = means.get(spec.baseline) if spec.baseline else None
        rows.append({
            "condition": condition,
            "baseline": spec.baseline or "",
            "seeds": len(seeds),
            "transition_steps": [s if s is not None else -1 for s in steps],
            "transition_steps_mean": None if mean is None else mean / batch,
            "transition_sequences_mean": mean,
            "transition_sequences_sd": sd,
            "ratio_to_baseline": mean / base if mean is not None and base else None,
            "plateau_seeds": sum(plateaus),
            "final_icl_accuracy_mean": statistics.fmean(finals),
        })
    return pl.DataFrame(rows, schema_overrides={k: pl.Float64 for k in ("transition_steps_mean", "transition_sequences_mean", "transition_sequences_sd", "ratio_to_baseline")})


def markdown(table: pl.DataFrame) -> str:
    rows = []
    for r in table.iter_rows(named=True):
        mean = "none found" if r["transition_sequences_mean"] is None else f"{r['transition_sequences_mean']:.3g}"
        sd = "" if r["transition_sequences_sd"] is None else f" ± {r['transition_sequences_sd']:.2g}"
        step_mean = "" if r["transition_steps_mean"] is None else f"{r['transition_steps_mean']:.0f}"
        ratio = "" if r["ratio_to_baseline"] is None else f"{r['ratio_to_baseline']:.2f} ({r['baseline']})"
        rows.append([r["condition"], f"{mean}{sd}", step_mean, r["transition_steps"], ratio,
                     f"{r['plateau_seeds']}/{r['seeds']}", f"{r['final_icl_accuracy_mean']:.3f}"])
    columns = ["condition", "transition, sequences (mean ± sd)", "steps (mean)", "steps per seed", "× baseline",
               "plateau (seeds)", "final ICL acc."]
    return "\n".join(markdown_table(columns, rows)) + "\n"
