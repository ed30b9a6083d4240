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
    """A tensor from `file` (.safetensors, tensor `key`; or a torch .pt file), broadcast to
    the activation."""

    name = "file"

    def __init__(self, spec: Intervention):
        super().__init__(spec)
        self.tensors: dict[str, torch.Tensor] = {}  # hook name -> tensor on the model's device

    @classmethod
    def check_spec(cls, spec):
        if not spec.file:
            raise ConfigError(f"intervention {spec.label}: target 'file' needs file")

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


def _load_tensor_file(path: str, key: str, where: str) -> torch.Tensor:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where}: target file {path} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        if not key and len(tensors) == 1:
            return next(iter(tensors.values()))
        if key not in tensors:
            raise ConfigError(f"{where}: {path} has no tensor {key!r}; it has {', '.join(sorted(tensors))}")
        return tensors[key]
    tensor = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(tensor, dict):
        if key not in tensor:
            raise ConfigError(f"{where}: {path} has no tensor {key!r}; it has {', '.join(sorted(tensor))}")
        tensor = tensor[key]
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"{where}: {path} does not hold a tensor")
    return tensor
