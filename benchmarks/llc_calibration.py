"""Calibrating the LLC sampler (the ε × nβ sweep devinterp's EpsilonBetaAnalyzer makes), and its cost.

On a trained run (default: train the reference `bursty/small`, seed 0, into --run), at three
checkpoints (before, inside and after the ICL transition), for every step size ε and inverse
temperature nβ of the grid, one estimate with `--draws` draws per chain and no burn-in, split
into quarters:

    λ̂ per quarter q = nβ · (mean loss of the draws in quarter q − L(w*))

A setting is usable where the chains are stationary (quarters 2–4 within 15% of each other:
burn-in inside the first quarter), agree (sd over chains under 10% of λ̂), never run away or
turn NaN, and λ̂ grows slowly with ε (devinterp's guidance: take ε where λ̂ has stopped
depending strongly on it, below where it blows up). Then, at the chosen setting, the time per
checkpoint for the quick, default and careful profiles (docs/measures.md).

    python benchmarks/llc_calibration.py [--run runs/llc-calibration] [--workers 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

LRS = (3e-5, 1e-4, 3e-4, 1e-3)
NBETAS = (30.0, 100.0, 300.0)
PROFILES = {  # (chains, burn-in, draws)
    "quick": (2, 50, 100),
    "default": (2, 100, 200),
    "careful": (4, 200, 500),
}


def estimate(job):
    run, step, lr, nbeta, draws, chains, burnin, threads = job
    import torch

    torch.set_num_threads(threads)
    from icl_lab.checkpoints import load_model
    from icl_lab.llc import estimate_llc, sampling_pool

    model, task, config = load_model(run, step)
    llc = dataclasses.replace(config.llc, lr=lr, n_beta=nbeta, num_draws=draws, num_chains=chains, num_burnin_steps=burnin,
                              max_loss_rise=1e9)
    pool = sampling_pool(task, llc, config.seed + 4241)
    start = time.perf_counter()
    result = estimate_llc(model, task, llc, pool)
    quarters = None
    if burnin == 0 and result.diverged is None:  # the sweep: λ̂ by quarter of the draws
        d = result.draws
        quarters = [nbeta * (d[:, i * draws // 4 : (i + 1) * draws // 4].mean() - result.init_loss) for i in range(4)]
    return step, lr, nbeta, result, quarters, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/llc-calibration", help="a trained bursty run (trained there if missing)")
    parser.add_argument("--steps", default="100,1000,3000", help="checkpoints to calibrate at")
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2, help="processes side by side, one torch thread each")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "summary.json").exists():
        from icl_lab import get_preset, train

        train(get_preset("bursty", "small").config.with_overrides({"device": "cpu"}), run, progress=False)
    steps = [int(s) for s in args.steps.split(",")]
    jobs = [(str(run), s, lr, nb, args.draws, 2, 0, 1) for s, lr, nb in itertools.product(steps, LRS, NBETAS)]
    print(f"ε × nβ sweep on {run}: {args.draws} draws per chain, 2 chains, no burn-in; λ̂ by quarter of the draws")
    print("| step | ε | nβ | λ̂ (all draws) | sd over chains | λ̂ by quarter | stationary | usable |")
    print("|---|---|---|---|---|---|---|---|")
    with ProcessPoolExecutor(args.workers) as pool:
        for step, lr, nb, result, quarters, _ in pool.map(estimate, jobs):
            if result.diverged:
                print(f"| {step} | {lr:g} | {nb:g} | diverged: {result.diverged} | | | | no |")
                continue
            late = np.array(quarters[1:])
            stationary = bool(np.ptp(late) <= 0.15 * abs(late.mean()))
            agree = result.std <= 0.1 * abs(result.llc)
            print(f"| {step} | {lr:g} | {nb:g} | {result.llc:.1f} | {result.std:.2f} | {' / '.join(f'{q:.1f}' for q in quarters)} | "
                  f"{'yes' if stationary else 'no'} | {'yes' if stationary and agree else 'no'} |", flush=True)
    print("\nCost per checkpoint at the default ε, nβ, γ (one process, one thread, nothing else running):")
    for name, (chains, burnin, draws) in PROFILES.items():
        _, _, _, result, _, seconds = estimate((str(run), steps[-1], 3e-4, 100.0, draws, chains, burnin, 1))
        print(f"- {name}: {chains} chains × ({burnin} burn-in + {draws} draws) = {chains * (burnin + draws)} SGLD steps: "
              f"{seconds:.1f} s, λ̂ = {result.llc:.1f} ± {result.std:.1f}")


if __name__ == "__main__":
    main()
