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
    return {
        "intervention_calls": {f"{i}|{name}|{phase}": n for (i, name, phase), n in engine.calls.items()},
        "intervention_running": {f"{i}|{name}": t for (i, name), t in engine.running_means().items()},
    }


def restore_engine_state(engine: InterventionEngine, state: TrainingState) -> None:
    for key, n in state.intervention_calls.items():
        i, name, phase = key.split("|")
        engine.calls[(int(i), name, phase)] = n
    running = {}
    for key, tensor in state.intervention_running.items():
        i, name = key.split("|")
        running[(int(i), name)] = tensor.to(next(engine.model.parameters()).device)
    engine.set_running_means(running)
