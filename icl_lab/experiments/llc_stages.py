"""Hoogland et al.'s LLC stages beside the ICL transition, with and without Singh et al.'s clamps
(`icl-lab experiment llc-stages`).

Each condition trains over seeds (batched groups, as the other experiments), then the `llc`
measure runs post hoc on every checkpoint from `llc_from` on: the whole model with the run's
clamps active as in training (`llc`), the same with them off for clamped runs
(`llc_unclamped`), and the weight-refined LLC of every head (`llc.L{l}H{h}`) at every other
of those checkpoints from step 100 on and at the checkpoints that bracket the ICL transition
(its foot, its midpoint, its top). Stage boundaries are read from the `llc` curve
(icl_lab/stages.py) and written to each run's summary.json.

Conditions (singh.py's specs): bursty (`bursty/small`, the reference preset) `none`,
`induction` (L1H0 held at the ideal induction pattern) and `prev_token` (L0H0 held at the ideal
previous-token pattern on the label rows); pairs (`pairs/cpu`) `none`, `keep_one` (the clamps'
baseline in Singh et al.), `induction` and `prev_token` (both on keep_one).

Per run the table gives the ICL transition (step and its 10–90% window), the induction score's
rise (strongest layer-2 head), the LLC stage boundaries, whether one falls inside the ICL
window (and the nearest one's distance in decades), and the refined LLC of each layer-2 head
before, at and after the transition. The figure (llc_stages.png/.svg): LLC and ICL accuracy
against log step, one colour per condition, one line per seed, boundaries marked.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from icl_lab.config import ConfigError, did_you_mean
from icl_lab.experiments.grid import markdown_table, run_grid
from icl_lab.phases import find_transition
from icl_lab.presets import get_preset
from icl_lab.run_config import RunConfig
from icl_lab.store import checkpoint_steps, load_metrics, load_run

TASK_CONDITIONS = {"bursty": ("none", "induction", "prev_token"), "pairs": ("none", "keep_one", "induction", "prev_token")}
CHUNK = 4  # checkpoints measured per write
PART_STEPS_FROM = 100  # refined LLC from here on (the earliest checkpoints have no heads to tell apart)


def condition_specs(task: str, condition: str) -> tuple:
    from icl_lab.experiments import singh

    if task == "bursty":
        return singh.condition_specs(condition)
    return singh.PAIRS_CONDITIONS[condition].specs


def plan(preset: str, conditions: list[str] | None, steps: int | None, overrides: dict | None) -> dict[str, RunConfig]:
    """Every condition's config, checked before anything runs."""
    task, _, name = preset.rpartition("/")
    if task not in TASK_CONDITIONS:
        raise ConfigError(f"llc-stages runs on a bursty or pairs preset (TASK/NAME), not {preset!r}")
    base = get_preset(task, name).config
    heads = [f"L{layer}H{head}" for layer in range(base.model.n_layers) for head in range(base.model.n_heads)]
    if task == "pairs":  # sixteen heads: the clamped pair and one other per layer
        heads = ["L0H0", "L0H2", "L1H0", "L1H3"]
    # stages are read against log step: at least 10 checkpoints a decade (pairs/cpu has none)
    dense = {"train.checkpoints_per_decade": max(10, base.train.checkpoints_per_decade)}
    base = base.with_overrides({"llc.parts": heads, **dense, **(overrides or {})})
    if steps is not None:
        base = base.with_overrides({"train.steps": steps})
    valid = TASK_CONDITIONS[task]
    wanted = list(valid) if conditions is None else list(conditions)
    for c in wanted:
        if c not in valid:
            raise ConfigError(f"unknown condition {c!r} for llc-stages on {task}.{did_you_mean(c, list(valid))} Valid conditions: {', '.join(valid)}")
    return {c: dataclasses.replace(base, interventions=condition_specs(task, c), preset=f"{base.preset}+{c}") for c in valid if c in wanted}


def run_dir_of(out: Path, condition: str, seed: int) -> Path:
    return out / f"{condition}-seed{seed}"


