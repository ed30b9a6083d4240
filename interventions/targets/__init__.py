"""What a clamp's selected entries become: one class per spec `target`, found in a registry.

    from interventions.targets import Target, register

    @register
    class Zero(Target):  # its docstring's first sentence describes it in describe_targets()
        name = "zero"

        def value(self, act, site, engine):
            return torch.zeros((), device=act.device), None

The modules, one family each:
    base           the `Target` base class (what the engine calls) and the capability check
    registry       name -> class; `register`, `target_names`, `describe_targets`
    values         zero, constant, mean, running_mean, file
    patterns       the task's ideal attention patterns (previous_token, induction, ...)
    same_forward   targets reading other hooks of the same forward (perfect_copying, ...)
    other_forward  targets computed by another forward first (checkpoint, resample, ...)

`describe_targets()` lists every registered target with its one-line description.
"""

# importing a family's module registers its targets, in this order (the order `target_names` lists)
from interventions.targets import values, patterns, same_forward, other_forward  # noqa: F401, I001
from interventions.targets.base import Target, require_capability
from interventions.targets.registry import TARGET_CLASSES, describe_targets, register, target_names

__all__ = ["TARGET_CLASSES", "Target", "describe_targets", "register", "require_capability", "target_names"]
