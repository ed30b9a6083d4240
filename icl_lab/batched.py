"""Training a group of runs in one process, their forward and backward passes batched.

    results = train_group([config_a, config_b, ...], [out_a, out_b, ...])

Members share the model's architecture and tensor shapes (model config, the task and the inputs
it gives the model, batch size, steps, device) and may differ in seed, interventions, optimiser
settings (optimizer, lr, weight decay, schedule, grad clipping), task parameters that keep the
shapes, measures and evaluation or checkpoint schedules. Each member is the `TrainingRun` that
`train` builds for its config (task, initial weights, data stream, optimizer, clamp engine, run
directory through its RunLifecycle), so its config.json, metrics, checkpoints and summary are those
of a single run (its summary also names the group), and `icl-lab resume` continues a member
alone. `partition(configs, max_size)` splits a grid into the groups train_group accepts, by the
same rules (`shared_fields`, `unbatchable`, the task's model inputs).

One step: each member samples its batch. Members whose clamps act alike (none; or the same
interventions on the same task config) form a lane. For each lane the members' own Parameters
are stacked along a member axis (torch.stack: gradients flow back to each member's tensors) and
one `vmap(functional_call(...))` runs every member's forward on the lane leader's module; the
leader's clamp engine hooks see one member's activation [batch, ...] inside vmap, which is why
members with different clamps cannot share a lane. Each member's loss comes from its own task;
one backward of their sum gives each member its own gradient; each member's optimizer then steps
(its lr, weight decay and clipping, as in `train`). Evaluation and checkpoints run per member
outside vmap, on the member's own model, so the measures registry is unchanged.

Equivalence: a member equals its config trained alone up to the order of float reductions
inside vmap (tests/test_batched.py states the tolerance).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from icl_lab.config import ConfigError
from icl_lab.provenance import resolve_device
from icl_lab.run_config import RunConfig
from icl_lab.store import check_new_run_dir
from icl_lab.tasks import make_task
from icl_lab.tasks.base import ModelIO, TaskBatch
from icl_lab.train import TrainingRun, TrainResult, resumable_step

# Model fields that change only the initial values, not the shapes.
INIT_ONLY_MODEL_FIELDS = ("init_range", "init_scale")
# Targets that keep state across forwards (one value per engine, not per member) or need a
# paired input set by hand: a lane's shared engine cannot give each member its own.
UNBATCHABLE_TARGETS = {
    "running_mean": "its running mean is state of one engine, shared by the lane's members",
    "other_input": "its paired input is set by hand on one engine (activation patching), not in training",
}


def train_group(
    configs: Sequence[RunConfig],
    outs: Sequence[str | Path],
    *,
    progress: bool = False,
    overwrite: bool = False,
    resume: bool = False,
) -> list[TrainResult]:
    """Train each `configs[i]` into `outs[i]`, all in one process with batched passes.

    Everything is checked (shapes, run directories, each member's interventions against its
    model) before anything is written. A failure or Ctrl-C marks every member's run failed or
    stopped, as `train` does for one run. With `resume`, every member continues its stopped run
    from its newest intact checkpoint, as `train(..., resume=True)` does for one; the members
    must resume from the same step (a group stopped together does).
    """
    configs, outs = list(configs), [Path(o) for o in outs]
    check_group(configs, outs)
    device = resolve_device(configs[0].device)
    if resume:
        starts = {out: resumable_step(out, config) for config, out in zip(configs, outs)}
        if len(set(starts.values())) > 1:
            raise ConfigError("members of a resumed group continue from one step; their newest intact checkpoints are at "
                              + ", ".join(f"{out.name}: {step}" for out, step in starts.items()))
    else:
        for out in outs:
            check_new_run_dir(out, overwrite)
    members = []
    for config in configs:
        member = TrainingRun(config, device)
        # Training draws nothing from the global RNG, so each member stores the state its own
        # run has (train seeds it and builds the model) rather than the group's.
        member.torch_rng = torch.get_rng_state()
        members.append(member)
    check_model_inputs(members)
    lanes = make_lanes(members)
    steps = configs[0].train.steps
    with contextlib.ExitStack() as runs:
        for member, out in zip(members, outs):
            start_step = member.reopen_run_dir(out) if resume else member.create_run_dir(out, overwrite)
            runs.enter_context(member.lifecycle)
            if start_step >= 0:
                member.torch_rng = torch.get_rng_state()  # reopen restored the member's own
        bar = tqdm(total=steps, initial=max(start_step, 0), disable=not progress, desc=f"group of {len(members)}", unit="step")
        try:
            for member in members:
                first = member.start_training(start_step)  # a new run: step 0's evaluation and checkpoint
            for step in range(first, steps + 1):
                train_step(lanes, step)
                for member in members:
                    member.after_update(step)
                bar.update(1)
            for member in members:
                member.check_fired()
        finally:
            bar.close()
            for member in members:
                member.close_engine()
        group = {"group": {"size": len(members), "members": [out.name for out in outs]}}  # which runs trained together
        return [member.finish(group) for member in members]


class Lane:
    """Members trained by one vmapped call on the leader's module (and its clamp engine)."""

    def __init__(self, members: list[TrainingRun]):
        self.members = members
        self.leader = members[0].model
        # every member's own tensors, frozen ones and buffers too, under TL4's module paths
        # (`..._original_component...`), as functional_call expects them
        self.params = [{**dict(m.model.named_parameters()), **dict(m.model.named_buffers())} for m in members]

        # tie_weights=False: TL4 reaches each attention module by several paths (aliases of one
        # module); tied swapping would swap it once per path and restore the stacked tensors.
        def forward(params: dict[str, torch.Tensor], fields: dict[str, torch.Tensor]) -> torch.Tensor:
            batch = TaskBatch(**fields)
            return functional_call(self.leader, params, (batch.inputs, batch.positions), {"batch": batch}, tie_weights=False)

        # randomness="error": a model drawing random numbers inside would differ from its single run
        self.forward = vmap(forward, randomness="error")

    def losses(self, step: int) -> list[torch.Tensor]:
        """Each member's training loss of the update from step-1 to step."""
        batches = [m.sample_batch(step) for m in self.members]
        stacked = {name: torch.stack([p[name] for p in self.params]) for name in self.params[0]}  # [member, ...]
        fields = {f.name: torch.stack([getattr(b, f.name) for b in batches])
                  for f in dataclasses.fields(TaskBatch) if getattr(batches[0], f.name) is not None}
        logits = self.forward(stacked, fields)  # [member, batch, n_outputs]
        self.share_call_counts()
        return [m.task.loss(logits[k].to(m.loss_dtype), b) for k, (m, b) in enumerate(zip(self.members, batches))]

    def share_call_counts(self) -> None:
        """The leader's engine counted the lane's training hook calls; each member had them."""
        leader = self.members[0].engine
        if leader is None:
            return
        counts = {key: n for key, n in leader.calls.items() if key[2] == "train"}
        for member in self.members[1:]:
            for key, n in counts.items():
                member.engine.calls[key] = n