def measurement_jobs(run_dir: Path, config: RunConfig, llc_from: int) -> list[tuple[str, list[int], dict]]:
    """(metric that shows it is done, checkpoint steps, llc overrides) still to measure."""
    steps = [s for s in checkpoint_steps(run_dir) if s >= llc_from]
    part_steps = sorted(set([s for s in steps if s >= PART_STEPS_FROM][::2]) | transition_checkpoints(run_dir, steps))
    jobs = [("llc", steps, {"parts": []})]
    if config.interventions:
        jobs.append(("llc_unclamped", steps, {"parts": [], "clamps": "off"}))
    if config.llc.parts:
        jobs.append((f"llc.{config.llc.parts[0]}", part_steps, {"whole_model": False}))
    metrics = load_metrics(run_dir)
    todo = []
    for metric, wanted, settings in jobs:
        have = set(metrics.filter(pl.col("metric").is_in([metric, f"{metric}.diverged"]))["step"].to_list())
        missing = [s for s in wanted if s not in have]
        if missing:
            todo.append((metric, missing, settings))
    return todo


def icl_transition(summary: dict) -> dict:
    """The run's ICL transition entry (bursty: ICL accuracy's rise; pairs: the loss's drop)."""
    transitions = summary.get("transitions", {})
    return transitions.get("icl_accuracy") or transitions.get("train_loss") or {}


def transition_checkpoints(run_dir: Path, steps: list[int]) -> set[int]:
    """The checkpoints at or just before the ICL transition's foot, nearest its midpoint, and at
    or just after its top: where the refined LLC is read before, at and after it."""
    from icl_lab.store import read_summary

    found = icl_transition(read_summary(run_dir))
    start, t, end = found.get("start_step"), found.get("transition_step"), found.get("end_step")
    if t is None or not steps:
        return set()
    before = max([s for s in steps if s <= start] or steps[:1])
    after = min([s for s in steps if s >= end] or steps[-1:])
    return {before, nearest_checkpoint(steps, t), after}


def measure(job: tuple[str, int, int, str]) -> str:
    """One run's LLC measurements (a worker process, one torch thread)."""
    run_dir, llc_from, threads, device = job
    import torch

    torch.set_num_threads(threads)
    from icl_lab.checkpoints import run_config_of
    from icl_lab.posthoc import measure_run

    config = run_config_of(run_dir)
    for _, steps, settings in measurement_jobs(Path(run_dir), config, llc_from):
        for start in range(0, len(steps), CHUNK):  # stored as it goes: an interrupted experiment keeps them
            measure_run(run_dir, ["llc"], steps[start : start + CHUNK], device=device, progress=False, llc=settings)
    return run_dir


