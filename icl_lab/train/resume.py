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


def restore_training_state(run, state: TrainingState) -> None:
    """Everything but the weights into `run` (a TrainingRun), as the checkpoint stored it:
    optimizer, schedule, data stream, global RNG, loss window, evaluation steps, clamp engine."""
    run.optimizer.load_state_dict(state.optimizer)
    run.scheduler.load_state_dict(state.scheduler)
    run.data_gen.set_state(state.data_generator)
    torch.set_rng_state(state.torch_rng)
    run.loss_sum, run.loss_count, run.eval_steps = state.loss_sum.to(run.device), state.loss_count, list(state.eval_steps)
    run.first_nonfinite = state.first_nonfinite_step.to(run.device)
    if run.engine is not None:
        restore_engine_state(run.engine, state)
