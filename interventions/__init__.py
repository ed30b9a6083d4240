"""Interventions: declarative specs for clamping (during training), ablation and patching.

    from interventions import Intervention
    clamp = Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query",
                         target="induction", steps=(0, 2000))

One mechanism for all of them: a spec says which activation, which heads and positions, what
it becomes, when, how much and how gradients flow; `InterventionEngine` turns specs into
TransformerLens forward hooks on any model with the `interventions.protocols.HookedModel`
capabilities. What the selection becomes is a `Target` class registered under the spec's
`target` name (`interventions.targets`; `describe_targets()` lists them). Hooks are added in
a fixed order when the engine is built (`interventions.engine`, `interventions.hooks`). The
package does not depend on `icl_lab`.
"""

from interventions.engine import InterventionEngine
from interventions.errors import ConfigError
from interventions.selection import resolve_positions
from interventions.spec import (
    TARGETS,
    Intervention,
    interventions_from_toml,
    interventions_to_toml,
    load_interventions,
)
from interventions.targets import TARGET_CLASSES, Target, describe_targets, register, target_names

__all__ = [
    "TARGETS",
    "TARGET_CLASSES",
    "ConfigError",
    "Intervention",
    "InterventionEngine",
    "Target",
    "describe_targets",
    "interventions_from_toml",
    "interventions_to_toml",
    "load_interventions",
    "register",
    "resolve_positions",
    "target_names",
]
