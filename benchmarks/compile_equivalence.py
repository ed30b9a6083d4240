"""Compiled equals eager, on whole runs: each case trains twice from the same seed, once with the
eager lean forward (train.forward=lean, which equals the bridge bit for bit) and once with
train.compile, and the table compares them at every evaluation.

Cases (the issue's): the bursty reference run (bursty/small), the same under the matching
induction clamp (L1H0's query row on the ideal induction pattern), Singh's pairs/cpu with
perfect copying (his keep-one + perfect-copying condition), and a modular run (modular/cpu).

    python benchmarks/compile_equivalence.py [--cases bursty,induction,pairs,modular] [--steps N]
        [--mode default] [--threads 2] [--out DIR]

Prints per case: the largest absolute and relative difference over every metric at every
evaluation, each run's transition step (the task's headline metric, icl-lab's reading), the
clamp call counts (equal or not), the steps at which a graph was compiled, and both wall times.
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


def compare(case: str, steps: int | None, mode: str, out: Path) -> dict:
    config = config_for(case, steps)
    eager = train(config, out / f"{case}-eager", progress=False)
    compiled = train(config.with_overrides({"train.compile": mode}), out / f"{case}-compiled", progress=False)
    e = eager.metrics.sort(["step", "metric"])
    c = compiled.metrics.sort(["step", "metric"])
    if not e.select("step", "metric").equals(c.select("step", "metric")):
        raise SystemExit(f"{case}: the two runs evaluated different steps or metrics")
    worst_abs, worst_rel, where = 0.0, 0.0, None
    for (step, metric, a), b in zip(e.iter_rows(), c["value"].to_list()):
        if math.isfinite(a) and math.isfinite(b):
            diff = abs(a - b)
            if diff > worst_abs:
                worst_abs, where = diff, f"{metric}@{step}"
            worst_rel = max(worst_rel, diff / max(abs(a), 1e-12))
        elif not (a == b or (math.isnan(a) and math.isnan(b))):
            worst_abs, worst_rel, where = math.inf, math.inf, f"{metric}@{step}"
    return {
        "case": case, "evaluations": e["step"].n_unique(), "max_abs": worst_abs, "max_rel": worst_rel, "where": where,
        "transition_eager": transition_step(eager.summary), "transition_compiled": transition_step(compiled.summary),
        "calls_equal": eager.summary.get("intervention_calls") == compiled.summary.get("intervention_calls"),
        "compiled_at": compiled.summary.get("compiled_at_steps"),
        "wall_eager": eager.summary["wall_seconds"], "wall_compiled": compiled.summary["wall_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--mode", default="default", help="torch.compile mode (train.compile)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| case | evaluations | max abs diff (where) | max rel diff | transition step eager / compiled | clamp calls equal | compiled at steps | wall s eager / compiled |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for case in args.cases.split(","):
            r = compare(case, args.steps, args.mode, out)
            print(f"| {r['case']} | {r['evaluations']} | {r['max_abs']:.2e} ({r['where']}) | {r['max_rel']:.2e} | {r['transition_eager']} / "
                  f"{r['transition_compiled']} | {r['calls_equal']} | {r['compiled_at']} | {r['wall_eager']:.0f} / {r['wall_compiled']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
