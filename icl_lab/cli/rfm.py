"""`icl-lab rfm`: grok modular arithmetic with a Recursive Feature Machine (Mallinar et al. 2024)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from icl_lab.cli.arguments import UsageError, check_output_folder, comma_list, count, device, finite_float, seed
from icl_lab.cli.run_names import run_name
from icl_lab.cli.export import add_log_arguments, logging_to
from icl_lab.config import ConfigError
from icl_lab.store import check_new_run_dir


HELP = "grok modular arithmetic with a Recursive Feature Machine"
DESCRIPTION = "Kernel ridge regression with AGOP feature learning on a∘b mod p (Mallinar et al. 2024); iterations are the run's steps."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", default="add", choices=["add", "sub", "mul", "div"], help="the operation ∘")
    parser.add_argument("--p", type=int, default=61, help="the prime modulus (default 61)")
    parser.add_argument("--train-frac", type=finite_float, default=0.5, help="fraction of all pairs used for training (default 0.5)")
    parser.add_argument("--train-fracs", type=comma_list(finite_float, "fractions"), default=None,
                        help="comma-separated fractions: run each, print a table of final test accuracy")
    parser.add_argument("--iters", type=count, default=30, help="RFM iterations (default 30)")
    parser.add_argument("--kernel", default="gaussian", choices=["gaussian", "laplace", "quadratic"])
    parser.add_argument("--bandwidth", type=finite_float, default=2.5, help="kernel bandwidth L (default 2.5)")
    parser.add_argument("--ridge", type=finite_float, default=0.0, help="ridge λ (default 0)")
    parser.add_argument("--agop-power", type=finite_float, default=0.5, help="M ← AGOP^power (default 1/2)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the train/test split")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", default=None, help="run directory (default runs/rfm-<op>-p<p>-seed<S>, with the options that differ from "
                        "their defaults before the seed, e.g. runs/rfm-add-p61-frac=0.3-seed0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_arguments(parser)


# options whose non-default values the default folder name carries (op, p and seed are in it already)
NAMED_OPTIONS = {"train_frac": "frac", "train_fracs": "fracs", "iters": "iters", "kernel": "kernel",
                 "bandwidth": "bandwidth", "ridge": "ridge", "agop_power": "agop_power"}


def default_out(args: argparse.Namespace) -> str:
    """runs/rfm-<op>-p<p>[-<options that differ from their defaults>]-seed<S>, e.g.
    runs/rfm-add-p61-frac=0.3-seed0 (icl_lab/cli/run_names.py)."""
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    items = []
    for option, label in NAMED_OPTIONS.items():
        value = getattr(args, option)
        if value != defaults.get_default(option):
            items.append(f"{label}={','.join(map(str, value)) if isinstance(value, list) else value}")
    return f"runs/{run_name(f'rfm-{args.op}-p{args.p}', items, f'seed{args.seed}')}"


def run(args: argparse.Namespace) -> int:
    with logging_to(args):  # --log: checked before anything starts
        return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    from icl_lab.rfm.machine import RFMConfig, run_rfm

    config = RFMConfig(
        p=args.p, op=args.op, train_fraction=args.train_frac, kernel=args.kernel,
        bandwidth=args.bandwidth, ridge=args.ridge, agop_power=args.agop_power,
        iters=args.iters, seed=args.seed, device=args.device,
    )
    out = Path(args.out or default_out(args))
    if args.train_fracs:
        from icl_lab.experiments.rfm import run_fractions

        for fraction in args.train_fracs:  # each checked before the first run
            try:
                dataclasses.replace(config, train_fraction=fraction)
            except ConfigError as err:
                raise UsageError(f"--train-fracs: {err}") from None
        check_output_folder("--out", out)
        print(run_fractions(out, args.train_fracs, config, progress=not args.no_progress))
        from icl_lab.experiments.rfm import FIGURE_STEM

        print(f"figure: {(out / FIGURE_STEM).resolve()}.png and .svg")
        print(f"runs and table in {out.resolve()}")
        return 0
    check_new_run_dir(out, args.overwrite)
    s = run_rfm(config, out, progress=not args.no_progress, overwrite=args.overwrite).summary
    t = s["transitions"]["test_accuracy"]
    print(f"done in {s['wall_seconds']:.1f} s; run stored in {out.resolve()}")
    print(f"  test accuracy: jump at iteration {t['transition_step']} (from {t['y_lo']:.3f} to {t['y_hi']:.3f}); "
          f">= 0.99 from iteration {s['first_iteration_test_accuracy_0.99']}")
    f = s["final"]
    print(f"  final: train_accuracy={f['train_accuracy']:.3f} test_accuracy={f['test_accuracy']:.3f} "
          f"circulant_deviation={f.get('circulant_deviation', float('nan')):.4f}")
    from icl_lab import figures  # beside the run folder: the run's own files are the store's

    png, svg = figures.save_figure(figures.rfm_figure({out.name: [out]}), out.parent / f"{out.name}_figure")
    print(f"  figure: {png.resolve()} and {svg.resolve()}")
    return 0
