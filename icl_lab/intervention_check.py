"""Every member's interventions checked against that member's model and task, before any run
starts (sweeps and experiments call it while checking their input).

    check_interventions([("member 'seed=0-condition=induction'", config), ...])

Each distinct (task, task config, model) is built once on the CPU and each distinct set of specs
validated on it by the intervention engine (hook names, heads, positions, targets); the first
problem is a ConfigError prefixed with its member's label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from icl_lab.config import ConfigError
from icl_lab.run_config import RunConfig


def check_interventions(members: Iterable[tuple[str, RunConfig]]) -> None:
    """Refuse the first member whose interventions its model cannot take, as "LABEL: problem"."""
    import torch

    from icl_lab.models import build_model
    from icl_lab.tasks import make_task
    from interventions.engine import InterventionEngine

    built: dict[str, tuple] = {}  # (task, task_config, model) as JSON -> (model, task)
    checked: set[str] = set()
    for label, config in members:
        if not config.interventions:
            continue
        record = config.to_dict()
        shape = json.dumps([record["task"], record["task_config"], record["model"]], sort_keys=True)
        key = json.dumps([shape, record["interventions"]], sort_keys=True)
        if key in checked:
            continue
        checked.add(key)
        try:
            if shape not in built:
                with torch.random.fork_rng():  # leave the caller's random state alone
                    task = make_task(config.task, config.task_config, seed=config.seed, device="cpu")
                    built[shape] = (build_model(config.model, task.io, seed=config.seed + 1, device="cpu"), task)
            InterventionEngine(*built[shape], config.interventions).close()
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
