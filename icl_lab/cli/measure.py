"""`icl-lab measure RUN`: compute measures on a stored run's checkpoints, add them to its metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from icl_lab.cli.arguments import UsageError, device, names
from icl_lab.store import paths


HELP = "compute measures on a stored run's checkpoints and add them to its metrics"
DESCRIPTION = "Post-hoc measures (llc, the local learning coefficient, on request: --measures llc): the same functions as live evaluation, on every checkpoint (or --steps), appended to the run's metrics. Default: the progress-measure suite (htsr, activation_sparsity, weight_entropy, local_circuit_complexity, embedding_uniformity, mutual_information, local_complexity) as defined for the run's task."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--measures", type=names, default=None, help="comma-separated measures or groups (default: progress)")
    parser.add_argument("--steps", default=None, help="comma-separated checkpoint steps, or all (default: all)")
    parser.add_argument("--device", type=device, default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--post-run", action="store_true",
        help="also run the post-run steps that apply to the run's task (modular arithmetic: final_key_losses), "
        "updating summary.json",
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="llc.KEY=VALUE",
        help="the llc measure's settings for this call, e.g. llc.num_draws=400, llc.parts=L1H0,L1H1, "
        "llc.clamps=off (default: the run's llc section); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from icl_lab.posthoc import measure_run, parse_steps  # the model is built after every check

    from icl_lab.cli.train import parse_sets

    run_dir = Path(args.run)
    settings = parse_sets(args.sets)
    wrong = [k for k in settings if not k.startswith("llc.")]
    if wrong:
        raise UsageError(f"measure --set takes llc.KEY=VALUE (the llc measure's settings), not {', '.join(wrong)}")
    rows = measure_run(run_dir, args.measures or None, parse_steps(args.steps), device=args.device,
                       progress=not args.no_progress, llc={k[4:]: v for k, v in settings.items()})
    if args.post_run:
        from icl_lab.posthoc import run_post_run

        entries = run_post_run(run_dir, device=args.device)
        print(f"post-run steps: {', '.join(entries) or 'none added to the summary'}")
    wide = rows.pivot(on="metric", index="step", values="value").sort("step")
    summary = [c for c in wide.columns if c == "step" or "." not in c]
    with pl.Config(tbl_rows=50, tbl_cols=14):
        print(wide.select(summary))
    print(f"{rows.height} values at {wide.height} checkpoints added to {paths(run_dir).metrics.resolve()}")
    return 0
