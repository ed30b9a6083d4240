"""The `llc` measure: the local learning coefficient of the model as it stands (whole, and refined
to the parts the run's `llc.parts` lists), from devinterp's SGLD (icl_lab/llc/).

    λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*))       (Lau et al. 2023; Hoogland et al. 2025)

The weight-refined λ̂ of a part (Wang et al. 2024) samples only that part's weights, the rest
held at w*; the data-refined one (`llc.data=<eval set>`) takes L_n on that evaluation set.
Metrics: `llc`, `llc.std` (sd over chains), `llc.chain{i}`, `llc.<part>` ..., `llc@<set>` ...;
a diverged estimate stores `llc[...].diverged` = 1 and no value. A clamped run measured with
`llc.clamps=off` writes `llc_unclamped...`. Costly (seconds per checkpoint): not in any preset's
measures; add it live with `--set measures=...,llc` or post hoc with `icl-lab measure`.
"""

from __future__ import annotations

import sys

import torch

from icl_lab.measures.registry import EvalData, register_measure


@register_measure("llc", needs=("transformer",))
def llc(model, data: EvalData) -> dict[str, float]:
    """Local learning coefficient (SGLD; Lau et al. 2023), whole model and `llc.parts`."""
    from icl_lab.llc import LLCContext, estimate_llc

    context = data.options.get("llc") or LLCContext()
    config = context.config
    unclamped = context.clamped_run and config.clamps == "off"
    attach = context.attach_clamps if config.clamps == "on" else None
    pool = context.pool(data.task)
    out: dict[str, float] = {}
    with torch.enable_grad():
        for part in ((None,) if config.whole_model else ()) + tuple(config.parts):
            estimate = estimate_llc(model, data.task, config, pool, part=part, attach_clamps=attach)
            if estimate.diverged is not None:
                what = "llc" + (f" of {part}" if part else "")
                print(f"icl-lab: {what} at step {context.step} diverged, not stored: {estimate.diverged}", file=sys.stderr)
            out.update(estimate.metrics(part, config.data, unclamped=unclamped))
    return out
