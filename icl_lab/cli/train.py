"""`icl-lab train TASK`: train a model on a task and store the run."""

from __future__ import annotations

import argparse
import dataclasses

from icl_lab.cli.arguments import SINGLE_RUN_DEFAULT, SINGLE_RUN_THREADS, THREADS_HELP, UsageError, count, cpu_threads, device, seed, stops_resumably, threads
from icl_lab.cli.run_names import intervention_stems, run_name, set_items
from icl_lab.cli.export import add_log_arguments, logging_to
from icl_lab.config import parse_cli_value
from icl_lab.presets import default_preset, get_preset
from icl_lab.provenance import resolve_device
from icl_lab.store import check_new_run_dir
from icl_lab.tasks import task_class, task_names


HELP = "train a model on a task and store the run"
DESCRIPTION = "Train a model on a task; the run (config, metrics, checkpoints, status) is written to --out."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=task_names(), help="the task to train on")
    parser.add_argument(
        "--preset", default=None,
        help="named run preset (see `icl-lab presets`); default: " + ", ".join(f"{t}: {default_preset(t)}" for t in task_names()),
    )
    parser.add_argument("--steps", type=count, default=None, help="optimizer steps (default: the preset's)")
    parser.add_argument("--seed", type=seed, default=None, help="seed for data, model and evaluation sets (default 0)")
    parser.add_argument("--device", type=device, default=None, help="auto (the default: CUDA when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=threads, default=None, metavar="N", help=THREADS_HELP.format(default=SINGLE_RUN_DEFAULT))
    parser.add_argument("--out", default=None, help="run directory (default: runs/<task>-<preset>-seed<S>, with what --steps, --set and "
                        "--intervention change before the seed, e.g. runs/modular-cpu-op=mul-seed0)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field, e.g. task.num_classes=512, train.lr=1e-3, model.n_heads=4 "
        "(a bare name works when it is unique); repeatable",
    )
    parser.add_argument(
        "--intervention", dest="interventions", action="append", default=[], metavar="SPEC.toml",
        help="a TOML file of [[intervention]] tables (clamps during training, ablations at evaluation); repeatable",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_arguments(parser)


def parse_sets(pairs: list[str]) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = parse_cli_value(value.strip())
    return overrides


def plan(args: argparse.Namespace):
    """Everything checked, nothing written: (config, out dir)."""
    preset = get_preset(args.task, args.preset)
    overrides = parse_sets(args.sets)
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    for key in ("seed", "device"):  # the flags, when given, win over --set
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = preset.config.with_overrides(overrides)
    resolve_device(config.device)  # a --set device is checked like --device
    if args.interventions:
        from interventions import load_interventions

        specs = [spec for path in args.interventions for spec in load_interventions(path)]
        config = dataclasses.replace(config, interventions=config.interventions + tuple(specs))
    out = check_new_run_dir(args.out or default_out(args, preset.name, config.seed), args.overwrite)
    return config, out


def default_out(args: argparse.Namespace, preset: str, seed: int) -> str:
    """runs/<task>-<preset>[-<what --steps, --set and --intervention change>]-seed<S>
    (icl_lab/cli/run_names.py): commands that differ get different folders."""
    sets = [*args.sets, *([f"train.steps={args.steps}"] if args.steps is not None else [])]
    items = set_items(sets, skip=("seed", "device")) + intervention_stems(args.interventions)
    return f"runs/{run_name(f'{args.task}-{preset}', items, f'seed{seed}')}"


def run(args: argparse.Namespace) -> int:
    with logging_to(args):  # --log: checked before anything starts
        return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    config, out = plan(args)
    from icl_lab.train import train  # builds the model: imports TransformerLens

    with stops_resumably(out), cpu_threads(args.threads, SINGLE_RUN_THREADS) as n_threads:
        print(f"training {config.task}/{config.preset} for {config.train.steps} steps "
              f"(seed {config.seed}, device {resolve_device(config.device)}, {n_threads} torch threads) -> {out}")
        for spec in config.interventions:
            print(f"  intervention: {spec.to_dict()}")
        summary = train(config, out, progress=not args.no_progress, overwrite=args.overwrite).summary
    print(f"done in {summary['wall_seconds']:.1f} s; run stored in {out.resolve()}")
    for metric, t in summary["transitions"].items():
        if t["transition_step"] is None:
            print(f"  {metric}: no transition found (from {t['y_lo']:.3f} to {t['y_hi']:.3f})")
        else:
            print(
                f"  {metric}: transition at step {t['transition_step']} "
                f"(10-90% rise over {t['width']} steps, steps {t['start_step']}-{t['end_step']}; "
                f"{t['y_lo']:.3f} -> {t['y_hi']:.3f})"
            )
    for milestone in task_class(config.task).milestones:
        step = summary["first_steps"].get(milestone.key)
        print(f"  {milestone.label} ({milestone.key}): " + ("not reached" if step is None else f"first at step {step}"))
    keys = summary.get("final_key_frequencies")
    if keys:
        print(f"  final key frequencies {keys}: restricted/excluded loss with them added at every checkpoint")
    finals = ", ".join(f"{k}={v:.3f}" for k, v in summary["final"].items() if k.endswith("accuracy"))
    print(f"  final: {finals}")
    for spec, calls in summary.get("intervention_calls", {}).items():
        print(f"  intervention {spec} fired: {calls}")
    return 0
