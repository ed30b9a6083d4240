"""Interventions: declarative specs for clamping (during training), ablation and patching.

    from interventions import Intervention
    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query",
                         target="induction", steps=(0, 2000))

One mechanism for all of them: a spec says which activation, which heads and positions, what
it becomes, when, how much and how gradients flow; `InterventionEngine` turns specs into
TransformerLens forward hooks on a LabModel.
"""

from interventions.engine import InterventionEngine, resolve_positions
from interventions.spec import (
    TARGETS,
    Intervention,
    interventions_from_toml,
    interventions_to_toml,
    load_interventions,
)

__all__ = [
    "TARGETS",
    "Intervention",
    "InterventionEngine",
    "interventions_from_toml",
    "interventions_to_toml",
    "load_interventions",
    "resolve_positions",
]