def train_step(lanes: list[Lane], step: int) -> None:
    """One update of every member: batched forwards, one backward, per-member optimizer steps."""
    losses = [(m, loss) for lane in lanes for m, loss in zip(lane.members, lane.losses(step))]
    for member, _ in losses:
        member.optimizer.zero_grad(set_to_none=True)
    torch.stack([loss.to(torch.float64) for _, loss in losses]).sum().backward()  # members share no parameters
    for member, loss in losses:
        member.update(loss, step)


def make_lanes(members: list[TrainingRun]) -> list[Lane]:
    """Members without clamps share one lane; clamped members share one only with the same
    interventions on the same task config (targets read the task, e.g. its ideal patterns)."""
    by_key: dict[tuple, list[TrainingRun]] = {}
    for member in members:
        config = member.config
        key = (config.interventions, config.task_config) if config.interventions else ()
        by_key.setdefault(key, []).append(member)
    return [Lane(group) for group in by_key.values()]


def shared_fields(config: RunConfig) -> dict[str, object]:
    """What the members of a group share, by field name: the task, the model's shapes (every
    model field but INIT_ONLY_MODEL_FIELDS), batch size, steps and device."""
    fields = {"task": config.task, "device": config.device}
    fields.update({f"train.{name}": getattr(config.train, name) for name in ("batch_size", "steps")})
    fields.update({f"model.{f.name}": getattr(config.model, f.name)
                   for f in dataclasses.fields(config.model) if f.name not in INIT_ONLY_MODEL_FIELDS})
    return fields


