"""Targets whose value is a number or a tensor known without another forward: `zero`,
`constant`, `mean` (over this forward's batch), `running_mean` (over training batches) and
`file` (a stored tensor)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interventions.errors import ConfigError
from interventions.targets.base import Target
from interventions.targets.registry import register

if TYPE_CHECKING:
    from interventions.spec import Intervention


@register
class Zero(Target):
    """Every selected entry becomes 0 (zero ablation)."""

    name = "zero"

    def value(self, act, site, engine):
        return torch.zeros((), device=act.device), None


@register
class Constant(Target):
    """Every selected entry becomes the spec's `value`."""

    name = "constant"

    def value(self, act, site, engine):
        return torch.full((), self.spec.value, device=act.device), None


@register
class Mean(Target):
    """The mean over the batch of this forward's activation."""

    name = "mean"

    def value(self, act, site, engine):
        return act.detach().mean(dim=0, keepdim=True), None


@register
class RunningMean(Target):
    """m <- momentum · m + (1 − momentum) · (batch mean), updated on training forwards only;
    the first forward sets m to its batch mean."""

    name = "running_mean"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.means: dict[str, torch.Tensor] = {}  # hook name -> [1, *shape]

    def value(self, act, site, engine):
        batch_mean = act.detach().mean(dim=0, keepdim=True)
        if site.hook not in self.means:
            self.means[site.hook] = batch_mean
        elif engine.phase == "train":
            momentum = self.spec.momentum
            self.means[site.hook] = momentum * self.means[site.hook] + (1 - momentum) * batch_mean
        return self.means[site.hook], None

    def state(self):
        return dict(self.means)

    def load_state(self, state):
        self.means = dict(state)


@register
class File(Target):
    """A tensor from `file` (.safetensors or .npz, tensor `key`; or a .npy array), broadcast to
    the activation."""

    name = "file"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.tensors: dict[str, torch.Tensor] = {}  # hook name -> tensor on the model's device

    @classmethod
    def check_spec(cls, spec):
        if not spec.file:
            raise ConfigError(f"intervention {spec.label}: target 'file' needs file")
        if Path(spec.file).suffix not in TENSOR_FILE_FORMATS:  # read (names, shapes) when validated against the model
            raise ConfigError(f"intervention {spec.label}: target file {spec.file} is not one of {', '.join(TENSOR_FILE_FORMATS)} "
                              "(pickle-based files such as .pt are not read; save the tensor with safetensors.torch.save_file)")

    def validate(self, site, engine):
        tensor = _load_tensor_file(self.spec.file, self.spec.key, site.where)
        full = (1, *site.layout.shape)
        try:
            ok = torch.broadcast_shapes(tuple(tensor.shape), full) == full
        except RuntimeError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{site.where}: target tensor from {self.spec.file} has shape {list(tensor.shape)}, which does "
                f"not broadcast to the activation's [batch, {', '.join(map(str, site.layout.shape))}]"
            )
        self.tensors[site.hook] = tensor.to(device=engine.device, dtype=torch.float32)

    def value(self, act, site, engine):
        return self.tensors[site.hook], None


TENSOR_FILE_FORMATS = (".safetensors", ".npy", ".npz")  # formats that hold data only: nothing in them runs


def _load_tensor_file(path: str, key: str, where: str) -> torch.Tensor:
    """The tensor `key` of a .safetensors or .npz file (the only one when `key` is empty), or the
    array of a .npy file; ConfigError naming the file for any other format (a pickle, e.g.
    torch's .pt, can run code when read) or a file that does not parse."""
    p = Path(path)
    if p.suffix not in TENSOR_FILE_FORMATS:
        raise ConfigError(f"{where}: target file {path} is not one of {', '.join(TENSOR_FILE_FORMATS)} "
                          "(pickle-based files such as .pt are not read; save the tensor with safetensors.torch.save_file)")
    if not p.is_file():
        raise ConfigError(f"{where}: target file {path} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(p))
        elif p.suffix == ".npz":
            import numpy as np

            with np.load(p, allow_pickle=False) as archive:
                tensors = {name: torch.from_numpy(archive[name].copy()) for name in archive.files}
        else:
            import numpy as np

            return _as_float_tensor(torch.from_numpy(np.load(p, allow_pickle=False)), path, where)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001  (safetensors' and numpy's header errors: one line)
        raise ConfigError(f"{where}: target file {path} is not a readable {p.suffix} file ({type(err).__name__}: "
                          f"{(str(err).strip().splitlines() or [''])[0]})") from None
    if not key and len(tensors) == 1:
        return _as_float_tensor(next(iter(tensors.values())), path, where)
    if key not in tensors:
        raise ConfigError(f"{where}: {path} has no tensor {key!r}; it has {', '.join(sorted(tensors)) or 'none'}")
    return _as_float_tensor(tensors[key], path, where)


def _as_float_tensor(tensor: torch.Tensor, path: str, where: str) -> torch.Tensor:
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ConfigError(f"{where}: the tensor in {path} has dtype {tensor.dtype}, not a number type")
    return tensor
