"""summary.json: what a finished run found (transitions, milestones, LLC stages, final values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icl_lab.phases import Reading, find_transience
from icl_lab.run_config import RunConfig
from icl_lab.stages import stages_of_run
from icl_lab.store import load_metrics
from icl_lab.tasks.base import Milestone


def summarize(run_dir: Path, config: RunConfig, wall_seconds: float, readings: dict[str, Reading] | None = None,
              milestones: tuple[Milestone, ...] = ()) -> dict[str, Any]:
    """Transitions of the tracked metrics (each read with the task's `readings` entry for it,
    else phases.Reading()), whether each rose and then lastingly fell back (`transience`), the first evaluation at which each of the task's `milestones` was
    reached (`first_steps`, by Milestone.key), and the final values of every metric."""
    metrics = load_metrics(run_dir)
    transitions, transience = {}, {}
    for name in config.track:
        curve = metrics.filter(metrics["metric"] == name).sort("step")
        reading = (readings or {}).get(name, Reading())
        found = reading.find(curve["step"].to_numpy(), curve["value"].to_numpy())
        transience[name] = find_transience(curve["step"].to_numpy(), curve["value"].to_numpy(), direction=reading.direction).to_dict()
        entry = found.to_dict()
        if found.transition_step is not None:
            entry["transition_sequences"] = found.transition_step * config.train.batch_size
        transitions[name] = entry
    first_steps = {}
    for milestone in milestones:
        reached = metrics.filter((metrics["metric"] == milestone.metric) & (metrics["value"] >= milestone.level))
        if reached.height:
            first_steps[milestone.key] = int(reached["step"].min())
    last_step = int(metrics["step"].max()) if metrics.height else 0
    final = metrics.filter(metrics["step"] == last_step)
    stages = stages_of_run(metrics)  # LLC stage boundaries (Hoogland et al.), when the run has LLC estimates
    return {
        **({"stages": stages} if stages else {}),
        "transitions": transitions,
        "transience": transience,  # a rise that later falls back (phases.find_transience), per tracked metric
        "first_steps": first_steps,
        "final": dict(zip(final["metric"].to_list(), final["value"].to_list())),
        "final_step": last_step,
        "wall_seconds": wall_seconds,
    }
