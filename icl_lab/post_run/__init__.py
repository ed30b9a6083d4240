"""Post-run steps: work on a finished run, selected by the task's capabilities (registry.py).

The lab's own steps are registered by importing their modules here, as icl_lab/measures does
for measures; a new step is its function with `@register_post_run_step` and one import line.
"""

from icl_lab.grokking import posthoc as _grokking_posthoc  # noqa: F401  (registers final_key_losses)
from icl_lab.post_run.registry import (
    POST_RUN_STEPS,
    PostRunStep,
    post_run_steps_for,
    register_post_run_step,
    run_post_run_steps,
)

__all__ = ["POST_RUN_STEPS", "PostRunStep", "post_run_steps_for", "register_post_run_step", "run_post_run_steps"]
