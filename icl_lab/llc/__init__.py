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

    @classmethod
    def for_run(cls, config) -> LLCContext:
        """The context of a run (a RunConfig): its llc settings and pool seed."""
        return cls(config.llc, pool_seed=config.seed + POOL_SEED_OFFSET, clamped_run=bool(config.interventions))

    def at(self, step: int, specs, task, engine) -> dict:
        """The measure options for an evaluation at `step`: with the run's clamp engine, its
        specs and running means as they stand, for the sampler's model copies."""
        self.step = step
        self.attach_clamps = None if engine is None else clamp_attacher(specs, task, step, engine.running_means(), engine.load_reference)
        return {"llc": self}


def check_settings(config) -> None:
    """Everything a run config's `llc` measure needs, before any work: devinterp installed, the
    evaluation set it samples on, parts the model has (ConfigError naming the value)."""
    from icl_lab.config import ConfigError
    from icl_lab.llc.parts import check_parts
    from icl_lab.tasks import task_class

    require_devinterp()
    sets = task_class(config.task).eval_set_names
    if config.llc.data != "train" and config.llc.data not in sets:
        raise ConfigError(f"llc.data={config.llc.data!r} is not train or one of the task's evaluation sets: {', '.join(sets)}")
    check_parts(config.model, config.llc.parts)


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
    "check_settings",
    "clamp_attacher",
    "estimate_llc",
    "is_estimate",
    "metric_name",
    "read_estimate",
    "require_devinterp",
    "sampling_pool",
]
