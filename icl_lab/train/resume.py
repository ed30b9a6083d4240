"""Resume and extend: continuing a stopped run, or training a finished one on past its length.

A resumed run restores everything its newest intact checkpoint holds (weights, optimizer,
schedule, data stream, loss window, clamp state), so the finished run equals one that never
stopped; `extend` (in loop.py) raises train.steps first, recorded here in config.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
import torch

from icl_lab.checkpoints import run_config_of
from icl_lab.config import ConfigError
from icl_lab.provenance import provenance_record
from icl_lab.run_config import RunConfig
from icl_lab.stored_config import check_stored_config
from icl_lab.store import RunError, TrainingState, atomic_write_json, intact_state_steps, paths, read_config
from icl_lab.train.engine_state import restore_engine_state


def check_extension(config: RunConfig, steps: int) -> None:
    """Refuse, before anything is written, an extension that would not equal a longer run."""
    if steps <= config.train.steps:
        raise ConfigError(f"--steps {steps} must be more than the run's train.steps={config.train.steps}")
    if config.train.schedule != "constant":
        raise ConfigError(
            f"cannot extend a run with train.schedule={config.train.schedule!r}: its learning rate decays over "
            f"train.steps={config.train.steps}, so a longer run would have had another schedule; valid: 'constant'"
        )


def record_extension(out: Path, config: RunConfig, device: torch.device, extend_from: int) -> None:
    """config.json (under the run's lock): train.steps raised to `config`'s, and one more entry
    in its `extended` list (from, to, and this part's versions, git commit, device and time)."""
    record = read_config(out)
    if record.get("train", {}).get("steps") != extend_from:
        raise ConfigError(f"cannot extend {out}: its train.steps changed to {record.get('train', {}).get('steps')} since it was read")
    record["train"] = {**record["train"], "steps": config.train.steps}
    record["extended"] = [*record.get("extended", []), {"from": extend_from, "to": config.train.steps, **provenance_record(device)}]
    atomic_write_json(paths(out).config, record)


def resumable_step(out: Path, config: RunConfig) -> int:
    """The newest step whose weights and training state are intact, after checking the
    stored config. A run stopped before its first complete checkpoint gives -1 (it starts
    again from step 0, which is exact too); one whose checkpoints are all unreadable is
    refused. Each newer checkpoint skipped is reported on stderr with the reason."""
    check_stored_config(out, run_config_of(out).to_dict(), config.to_dict(), doing="cannot resume it with this config")
    steps, skipped = intact_state_steps(out)
    newest = steps[-1] if steps else -1
    for line in skipped:
        if int(line.split()[1].rstrip(":")) > newest:
            print(f"icl-lab: skipping the checkpoint at {line}", file=sys.stderr)
    if newest < 0 and skipped:  # never replace checkpoints that could not be read
        raise RunError(f"{out} has no intact checkpoint with training state to resume from ({'; '.join(skipped[-3:])})")
    if newest < 0:
        print(f"icl-lab: {out} was stopped before its first checkpoint; starting it again from step 0", file=sys.stderr)
    return newest


def check_training_state(run, state: TrainingState, step: int, record: Path) -> None:
    """Refuse, naming `record`, a training state that is not this run's at `step`, before any
    of it is applied: a checksum-valid file can still hold another run's state (other shapes,
    another optimizer, an RNG state of another size). Checks the kinds and shapes of everything
    `restore_training_state` loads against the run as built from its config."""
    problems = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    def tensor_like(value, like: torch.Tensor, what: str) -> None:
        expect(isinstance(value, torch.Tensor) and value.shape == like.shape and value.dtype == like.dtype,
               f"{what} is {_describe(value)}, this run's is {_describe(like)}")

    expect(state.step == step, f"step is {state.step!r}, its file says {step}")
    tensor_like(state.data_generator, run.data_gen.get_state(), "the data generator state")
    tensor_like(state.torch_rng, torch.get_rng_state(), "the global RNG state")
    tensor_like(state.loss_sum, torch.zeros((), dtype=run.loss_sum.dtype), "the loss window's sum")
    tensor_like(state.first_nonfinite_step, torch.zeros((), dtype=run.first_nonfinite.dtype), "first_nonfinite_step")
    expect(type(state.loss_count) is int and 0 <= state.loss_count <= step, f"loss_count is {state.loss_count!r}")
    if isinstance(state.first_nonfinite_step, torch.Tensor) and state.first_nonfinite_step.numel() == 1:
        first = int(state.first_nonfinite_step)  # -1, or a step at most this one (a checkpoint may come before
        expect(-1 <= first <= step, f"first_nonfinite_step is {first}, after the checkpoint's step {step}")  # the evaluation that fails)
        evals = state.eval_steps if isinstance(state.eval_steps, list) else []
        if run.cfg.nonfinite_loss == "fail" and first >= 0 and any(type(e) is int and e >= first for e in evals):
            problems.append(f"first_nonfinite_step is {first}, but an evaluation after it would have failed this run "
                            "(train.nonfinite_loss=fail)")
    expect(isinstance(state.eval_steps, list) and all(type(s) is int and 0 <= s <= step for s in state.eval_steps),
           f"eval_steps is not a list of steps up to {step}")
    own = run.optimizer.state_dict()
    stored = state.optimizer
    if not (isinstance(stored, dict) and isinstance(stored.get("state"), dict) and isinstance(stored.get("param_groups"), list)):
        problems.append(f"the optimizer state is {_describe(stored)}, not an optimizer's state_dict")
    else:
        expect([sorted(g) if isinstance(g, dict) else g for g in stored["param_groups"]] == [sorted(g) for g in own["param_groups"]],
               "the optimizer's parameter groups are another optimizer's")
        params = [p for group in run.optimizer.param_groups for p in group["params"]]
        for index, entry in stored["state"].items():
            if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(entry, dict)):
                problems.append(f"the optimizer state has an entry {index!r} for no parameter of this model")
                continue
            for name, value in entry.items():
                if name == "step":  # Adam's count of updates: a scalar
                    expect(isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1),
                           f"optimizer step of parameter {index} is {_describe(value)}, not a count")
                elif isinstance(value, torch.Tensor):
                    expect(value.shape == params[index].shape, f"optimizer {name} of parameter {index} is "
                           f"{list(value.shape)}, the parameter {list(params[index].shape)}")
                else:
                    problems.append(f"optimizer {name} of parameter {index} is {_describe(value)}")
    own_scheduler = run.scheduler.state_dict()
    expect(isinstance(state.scheduler, dict) and sorted(state.scheduler) == sorted(own_scheduler),
           f"the scheduler state has keys {sorted(state.scheduler) if isinstance(state.scheduler, dict) else _describe(state.scheduler)}, "
           f"this run's {sorted(own_scheduler)}")
    expect(isinstance(state.intervention_calls, dict) and all(type(n) is int for n in state.intervention_calls.values()),
           "the clamp call counts are not counts")
    expect(isinstance(state.intervention_running, dict) and all(isinstance(t, torch.Tensor) for t in state.intervention_running.values()),
           "the clamps' running means are not tensors")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RunError(f"{record}: not this run's training state at step {step}: {'; '.join(problems[:3])}{more}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def restore_training_state(run, state: TrainingState) -> None:
    """Everything but the weights into `run` (a TrainingRun), as the checkpoint stored it:
    optimizer, schedule, data stream, global RNG, loss window, evaluation steps, clamp engine
    (after `check_training_state`)."""
    run.optimizer.load_state_dict(state.optimizer)
    run.scheduler.load_state_dict(state.scheduler)
    run.data_gen.set_state(state.data_generator)
    torch.set_rng_state(state.torch_rng)
    run.loss_sum, run.loss_count, run.eval_steps = state.loss_sum.to(run.device), state.loss_count, list(state.eval_steps)
    run.first_nonfinite = state.first_nonfinite_step.to(run.device)
    if run.engine is not None:
        restore_engine_state(run.engine, state)