def run_experiment(
    out: str | Path,
    seeds: list[int],
    conditions: list[str] | None = None,
    steps: int | None = None,
    progress: bool = True,
    overrides: dict | None = None,
    preset: str = "bursty/small",
    group_size: int | None = None,
    workers: int | None = None,
    llc_from: int = 10,
) -> pl.DataFrame:
    """Train every condition over seeds, measure the LLC on their checkpoints (in `workers`
    processes, one thread each; finished measurements are kept), tabulate and draw."""
    from icl_lab.llc import require_devinterp
    from icl_lab.intervention_check import check_interventions

    require_devinterp()
    out = Path(out)
    configs = plan(preset, conditions, steps, overrides)
    check_interventions((f"condition {name!r}", config) for name, config in configs.items())
    runs = [(run_dir_of(out, c, seed), config.with_overrides({"seed": seed})) for c, config in configs.items() for seed in seeds]
    run_grid(runs, group_size, progress)
    device = next(iter(configs.values())).device
    jobs = [(str(run_dir), llc_from, 1, device) for run_dir, config in runs if measurement_jobs(run_dir, config, llc_from)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    if workers == 1:
        for job in jobs:
            measure(job)
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in pool.map(measure, jobs):
                if progress:
                    print(f"llc measured: {done}", flush=True)
    table = tabulate(out, configs, seeds)
    table.write_parquet(out / "llc_stages.parquet")
    (out / "llc_stages.md").write_text(markdown(table))
    draw(out, configs, seeds)
    return table


def nearest_checkpoint(steps: list[int], step: int | None) -> int | None:
    return None if step is None or not steps else min(steps, key=lambda s: abs(math.log10(max(s, 1)) - math.log10(max(step, 1))))


def tabulate(out: Path, configs: dict[str, RunConfig], seeds: list[int]) -> pl.DataFrame:
    rows = []
    for condition, config in configs.items():
        for seed in seeds:
            rows.append(run_row(run_dir_of(out, condition, seed), condition, seed, config))
    return pl.DataFrame(rows)


def run_row(run_dir: Path, condition: str, seed: int, config: RunConfig) -> dict:
    from icl_lab.stages import stages_of_run

    run = load_run(run_dir)
    icl = icl_transition(run.summary)
    final = run.summary["final"]
    layer = config.model.n_layers - 1
    scores = {k: v for k, v in final.items() if k.startswith(f"induction_score.L{layer}H")}
    head = max(scores, key=scores.get).rsplit(".", 1)[1] if scores else None
    rise = None
    if head:
        curve = run.curve(f"induction_score.{head}")
        rise = find_transition(curve["step"].to_numpy(), curve["value"].to_numpy(), min_rise=0.2, ceiling=None)
    stages = stages_of_run(run.metrics)
    boundaries = stages.get("llc", {}).get("boundaries", [])
    start, end, t = icl.get("start_step"), icl.get("end_step"), icl.get("transition_step")
    inside = [b["step"] for b in boundaries if start is not None and start <= b["step"] <= end]
    overlaps = [b["step"] for b in boundaries if start is not None and b["start_step"] <= end and b["end_step"] >= start]
    nearest = None  # log10(boundary step / transition step) of the nearest boundary
    if t is not None and boundaries:
        nearest = min((math.log10(b["step"]) - math.log10(t) for b in boundaries), key=abs)
    row = {
        "condition": condition, "seed": seed,
        "icl_transition": t, "icl_window": [start, end] if start is not None else None,
        "induction_head": head, "induction_rise": None if rise is None else rise.transition_step,
        "llc_boundaries": [f"{b['step']} {b['kind']} ({b['start_step']}–{b['end_step']})" for b in boundaries],
        "boundary_in_icl_window": bool(inside), "boundary_window_meets_icl_window": bool(overlaps),
        "nearest_boundary_decades": nearest,
        "llc_final": _value(run, "llc", None), "llc_peak": _peak(run, "llc"),
        "llc_at_icl_foot": _at_or_before(run, "llc", start), "llc_at_icl_top": _at_or_after(run, "llc", end),
        "llc_unclamped_final": _value(run, "llc_unclamped", None),
    }
    part_steps = sorted(set(run.curve(f"llc.{config.llc.parts[0]}")["step"].to_list())) if config.llc.parts else []
    earlier = [s for s in part_steps if start is not None and s <= start]
    moments = {"before": earlier[-1] if earlier else None, "at": nearest_checkpoint(part_steps, t), "end": part_steps[-1] if part_steps else None}
    for part in config.llc.parts:
        for moment, step in moments.items():
            row[f"{part}@{moment}"] = None if step is None else _value(run, f"llc.{part}", step)
    return row


def _value(run, metric: str, step: int | None) -> float | None:
    """The metric at `step`, or its last value when `step` is None."""
    curve = run.curve(metric)
    if curve.height == 0:
        return None
    if step is None:
        return float(curve["value"][-1])
    hit = curve.filter(pl.col("step") == step)
    return float(hit["value"][0]) if hit.height else None


def _at_or_before(run, metric: str, step: int | None) -> float | None:
    curve = run.curve(metric).filter(pl.col("step") <= (step if step is not None else -1))
    return float(curve["value"][-1]) if curve.height else None


def _at_or_after(run, metric: str, step: int | None) -> float | None:
    curve = run.curve(metric).filter(pl.col("step") >= (step if step is not None else 2**62))
    return float(curve["value"][0]) if curve.height else None


def _peak(run, metric: str) -> int | None:
    curve = run.curve(metric)
    return None if curve.height == 0 else int(curve["step"][int(np.argmax(curve["value"].to_numpy()))])


def markdown(table: pl.DataFrame) -> str:
    heads = sorted({c.split("@")[0] for c in table.columns if "@" in c})
    rows = []
    for r in table.iter_rows(named=True):
        window = "none" if r["icl_transition"] is None else f"{r['icl_transition']} ({r['icl_window'][0]}–{r['icl_window'][1]})"
        near = "" if r["nearest_boundary_decades"] is None else f" ({r['nearest_boundary_decades']:+.2f})"
        off = "" if r["llc_unclamped_final"] is None else f" ({r['llc_unclamped_final']:.1f})"
        final = "" if r["llc_final"] is None else f"{r['llc_final']:.1f}{off}"
        rows.append([r["condition"], r["seed"], window, f"{r['induction_rise']} ({r['induction_head']})",
                     ", ".join(r["llc_boundaries"]) or "none", f"{'yes' if r['boundary_in_icl_window'] else 'no'}{near}",
                     "yes" if r["boundary_window_meets_icl_window"] else "no", r["llc_peak"],
                     f"{_number(r['llc_at_icl_foot'])} → {_number(r['llc_at_icl_top'])}", final])
    lines = markdown_table(["condition", "seed", "ICL transition (window)", "induction rise (head)",
                            "LLC stage boundaries: step kind (flat window)", "boundary in ICL window (nearest, decades)",
                            "boundary's window meets ICL window", "LLC peak step", "LLC at the ICL window's foot → top",
                            "LLC final (clamps off)"], rows)
    if heads:
        per_head = [[r["condition"], r["seed"], *(" / ".join("–" if v is None else f"{v:.1f}" for v in
                                                            (r.get(f"{h}@{m}") for m in ("before", "at", "end"))) for h in heads)]
                    for r in table.iter_rows(named=True)]
        lines += ["", "Refined LLC per head: before the ICL transition / at it / at the end", "",
                  *markdown_table(["condition", "seed", *heads], per_head)]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def draw(out: Path, configs: dict[str, RunConfig], seeds: list[int]) -> Path:
    """llc_stages.png and .svg: the LLC with the run's clamps on while sampling (top; stage
    boundaries dotted), with them off for the clamped runs (middle), and ICL accuracy (bottom,
    the training loss on pairs), against log step, one colour per condition, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from icl_lab.stages import stages_of_run

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 9.5), sharex=True, height_ratios=(3, 2, 2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, condition in enumerate(configs):
        colour = colours[i % len(colours)]
        for j, seed in enumerate(seeds):
            run = load_run(run_dir_of(out, condition, seed))
            label = condition if j == 0 else None
            llc = run.curve("llc").filter(pl.col("step") >= 1)
            top.plot(llc["step"], llc["value"], color=colour, lw=1.2, alpha=0.85, label=label, marker=".", ms=3)
            for b in stages_of_run(run.metrics).get("llc", {}).get("boundaries", []):
                top.axvline(b["step"], color=colour, lw=0.7, alpha=0.5, ls=":")
            unclamped = run.curve("llc_unclamped").filter(pl.col("step") >= 1)
            if unclamped.height:
                middle.plot(unclamped["step"], unclamped["value"], color=colour, lw=1.0, alpha=0.8, label=label)
            metric = "icl_accuracy" if run.curve("icl_accuracy").height else "train_loss"
            acc = run.curve(metric).filter(pl.col("step") >= 1)
            bottom.plot(acc["step"], acc["value"], color=colour, lw=1.2, alpha=0.85, label=label)
            bottom.set_ylabel(metric.replace("_", " "))
    top.set_xscale("log")
    top.set_ylabel("λ̂, clamps on while sampling")
    top.set_title("LLC against training step (dotted: stage boundaries), one line per seed")
    middle.set_ylabel("λ̂, clamps off")
    middle.axhline(0, color="grey", lw=0.6)
    middle.set_title("clamped runs sampled without their clamps (negative: not a minimum without them)", fontsize=9)
    bottom.set_xlabel("training step (optimizer updates, log scale)")
    for axis in (top, middle, bottom):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    fig.tight_layout()
    for suffix in ("png", "svg"):
        fig.savefig(out / f"llc_stages.{suffix}", dpi=120)
    plt.close(fig)
    return out / "llc_stages.png"
