"""The clamp engine's state in a checkpoint: call counts and running-mean targets.

The trainer stores it with every checkpoint; resume, `icl-lab measure` and `load_run` restore
it, so a clamp with a running-mean target acts on a restored model as it did live.
"""

from __future__ import annotations

from typing import Any

from icl_lab.store import TrainingState
from interventions.engine import InterventionEngine


def engine_state(engine: InterventionEngine | None) -> dict[str, Any]:
    """The clamp engine's call counts and running-mean targets, keyed by strings."""
    if engine is None:
        return {"intervention_calls": {}, "intervention_running": {}}
    return engine.state_dict()  # the keys of TrainingState's intervention_calls / intervention_running


def restore_engine_state(engine: InterventionEngine, state: TrainingState) -> None:
    engine.load_state_dict({"intervention_calls": state.intervention_calls, "intervention_running": state.intervention_running})
