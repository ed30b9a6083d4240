"""Training state saved with each checkpoint: tensors in safetensors, plain data in JSON, with
the sha256 of both files, so resume can tell an intact checkpoint from a torn one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icl_lab.store.files import _load_safetensors, checkpoint_steps, read_json, sha256_of
from icl_lab.store.layout import RunError, paths


def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Nested state (dicts with any keys, lists, tuples, tensors) -> JSON-able data with
    tensors moved into `tensors` under dotted names. Dicts whose keys are not all strings
    (optimizer states keyed by parameter index) and tuples are tagged so they come back."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split_tensors(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in training state")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


@dataclass
class TrainingState:
    """What resume needs beyond the weights, saved with each checkpoint."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    data_generator: torch.Tensor  # torch.Generator.get_state()
    torch_rng: torch.Tensor
    loss_sum: torch.Tensor  # training loss summed since the last evaluation (device scalar)
    loss_count: int
    eval_steps: list[int]
    first_nonfinite_step: torch.Tensor  # -1 while every training loss has been finite
    intervention_calls: dict[str, int]  # "spec|hook|phase" -> calls
    intervention_running: dict[str, torch.Tensor]  # running-mean clamp targets

    def to_parts(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {}
        data = {name: _split_tensors(getattr(self, name), tensors, name) for name in self.__dataclass_fields__}
        return data, tensors

    @classmethod
    def from_parts(cls, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainingState:
        return cls(**{name: _join_tensors(data[name], tensors) for name in cls.__dataclass_fields__})


def intact_state_steps(run_dir: str | Path) -> tuple[list[int], list[str]]:
    """(steps whose weights and training state are complete and match their checksums, sorted;
    one line for each checkpoint skipped and why)."""
    p = paths(run_dir)
    good, skipped = [], []
    for step in checkpoint_steps(run_dir):
        record = p.state_record(step)
        if not record.exists():
            pickled = p.pickled_state(step)
            if pickled.exists():  # the lab's old format: pickle can run code, so it is never read
                skipped.append(f"step {step}: {pickled} is a pickle file (an old or foreign format), which icl-lab does not read")
            continue  # a weights-only checkpoint (or one killed before its state was written)
        try:
            sums = read_json(record).get("sha256")
            if not (isinstance(sums, dict) and all(isinstance(sums.get(k), str) for k in ("weights", "state"))):
                raise RunError(f"{record}: its sha256 entry is not the checksums of the weights and state")
        except RunError as err:
            skipped.append(f"step {step}: {record.name} is unreadable ({str(err).removeprefix(str(record) + ': ')})")
            continue
        bad = [f.name for f, key in ((p.weights(step), "weights"), (p.state_tensors(step), "state"))
               if not f.exists() or sha256_of(f) != sums.get(key)]
        if bad:
            skipped.append(f"step {step}: {', '.join(bad)} missing or does not match its checksum")
        else:
            good.append(step)
    return good, skipped


def load_training_state(run_dir: str | Path, step: int) -> TrainingState | None:
    """The training state saved with checkpoint `step`; None when it has none. A state only
    in the old pickle format is refused (unpickling a file can run code)."""
    p = paths(run_dir)
    data = read_json(p.state_record(step))
    if data is None:
        if p.pickled_state(step).exists():
            raise RunError(f"{p.pickled_state(step)}: a pickle file (an old or foreign format), which icl-lab does not read")
        return None
    try:
        return TrainingState.from_parts(data["state"], _load_safetensors(p.state_tensors(step)))
    except (KeyError, TypeError) as err:
        raise RunError(f"{p.state_record(step)}: not a training state written by icl-lab ({err})") from None
