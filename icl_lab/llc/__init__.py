"""The local learning coefficient (LLC): estimates at checkpoints, refined per head or layer,
with or without a run's clamps (devinterp's SGLD; docs/measures.md, "Local learning coefficient").

    from icl_lab.llc import LLCConfig, estimate_llc, sampling_pool
    pool = sampling_pool(task, LLCConfig(), seed=0)
    estimate_llc(model, task, LLCConfig(), pool, part="L1H0").llc

In runs: the `llc` measure (live with `--set measures=...,llc`, post hoc with
`icl-lab measure RUN --measures llc`), settings in the run config's `llc` section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from icl_lab.llc.config import LLCConfig, is_estimate, metric_name
from icl_lab.llc.sampling import LLCEstimate, estimate_llc, read_estimate, require_devinterp, sampling_pool

# the sampling pool's seed, offset from the run's (the lab derives its other seeds from it too)
POOL_SEED_OFFSET = 4241


@dataclass
class LLCContext:
    """What the `llc` measure needs beyond the model and the task: its settings, the step it
    measures (for messages and clamp windows), the pool's seed, and, for a clamped run with
    `clamps=on`, a function that attaches the run's clamps to a model copy."""

    config: LLCConfig = field(default_factory=LLCConfig)
    step: int = -1
    pool_seed: int = POOL_SEED_OFFSET
    attach_clamps: Callable | None = None
    clamped_run: bool = False  # the run has interventions (names its clamps-off estimates)
    _pool: object = None

    def pool(self, task):
        if self._pool is None:
            self._pool = sampling_pool(task, self.config, self.pool_seed)
        return self._pool


def clamp_attacher(specs, task, step: int, running_means: dict | None, load_reference=None) -> Callable:
    """`attach(model) -> engine`: the run's intervention specs on a model copy, switched to
    (step, "train") with the running-mean targets as they stood at that step."""
    from interventions.engine import InterventionEngine

    def attach(model):
        engine = InterventionEngine(model, task, specs, load_reference=load_reference)
        device = next(model.parameters()).device
        engine.set_running_means({k: v.detach().to(device).clone() for k, v in (running_means or {}).items()})
        engine.set_step(step, "train")
        return engine

    return attach


__all__ = [
    "LLCConfig",
    "LLCContext",
    "LLCEstimate",
    "clamp_attacher",
    "estimate_llc",
    "is_estimate",
    "metric_name",
    "read_estimate",
    "require_devinterp",
    "sampling_pool",
]
