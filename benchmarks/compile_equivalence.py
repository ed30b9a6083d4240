"""Compiled equals eager, on whole runs: each case trains twice from the same seed, once with the
eager lean forward (train.forward=lean, which equals the bridge bit for bit) and once with
train.compile, and the table compares them at every evaluation.

Cases (the issue's): the bursty reference run (bursty/small), the same under the matching
induction clamp (L1H0's query row on the ideal induction pattern), Singh's pairs/cpu with
perfect copying (his keep-one + perfect-copying condition), and a modular run (modular/cpu).

    python benchmarks/compile_equivalence.py [--cases bursty,induction,pairs,modular] [--steps N]
        [--mode default] [--threads 1] [--control-threads 2] [--out DIR]

Prints per case: the largest absolute and relative difference over every metric at every
evaluation and the first evaluation out of tolerance (rtol 1e-4 / atol 1e-5), each run's
transition step (the task's headline metric, icl-lab's reading), the clamp call counts (equal
or not), the steps at which a graph was compiled, and the verdict.

The tolerance is float reassociation, and the control measures it: the same eager run at
another thread count (2 rather than 1: the matmuls sum in another order, nothing else changes).
Where the control also leaves rtol/atol, the trajectory itself amplifies reassociation (Adam on
an unclamped run after its transition), and the compiled run is held to the control instead: it
may leave the tolerance no earlier than half the control's step and differ by at most 3x the
control's largest difference, with the same transition step and clamp calls.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

from icl_lab import get_preset, train
from icl_lab.experiments.singh import KEEP_ONE, PERFECT_COPYING
from icl_lab.run_config import RunConfig
from interventions.spec import Intervention

INDUCTION = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction", name="L1H0 induction")
CASES = {
    "bursty": ("bursty", "small", []),
    "induction": ("bursty", "small", [INDUCTION]),
    "pairs": ("pairs", "cpu", [KEEP_ONE, PERFECT_COPYING]),
    "modular": ("modular", "cpu", []),
}


def config_for(case: str, steps: int | None) -> RunConfig:
    task, preset, specs = CASES[case]
    config = get_preset(task, preset).config.with_overrides({"device": "cpu", "train.forward": "lean", "seed": 0})
    if steps is not None:
        config = config.with_overrides({"train.steps": steps})
    return RunConfig.from_dict({**config.to_dict(), "interventions": [s.to_dict() for s in specs]})


def transition_step(summary: dict) -> object:
    readings = summary.get("transitions", {})
    return {k: v.get("transition_step") for k, v in readings.items()} or None


RTOL, ATOL = 1e-4, 1e-5  # float reassociation on a trajectory that does not amplify it


def differences(a_frame, b_frame) -> dict[tuple[int, str], float]:
    """|a - b| for every (step, metric) of two runs' metrics (inf where one is finite and the
    other not, or where both are non-finite and unequal)."""
    a_frame, b_frame = a_frame.sort(["step", "metric"]), b_frame.sort(["step", "metric"])
    if not a_frame.select("step", "metric").equals(b_frame.select("step", "metric")):
        raise SystemExit("the two runs evaluated different steps or metrics")
    out = {}
    for (step, metric, a), b in zip(a_frame.iter_rows(), b_frame["value"].to_list()):
        if math.isfinite(a) and math.isfinite(b):
            out[step, metric] = abs(a - b)
        else:
            out[step, metric] = 0.0 if (a == b or (math.isnan(a) and math.isnan(b))) else math.inf
    return out


def summarise(diffs: dict, reference) -> dict:
    """Largest abs and rel difference (and where), and the first evaluation step at which any
    metric leaves rtol RTOL / atol ATOL (None: never)."""
    values = {(s, m): v for s, m, v in reference.iter_rows()}
    worst_abs, worst_rel, where, first_out = 0.0, 0.0, None, None
    for (step, metric), diff in sorted(diffs.items()):
        ref = values[step, metric]
        if diff > worst_abs:
            worst_abs, where = diff, f"{metric}@{step}"
        worst_rel = max(worst_rel, diff / max(abs(ref), 1e-12) if math.isfinite(ref) else diff)
        if first_out is None and diff > ATOL + RTOL * (abs(ref) if math.isfinite(ref) else 0.0):
            first_out = step
    return {"max_abs": worst_abs, "max_rel": worst_rel, "where": where, "first_out": first_out}


def train_with_threads(config, out: Path, threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train(config, out, progress=False)
    finally:
        torch.set_num_threads(before)


def compare(case: str, steps: int | None, mode: str, out: Path, threads: int, control_threads: int | None) -> dict:
    """Eager and compiled at `threads`; with `control_threads`, a third run, eager at that
    thread count: float reassociation alone (a matmul split across another number of threads
    sums in another order), the yardstick for how far this trajectory amplifies it."""
    config = config_for(case, steps)
    eager = train_with_threads(config, out / f"{case}-eager", threads)
    compiled = train_with_threads(config.with_overrides({"train.compile": mode}), out / f"{case}-compiled", threads)
    row = {
        "case": case, "evaluations": eager.metrics["step"].n_unique(),
        "compiled": summarise(differences(eager.metrics, compiled.metrics), eager.metrics.select("step", "metric", "value")),
        "transition_eager": transition_step(eager.summary), "transition_compiled": transition_step(compiled.summary),
        "calls_equal": eager.summary.get("intervention_calls") == compiled.summary.get("intervention_calls"),
        "compiled_at": compiled.summary.get("compiled_at_steps"),
        "wall_eager": eager.summary["wall_seconds"], "wall_compiled": compiled.summary["wall_seconds"],
    }
    if control_threads:
        control = train_with_threads(config, out / f"{case}-eager-{control_threads}threads", control_threads)
        row["control"] = summarise(differences(eager.metrics, control.metrics), eager.metrics.select("step", "metric", "value"))
        row["transition_control"] = transition_step(control.summary)
    return row


def verdict(row: dict) -> str:
    """Within tolerance: every metric within rtol/atol at every evaluation, or, where the
    eager control leaves that tolerance too (the trajectory amplifies reassociation), the
    compiled run leaves it no earlier than half the control's step and its largest difference
    is at most 3x the control's; and in every case the same transition step and clamp calls."""
    same = row["transition_eager"] == row["transition_compiled"] and row["calls_equal"]
    c = row["compiled"]
    if c["first_out"] is None:
        return "yes" if same else "no"
    control = row.get("control")
    if control is None or control["first_out"] is None:
        return "no"
    amplified = c["first_out"] >= control["first_out"] / 2 and c["max_abs"] <= 3 * control["max_abs"]
    return "yes (reassociation amplified, as in the control)" if same and amplified else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--mode", default="default", help="torch.compile mode (train.compile)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--control-threads", type=int, default=2,
                        help="the reassociation control: eager again at this thread count (0: none)")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    print(f"tolerance: rtol {RTOL} / atol {ATOL} at every evaluation; runs at {args.threads} thread(s), control at {args.control_threads}")
    print("| case | evaluations | compiled vs eager: max abs diff (where) | max rel | first step out of tolerance | "
          "control (eager, other thread count): max abs (where) | first step out | transition eager / compiled / control | "
          "clamp calls equal | compiled at steps | within tolerance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for case in args.cases.split(","):
            r = compare(case, args.steps, args.mode, out, args.threads, args.control_threads or None)
            c, k = r["compiled"], r.get("control", {})
            control = f"{k['max_abs']:.2e} ({k['where']}) | {k['first_out']}" if k else "- | -"
            print(f"| {r['case']} | {r['evaluations']} | {c['max_abs']:.2e} ({c['where']}) | {c['max_rel']:.2e} | {c['first_out']} | {control} | "
                  f"{r['transition_eager']} / {r['transition_compiled']} / {r.get('transition_control', '-')} | {r['calls_equal']} | "
                  f"{r['compiled_at']} | {verdict(r)} |", flush=True)


if __name__ == "__main__":
    main()
