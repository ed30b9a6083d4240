"""LLCConfig: the SGLD sampler's settings for the local learning coefficient, a run-config section.

Set with `--set llc.KEY=VALUE` (train, measure, experiment). The defaults come from the
calibration recorded in docs/measures.md ("Local learning coefficient"): an ε × nβ sweep at
three checkpoints of the bursty reference run (`benchmarks/llc_calibration.py`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from icl_lab.config import ConfigError

# a refined part: one head (L1H0), one layer (L1), the input side (embed) or the readout (unembed)
PART_PATTERN = re.compile(r"^(L\d+H\d+|L\d+|embed|unembed)$")
CLAMP_CHOICES = ("on", "off")


@dataclass(frozen=True)
class LLCConfig:
    """How the LLC is estimated (Lau et al. 2023; devinterp's SGLD, `icl_lab/llc/sampling.py`).

    lr: the SGLD step size ε; n_beta: the inverse temperature nβ; localization: γ, the pull
    γ/2‖w − w*‖² toward the checkpoint's weights; num_chains × (num_burnin_steps +
    num_draws) SGLD steps of `batch_size` sequences from a fixed pool of `dataset_size`
    training sequences (drawn with the run's seed), λ̂ from the draws after burn-in.
    parts: refined estimates besides the whole model (`L1H0`: one head's Q, K, V rows and O
    columns; `L1`: one block; `embed`: input map + embeddings; `unembed`: the readout);
    whole_model: also the whole model's λ̂ (off: only the parts').
    data: `train` (the training distribution), or an evaluation set's name for the
    data-refined LLC on that set. clamps: `on` samples with the run's clamps active as in
    training at the checkpoint's step; `off` samples the bare weights.
    max_loss_rise: a chain whose mean loss over its last quarter exceeds the checkpoint's loss
    by more than this (nats) has run away: reported as diverged, never stored as a number.
    """

    lr: float = 3e-4
    n_beta: float = 100.0
    localization: float = 100.0
    num_chains: int = 2
    num_draws: int = 200
    num_burnin_steps: int = 100
    batch_size: int = 64
    dataset_size: int = 4096
    init_loss_batches: int = 16
    parts: tuple[str, ...] = ()
    whole_model: bool = True  # the whole model's λ̂ besides the parts' (off: the parts alone)
    data: str = "train"
    clamps: str = "on"
    max_loss_rise: float = 5.0
    seed: int = 100

    def __post_init__(self) -> None:
        for name in ("lr", "n_beta", "max_loss_rise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"llc.{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.localization) and self.localization >= 0):
            raise ConfigError(f"llc.localization must be a finite number >= 0, got {self.localization!r}")
        for name in ("num_chains", "num_draws", "batch_size", "dataset_size", "init_loss_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"llc.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_burnin_steps < 0:
            raise ConfigError(f"llc.num_burnin_steps must be >= 0, got {self.num_burnin_steps}")
        if self.batch_size > self.dataset_size:
            raise ConfigError(f"llc.batch_size={self.batch_size} is larger than llc.dataset_size={self.dataset_size}")
        if self.clamps not in CLAMP_CHOICES:
            raise ConfigError(f"llc.clamps={self.clamps!r} is not one of {', '.join(CLAMP_CHOICES)}")
        bad = [p for p in self.parts if not PART_PATTERN.match(p)]
        if bad:
            raise ConfigError(f"llc.parts: {', '.join(map(repr, bad))} not a part; write L<layer>H<head>, L<layer>, embed or unembed")
        if not self.whole_model and not self.parts:
            raise ConfigError("llc.whole_model=false needs llc.parts: nothing would be estimated")
        if len(set(self.parts)) != len(self.parts):
            raise ConfigError(f"llc.parts lists a part twice: {list(self.parts)}")

    @property
    def sgld_steps(self) -> int:
        """SGLD steps per estimate (every chain, burn-in included), for cost figures."""
        return self.num_chains * (self.num_burnin_steps + self.num_draws)


def metric_name(part: str | None, data: str, suffix: str = "", unclamped: bool = False) -> str:
    """`llc`, `llc.L1H0`, `llc@icl`, `llc.L1H0@icl`, then `.std` / `.chain0` / `.diverged`;
    `llc_unclamped...` for a clamped run sampled with its clamps off."""
    name = ("llc_unclamped" if unclamped else "llc") + (f".{part}" if part else "") + ("" if data == "train" else f"@{data}")
    return name + (f".{suffix}" if suffix else "")


SUFFIXES = ("std", "diverged")


def is_estimate(metric: str) -> bool:
    """Whether a metric name is an LLC estimate itself (not its sd, a chain or a flag)."""
    if not (metric == "llc" or metric.startswith(("llc.", "llc@", "llc_unclamped"))):
        return False
    last = metric.rsplit(".", 1)[-1] if "." in metric else ""
    return last not in SUFFIXES and not last.startswith("chain")
