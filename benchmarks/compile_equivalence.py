"""Compiled equals eager, on whole runs: each case trains twice from the same seed, once with the
eager lean forward (train.forward=lean, which equals the bridge bit for bit) and once with
train.compile, and the table compares them at every evaluation.

Cases (the issue's): the bursty reference run (bursty/small), the same under the matching
induction clamp (L1H0's query row on the ideal induction pattern), Singh's pairs/cpu with
perfect copying (his keep-one + perfect-copying condition), and a modular run (modular/cpu).

    python benchmarks/compile_equivalence.py [--cases bursty,induction,pairs,modular] [--steps N]
        [--mode default] [--threads 1] [--no-control] [--out DIR]

Prints per case: the largest absolute and relative difference over every metric at every
evaluation and the first evaluation out of tolerance (rtol 1e-4 / atol 1e-5), each run's
transition step (the task's headline metric, icl-lab's reading), the clamp call counts (equal
or not), the steps at which a graph was compiled, and the verdict.

The tolerance is float reassociation, and a control measures what it does to each trajectory:
the eager run again from initial weights each moved by one float32 ulp (w * (1 +- 2^-23)), a
rounding-sized difference and nothing else. Where the control also leaves rtol/atol, the
trajectory itself amplifies rounding (Adam turns a gradient that is rounding noise, or whose
sign rounding decides, into a full learning-rate step; the modular run's grokking and the
unclamped bursty run after its transition do this), and the compiled run is held to the control
instead: it may leave the tolerance no earlier than half the control's step, differ by at most
5x the control's largest difference (one kick at step 0 against one at every step), and its
transition step may move by no more than the control's does (or one evaluation). In every case
the clamp calls are equal and one compiled step equals the eager step to rounding: at every
checkpoint of the eager run, the loss and gradient computed both ways from the same weights and
batch agree within 1e-4 relative, the gradient or within 5x what moving the weights by one ulp
does to the eager gradient (the "one step" column).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
from pathlib import Path
from unittest import mock

import torch

import icl_lab.models as models
from icl_lab import get_preset, train
from icl_lab.experiments.singh import KEEP_ONE, PERFECT_COPYING
from icl_lab.checkpoints import restore_weights, run_config_of
from icl_lab.run_config import RunConfig
from icl_lab.store import checkpoint_steps
from icl_lab.train.training_run import TrainingRun
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


@contextlib.contextmanager
def torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def perturb_by_one_ulp_(params, gen: torch.Generator) -> None:
    """Every weight w -> w * (1 + s * 2^-23), s = +-1 at random, in place: each moved by about
    one unit in the last place, the size of a rounding difference and nothing else."""
    with torch.no_grad():
        for param in params:
            sign = torch.randint(0, 2, param.shape, generator=gen).to(param.device, param.dtype) * 2 - 1
            param.mul_(1 + sign * 2.0**-23)


def train_with_threads(config, out: Path, threads: int, perturb_seed: int | None = None):
    """Train `config` at `threads` torch threads; with `perturb_seed`, from initial weights
    moved by one ulp each (perturb_by_one_ulp_): the control. An eager run from them differs
    from the eager reference by nothing but rounding, however the trajectory amplifies it."""
    with torch_threads(threads):
        if perturb_seed is None:
            return train(config, out, progress=False)
        build_model = models.build_model

        def perturbed(*args, **kwargs):
            model = build_model(*args, **kwargs)
            perturb_by_one_ulp_(model.parameters(), torch.Generator().manual_seed(perturb_seed))
            return model

        with mock.patch.object(models, "build_model", perturbed):
            return train(config, out, progress=False)


def step_differences(run_dir: Path, mode: str, threads: int) -> dict:
    """One compiled step against the eager step, at the weights of every checkpoint of the
    eager run in `run_dir`: the loss and the gradient of a training batch computed compiled
    and eager from the same weights, and, as the yardstick, eager again from the weights moved
    by one ulp (perturb_by_one_ulp_). Returns the largest relative differences, |loss_c - loss_e|
    / |loss_e| and ||g_c - g_e|| / ||g_e|| (all parameters as one vector), and the control's
    gradient difference: what one compiled step changes, before any trajectory amplifies it.
    (A ReLU whose input rounding puts on one side of 0 or the other changes the gradient by a
    whole unit's contribution, so near convergence the gradient's own rounding sensitivity
    reaches 1e-3 relative and more.)"""
    config = run_config_of(run_dir).with_overrides({"train.compile": mode})
    with torch_threads(threads):
        run = TrainingRun(config, torch.device("cpu"))
        try:
            return _step_differences(run, run_dir)
        finally:
            run.close_engine()


def _step_differences(run: TrainingRun, run_dir: Path) -> dict:
    gen = torch.Generator().manual_seed(0)
    params = [p for p in run.model.parameters() if p.requires_grad]

    def loss_and_grad(compute, batch, step: int) -> tuple[float, torch.Tensor]:
        run.optimizer.zero_grad(set_to_none=True)
        loss = compute(batch, step)
        loss.backward()
        return loss.item(), torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])

    def eager(batch, step: int) -> torch.Tensor:
        with run.training_forward():
            return run.task.loss(run.model.forward_batch(batch).to(run.loss_dtype), batch)

    worst = {"loss": 0.0, "grad": 0.0, "control_grad": 0.0}
    run.model.train()
    for step in checkpoint_steps(run_dir):
        restore_weights(run.model, run_dir, step)
        step = max(step, 1)
        batch = run.sample_batch(step)
        loss_e, grad_e = loss_and_grad(eager, batch, step)
        loss_c, grad_c = loss_and_grad(run.compiled, batch, step)
        perturb_by_one_ulp_(params, gen)
        _, grad_u = loss_and_grad(eager, batch, step)
        norm = grad_e.norm().clamp_min(1e-30)
        worst["loss"] = max(worst["loss"], abs(loss_c - loss_e) / max(abs(loss_e), 1e-30))
        worst["grad"] = max(worst["grad"], ((grad_c - grad_e).norm() / norm).item())
        worst["control_grad"] = max(worst["control_grad"], ((grad_u - grad_e).norm() / norm).item())
    return worst


STEP_RTOL = 1e-4  # one compiled step against the eager step: loss and gradient, relative


def step_within(step: dict) -> bool:
    """One compiled step within rounding: the loss within STEP_RTOL relative, the gradient
    within STEP_RTOL or 5x what one ulp of the weights does to the eager gradient."""
    return step["loss"] <= STEP_RTOL and step["grad"] <= max(STEP_RTOL, 5 * step["control_grad"])


def compare(case: str, steps: int | None, mode: str, out: Path, threads: int, control: bool) -> dict:
    """Eager and compiled whole runs; the compiled step against the eager one at each of the
    eager run's checkpoints; with `control`, eager from one-ulp-perturbed weights."""
    config = config_for(case, steps)
    eager = train_with_threads(config, out / f"{case}-eager", threads)
    compiled = train_with_threads(config.with_overrides({"train.compile": mode}), out / f"{case}-compiled", threads)
    reference = eager.metrics.select("step", "metric", "value")
    row = {
        "case": case, "evaluations": eager.metrics["step"].n_unique(), "eval_every": config.train.eval_every,
        "compiled": summarise(differences(eager.metrics, compiled.metrics), reference),
        "transition_eager": transition_step(eager.summary), "transition_compiled": transition_step(compiled.summary),
        "calls_equal": eager.summary.get("intervention_calls") == compiled.summary.get("intervention_calls"),
        "compiled_at": compiled.summary.get("compiled_at_steps"),
        "step": step_differences(out / f"{case}-eager", mode, threads),
    }
    if control:
        run = train_with_threads(config, out / f"{case}-eager-one-ulp", threads, perturb_seed=1)
        row["control"] = summarise(differences(eager.metrics, run.metrics), reference)
        row["transition_control"] = transition_step(run.summary)
    return row