def unbatchable(config: RunConfig) -> str | None:
    """Why `config` cannot be trained in a group (a clamp target in UNBATCHABLE_TARGETS, or
    train.last_position_only), or None."""
    if config.train.last_position_only:
        return "train.last_position_only cuts the last block of one model, not of a batched group"
    if config.train.compile != "off":
        return "train.compile compiles one model's step, not a batched group's"
    for spec in config.interventions:
        if spec.target in UNBATCHABLE_TARGETS:
            return (f"intervention {spec.label} has target {spec.target!r}, which train_group cannot batch "
                    f"({UNBATCHABLE_TARGETS[spec.target]})")
    return None


def group_key(config: RunConfig, io: ModelIO) -> tuple | None:
    """Configs with equal keys train together (check_group and check_model_inputs accept them);
    `io` is the model's inputs and outputs under the config's task. None: it trains alone."""
    if unbatchable(config) is not None:
        return None
    return tuple(shared_fields(config).values()), io


def partition(configs: Sequence[RunConfig], max_size: int | None = None) -> list[list[int]]:
    """The indices of `configs` in groups that train_group accepts, in the configs' order, each
    of at most `max_size` members (None: no limit; a larger set is split into near-equal
    groups). An unbatchable config is a group of its own: train it with train()."""
    if max_size is not None and max_size < 1:
        raise ConfigError(f"a group holds at least one run; got max_size={max_size}")
    ios: dict[tuple, ModelIO] = {}
    alone, by_key = [], {}
    for i, config in enumerate(configs):
        if unbatchable(config) is not None:
            alone.append([i])
            continue
        shape = (config.task, config.task_config)
        if shape not in ios:
            with torch.random.fork_rng():  # building a task draws nothing the caller sees
                ios[shape] = make_task(config.task, config.task_config, seed=config.seed, device="cpu").io
        by_key.setdefault(group_key(config, ios[shape]), []).append(i)
    groups = alone
    for members in by_key.values():
        n = -(-len(members) // max_size) if max_size else 1
        groups += [members[k * len(members) // n:(k + 1) * len(members) // n] for k in range(n)]
    return sorted(groups)


def check_group(configs: list[RunConfig], outs: list[Path]) -> None:
    """Refuse a group whose members cannot share a batched pass, naming the field."""
    if not configs:
        raise ConfigError("train_group needs at least one config")
    if len(configs) != len(outs):
        raise ConfigError(f"train_group got {len(configs)} configs and {len(outs)} run directories; give one directory per config")
    seen: dict[Path, int] = {}
    for i, out in enumerate(outs):
        resolved = out.resolve()
        if resolved in seen:
            raise ConfigError(f"members {seen[resolved]} and {i} both write to {out}; give each member its own run directory")
        seen[resolved] = i
    first = shared_fields(configs[0])
    for i, config in enumerate(configs[1:], start=1):
        for name, theirs in shared_fields(config).items():
            if first[name] != theirs:
                raise ConfigError(
                    f"member {i} has {name}={theirs!r} but member 0 has {name}={first[name]!r}; members of a group "
                    f"share the model's shapes and the step count (they may differ in seed, optimiser settings, "
                    f"interventions, {', '.join(INIT_ONLY_MODEL_FIELDS)} and task parameters that keep the shapes)"
                )
    for i, config in enumerate(configs):
        reason = unbatchable(config)
        if reason is not None:
            raise ConfigError(f"member {i}: {reason}; train that config alone with train()")


def check_model_inputs(members: list[TrainingRun]) -> None:
    """Task parameters may differ only where the inputs the model sees keep their shapes."""
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        for f in dataclasses.fields(first.task.io):
            ours, theirs = getattr(first.task.io, f.name), getattr(member.task.io, f.name)
            if ours != theirs:
                differ = [f"task.{g.name}" for g in dataclasses.fields(first.config.task_config)
                          if getattr(first.config.task_config, g.name) != getattr(member.config.task_config, g.name)]
                raise ConfigError(
                    f"member {i}'s task gives the model {f.name}={theirs!r} but member 0's gives {f.name}={ours!r} "
                    f"(their task configs differ in {', '.join(differ) or 'nothing'}); members of a group share the "
                    "model's input shapes"
                )
