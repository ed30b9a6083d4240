"""Training forwards that skip work the loss never reads (`train.last_position_only`).

Every task's loss reads the logits at the last position only. In the last block, everything
after attention is per position: the MLP, the residual sum, the final norm and the
unembedding at positions 0..T-2 feed nothing the loss sees (attention, which mixes positions,
has already run at every position). With the option on, a training step's forward cuts the
residual stream to the last position right after the last block's attention:

    resid_mid[:, -1:] -> ln2 -> MLP -> resid_post -> ln_final -> unembed   ([batch, 1, ...])

so the loss and every gradient are those of the full forward: the same formula, computed on
fewer rows (the matmul kernels may block the rows differently, so values agree to float
reassociation, not bit for bit; tests/test_last_position.py). For Nanda's model (1 layer,
d_mlp 512, 3 positions) it removes two thirds of the MLP and unembedding FLOPs: a training step
of modular/nanda takes 0.14 s instead of 0.24 s on 2 cores.

Evaluations, measures, caches and the app always run the full forward. The hook points after
the cut fire with one position; an intervention on one of them would see a different tensor,
so such a run is refused before it starts (`check_interventions`). The block forward below is
TL4's `NativeBlock.forward` line for line plus the cut; it is installed only while TL's forward
is the one it was written against (`_TL_BLOCK_SHA`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import types
from collections.abc import Iterator

import torch
from transformer_lens.model_bridge.sources.native.model import NativeBlock

from icl_lab.config import ConfigError

# sha256 of inspect.getsource(NativeBlock.forward) in transformer-lens 4 as installed when
# _block_forward was written
_TL_BLOCK_SHA = "0737dc9d38536ead727c76accbb1266de88e76cf94d9fdb42176483389d4eeaa"
TL_BLOCK_SHA = hashlib.sha256(inspect.getsource(NativeBlock.forward).encode()).hexdigest()


def _block_forward(self: NativeBlock, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, **kwargs):
    """NativeBlock.forward; with `self.last_position_only` set, the residual stream leaves
    attention cut to the last position."""
    attn_out, _pattern = self.attn(self.ln1(hidden_states), attention_mask=attention_mask, position_ids=position_ids)
    hidden_states = hidden_states + attn_out
    if self.last_position_only:
        hidden_states = hidden_states[:, -1:]
    if not self.cfg.attn_only:
        hidden_states = hidden_states + self.mlp(self.ln2(hidden_states))
    return (hidden_states,)


def last_block(model) -> NativeBlock:
    blocks = [m for m in model.bridge.modules() if isinstance(m, NativeBlock)]
    if not blocks:
        raise ConfigError("train.last_position_only needs a transformer (TransformerBridge) model")
    return blocks[-1]


def install(model) -> NativeBlock:
    """Give the model's last block the cutting forward (off until `cut_to_last_position`)."""
    if TL_BLOCK_SHA != _TL_BLOCK_SHA:
        raise ConfigError(
            "train.last_position_only is not available with this transformer-lens: its NativeBlock.forward "
            "is not the one icl_lab/last_position.py was checked against; set train.last_position_only=false"
        )
    block = last_block(model)
    if not hasattr(block, "last_position_only"):
        block.last_position_only = False
        block.forward = types.MethodType(_block_forward, block)
    return block


@contextlib.contextmanager
def cut_to_last_position(block: NativeBlock) -> Iterator[None]:
    """Forwards inside cut the residual stream to the last position after the last attention."""
    block.last_position_only = True
    try:
        yield
    finally:
        block.last_position_only = False


def cut_hook_names(model) -> list[str]:
    """The hook points whose activation the cut changes: found by a one-sequence dry run with
    and without it, comparing each hook's activation shape."""
    block = install(model)
    shapes: dict[bool, dict[str, tuple]] = {False: {}, True: {}}
    names = model.hook_names()

    def note(cut: bool, name: str):
        def hook(act, hook):
            shapes[cut][name] = tuple(act.shape)
            return act

        return hook

    dummy, positions = model.dry_run_inputs()
    for cut in (False, True):
        ctx = cut_to_last_position(block) if cut else contextlib.nullcontext()
        with torch.no_grad(), ctx, model.hooks(fwd_hooks=[(n, note(cut, n)) for n in names]):
            model(dummy, positions)
    return sorted(n for n in names if shapes[True].get(n) != shapes[False].get(n))


def check_interventions(model, interventions) -> None:
    """Refuse a run with train.last_position_only whose interventions hook a point the cut
    changes. Call it before the run's clamps attach (the dry run would count as their calls)."""
    if not interventions:
        return
    cut = set(cut_hook_names(model))
    for spec in interventions:
        hit = sorted(set(spec.hook_names) & cut)
        if hit:
            raise ConfigError(
                f"intervention {spec.label} hooks {', '.join(hit)}, which train.last_position_only computes at the "
                f"last position only; set train.last_position_only=false (the hooks it cuts: {', '.join(sorted(cut))})"
            )