def transition_shift(a: dict | None, b: dict | None) -> float:
    """The largest difference between two runs' transition steps (inf where one run found a
    transition the other did not)."""
    a, b = a or {}, b or {}
    if set(a) != set(b) or any((a[k] is None) != (b[k] is None) for k in a):
        return math.inf
    return max((abs(a[k] - b[k]) for k in a if a[k] is not None), default=0)


def verdict(row: dict) -> str:
    """Within tolerance: one compiled step equals the eager step to rounding (loss and gradient
    within STEP_RTOL relative wherever checked) and the clamp call counts are equal; and the
    whole runs either agree within rtol/atol at every evaluation with the same transition step,
    or, where the one-ulp control leaves that tolerance too (the trajectory amplifies
    rounding), the compiled run leaves it no earlier than half the control's step, differs by at
    most 5x the control's largest difference (the control is one rounding-sized kick at step 0;
    the compiled run gets one at every step), and moves the transition step by no more than the
    control does or one evaluation (the reading's resolution)."""
    step = row.get("step")
    if not row["calls_equal"] or (step is not None and not step_within(step)):
        return "no"
    c = row["compiled"]
    shift = transition_shift(row["transition_eager"], row["transition_compiled"])
    if c["first_out"] is None:
        return "yes" if shift == 0 else "no"
    control = row.get("control")
    if control is None or control["first_out"] is None:
        return "no"
    allowed_shift = max(transition_shift(row["transition_eager"], row.get("transition_control")), row["eval_every"])
    amplified = c["first_out"] >= control["first_out"] / 2 and c["max_abs"] <= 5 * control["max_abs"] and shift <= allowed_shift
    return "yes (rounding amplified, as in the control)" if amplified else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--mode", default="default", help="torch.compile mode (train.compile)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-control", action="store_true", help="skip the one-ulp control run")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    unknown = [case for case in args.cases.split(",") if case not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(map(repr, unknown))}; the cases are {', '.join(CASES)}")
    print(f"tolerance: rtol {RTOL} / atol {ATOL} at every evaluation; {args.threads} thread(s)")
    print("| case | evaluations | compiled vs eager: max abs diff (where) | max rel | first step out of tolerance | "
          "control (eager, one-ulp weights): max abs (where) | first step out | transition eager / compiled / control | "
          "one step at each checkpoint: max rel diff loss / gradient (one-ulp control's gradient) | clamp calls equal | compiled at steps | within tolerance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for case in args.cases.split(","):
            r = compare(case, args.steps, args.mode, out, args.threads, not args.no_control)
            c, k = r["compiled"], r.get("control", {})
            control = f"{k['max_abs']:.2e} ({k['where']}) | {k['first_out']}" if k else "- | -"
            print(f"| {r['case']} | {r['evaluations']} | {c['max_abs']:.2e} ({c['where']}) | {c['max_rel']:.2e} | {c['first_out']} | {control} | "
                  f"{r['transition_eager']} / {r['transition_compiled']} / {r.get('transition_control', '-')} | "
                  f"{r['step']['loss']:.1e} / {r['step']['grad']:.1e} ({r['step']['control_grad']:.1e}) | {r['calls_equal']} | "
                  f"{r['compiled_at']} | {verdict(r)} |", flush=True)


if __name__ == "__main__":
    main()
