"""Singh et al. (ICML 2024) clamp experiments, at CPU scale on the reference bursty preset.

Conditions (each a plain list of intervention specs held for the whole run, applied in
training and at evaluation, gradient `detach` as in their `jnp.where` clamps):

- `none`: no clamp.
- `prev_token`: the layer-1 previous-token subcircuit clamped to its ideal pattern: head 0 of
  `blocks.0.attn.hook_pattern`, query rows at the label positions, each label attending to its
  item (their previous-token head clamp; their head `0:2`).
- `induction`: the layer-2 induction pattern clamped to its ideal: head 0 of
  `blocks.1.attn.hook_pattern`, query row, uniform over the labels that follow items of the
  query's class (their "matching" clamp on head `1:3`).
- `learned_head`: the unclamped run's strongest layer-2 induction head (highest final
  `induction_score.L1H*` of the `none` run of the same seed) clamped to its own attention
  pattern from that run's last checkpoint, on the same inputs (their pattern preservation
  from a trained model).

Differences from their set-up: our task is Gaussian-cluster bursty classification (N = 8,
B = 4, K = 2048, L = 32), not Omniglot pairs; the model has 2 heads per layer, not 8; they also
ablated the other seven layer-2 heads for the whole run, we do not.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import polars as pl

from icl_lab.phases import find_transition
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import load_run, run_state
from interventions import Intervention

CONDITIONS = ("none", "prev_token", "induction", "learned_head")


def condition_specs(condition: str, reference_run: Path | None = None) -> tuple[Intervention, ...]:
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
        return (
            Intervention(
                hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query",
                target="induction", name="L1H0 induction (ideal)",
            ),
        )
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


def run_condition(base: RunConfig, condition: str, seed: int, out: Path, progress: bool) -> Path:
    from icl_lab.train import train

    run_dir = out / f"{condition}-seed{seed}"
    if run_state(run_dir) == "done":
        return run_dir  # resumable: finished runs are kept
    reference = out / f"none-seed{seed}" if condition == "learned_head" else None
    config = dataclasses.replace(
        base.with_overrides({"seed": seed}),
        interventions=condition_specs(condition, reference),
        preset=f"{base.preset}+{condition}",
    )
    train(config, run_dir, progress=progress, overwrite=True)
    return run_dir


def run_experiment(
    out: str | Path,
    seeds: list[int],
    conditions: list[str] = list(CONDITIONS),
    steps: int | None = None,
    progress: bool = True,
    overrides: dict | None = None,
) -> pl.DataFrame:
    """Run every condition over every seed (the unclamped run first), then tabulate."""
    out = Path(out)
    base = get_preset("bursty", "small").config.with_overrides(overrides or {})
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    order = ["none"] + [c for c in conditions if c != "none"]
    for seed in seeds:
        for condition in order:
            run_condition(base, condition, seed, out, progress)
    table = tabulate(out, [c for c in CONDITIONS if c in order], seeds, base.train.batch_size)
    table.write_parquet(out / "singh_clamps.parquet")
    (out / "singh_clamps.md").write_text(markdown(table))
    return table


def tabulate(out: Path, conditions: list[str], seeds: list[int], batch_size: int) -> pl.DataFrame:
    rows = []
    for condition in conditions:
        steps, finals, plateau = [], [], []
        for seed in seeds:
            run = load_run(out / f"{condition}-seed{seed}")
            curve = run.curve("icl_accuracy")
            t = find_transition(curve["step"].to_numpy(), curve["value"].to_numpy())
            steps.append(t.transition_step)
            finals.append(run.summary["final"]["icl_accuracy"])
            early = curve.filter((pl.col("step") > 0) & (pl.col("step") <= 300))["value"]
            plateau.append(float(early.median()) if len(early) else float("nan"))
        found = [s for s in steps if s is not None]
        rows.append(
            {
                "condition": condition,
                "seeds": len(seeds),
                "transition_steps": [s if s is not None else -1 for s in steps],
                "transition_mean": statistics.fmean(found) if found else None,
                "transition_sd": statistics.stdev(found) if len(found) > 1 else None,
                "transition_sequences_mean": statistics.fmean(found) * batch_size if found else None,
                "icl_accuracy_steps_1_300_median": statistics.fmean(plateau),
                "final_icl_accuracy_mean": statistics.fmean(finals),
            }
        )
    return pl.DataFrame(rows)


def markdown(table: pl.DataFrame) -> str:
    lines = [
        "| condition | transition step (mean ± sd) | per seed | ICL acc. steps 1–300 | final ICL acc. |",
        "|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        mean = "none found" if r["transition_mean"] is None else f"{r['transition_mean']:.0f}"
        sd = "" if r["transition_sd"] is None else f" ± {r['transition_sd']:.0f}"
        lines.append(
            f"| {r['condition']} | {mean}{sd} | {r['transition_steps']} | "
            f"{r['icl_accuracy_steps_1_300_median']:.2f} | {r['final_icl_accuracy_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"
