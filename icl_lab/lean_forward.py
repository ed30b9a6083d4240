"""A training forward without the bridge's per-call Python (`train.forward`: lean; auto, the
default, where it covers the model).

TL4's TransformerBridge wraps every component (blocks, attention, each linear map, norms,
embeddings) in a Python bridge object that enters contexts, filters keyword arguments and
calls every hook point on every call. For the lab's small models that is 1-2 ms a step,
about 10-25% of a CPU step at 2 threads (benchmarks/train_throughput.py). The lean forward
computes the same function straight from the bridge's own weights (the same Parameters: the
optimizer, checkpoints and measures see one model), in the order TL4's native bridge does:

    embed -> (+ pos_embed) -> per block: resid_pre -> ln1 -> attn [q, k, v -> pattern -> z -> o]
    -> resid_mid -> ln2 -> mlp [in -> act -> out] -> resid_post -> ln_final -> unembed

and calls a HookPoint only when something is attached to it: the call is the HookPoint itself,
so TransformerLens's hook conversions (q/k/v/z as [batch, pos, head, d_head]), the lab's clamps
and a user's own hooks see and return exactly what they would under the bridge. The one place
the bridge drops a hook's return value (`attn.hook_attn_scores`, fired after the softmax with
the pattern) is reproduced: it fires, and what it returns is discarded.

Covered: the native bridge with no normalization or LayerNorm (the bridge's from-scratch
LayerNorm, hook_scale and hook_normalized included), learned or rotary positions,
attention-only or a ReLU/GELU MLP, and either readout: every preset of the lab
(`lean_covers` says why another model is not; such a run is refused up front). Values equal the bridge's bit for bit on CPU (tests/test_lean_forward.py: logits,
gradients, and every hook point's activation and edit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from icl_lab.config import ConfigError

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}

# TL4's AttentionAutoConversion sits on attn.hook_in and attn.hook_out (alias hook_attn_out). On
# their [batch, pos, d_model] tensors it is the identity both ways ("no_change"), but it keys a
# dict by id(tensor), which dynamo cannot trace (a graph break the step cannot resume from:
# "Reconstruction of FakeIdVariable"), and it never frees that dict. While a lean forward
# runs, those points carry no conversion (`lean_training`); their hooks see the same tensor.
IDENTITY_CONVERSIONS = {"AttentionAutoConversion"}


def lean_covers(model) -> str | None:
    """Why the lean forward cannot compute `model` (None: it can)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "arch", None) != "transformer":
        return "it covers the lab's transformers (model.arch='transformer')"
    if cfg.normalization not in ("none", "LN"):
        return f"it covers LayerNorm or no normalization, and this model has model.normalization={cfg.normalization!r}"
    if cfg.normalization == "LN":
        ln = model.bridge.blocks[0].ln1
        if ln.use_native_layernorm_autograd or getattr(ln.config, "layer_norm_folding", False) or ln.uses_rms_norm or ln.uses_weight_offset:
            return "it covers the bridge's from-scratch LayerNorm (hook_scale, hook_normalized), and this bridge runs another"
    if cfg.positional not in ("learned", "rotary"):
        return f"it covers learned and rotary positions, and this model has model.positional={cfg.positional!r}"
    if not cfg.attn_only and cfg.act_fn not in ACTIVATIONS:
        return f"it covers ReLU and GELU MLPs, and this model has model.act_fn={cfg.act_fn!r}"
    attn = model.bridge.blocks[0].attn.original_component
    if attn.kv_repeats != 1 or attn.attn_scores_soft_cap not in (0, -1, None) or not attn.causal:
        return "it covers plain causal multi-head attention"
    if getattr(model.bridge.original_model, "output_logits_soft_cap", 0) not in (0, -1, 0.0, -1.0):
        return "it covers models without a logit soft cap"
    return None


def check_lean(model) -> None:
    reason = lean_covers(model)
    if reason is not None:
        raise ConfigError(f"the lean forward (train.forward='lean', train.compile) cannot run this model: {reason}; "
                          "use train.forward='auto' or 'bridge' and train.compile='off'")


class LeanForward:
    """forward(inputs, positions, cut=False) -> hidden states after the unembedding,
    [batch, pos, d_vocab_out] ([batch, 1, ...] with `cut`: the last block's MLP onward at the
    last position only, as train.last_position_only)."""

    def __init__(self, model):
        check_lean(model)
        self.model = model
        bridge = model.bridge
        self.hooks = bridge.hook_dict
        self.embed = bridge.embed.original_component
        self.pos = bridge.pos_embed.original_component if model.config.positional == "learned" else None
        self.norms = {}  # hook prefix -> the bridge's LayerNorm (weight, bias, eps); none: identity
        if model.config.normalization == "LN":
            for prefix, norm in [("ln_final", bridge.ln_final)] + [
                    (f"blocks.{i}.{n}", getattr(b, n)) for i, b in enumerate(bridge.blocks) for n in ("ln1", "ln2") if hasattr(b, n)]:
                self.norms[prefix] = (norm.weight, norm.original_component.bias, getattr(norm.config, "eps", 1e-05))
        self.unembed = bridge.unembed.original_component
        cfg = model.config
        self.layers = []
        for i, block in enumerate(bridge.blocks):
            attn = block.attn.original_component
            layer = {
                "i": i, "n_heads": attn.n_heads, "d_head": attn.d_head, "scale": attn.scale,
                "mask": attn.causal_mask, "rotary": attn.rotary,
                **{part: getattr(block.attn, part).original_component for part in ("q", "k", "v", "o")},
            }
            if not cfg.attn_only:
                layer["fc_in"] = getattr(block.mlp, "in").original_component
                layer["fc_out"] = block.mlp.out.original_component
                layer["act"] = ACTIVATIONS[cfg.act_fn]
            layer["p"] = f"blocks.{i}."
            self.layers.append(layer)
        # points whose TL conversion is the identity on what the lean forward gives them
        self.identity_points = [point for name, point in self.hooks.items()
                                if name.endswith(("attn.hook_in", "attn.hook_out")) and type(point.hook_conversion).__name__ in IDENTITY_CONVERSIONS]

    def hook(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x through the named HookPoint when anything is attached to it; else x itself."""
        point = self.hooks[name]
        if point._forward_hooks or point._forward_pre_hooks:
            return point(x)
        return x

    def __call__(self, inputs: torch.Tensor, positions: torch.Tensor | None, cut: bool = False,
                 embedded: torch.Tensor | None = None) -> torch.Tensor:
        h = self.hook
        if embedded is None:
            x = h("embed.hook_out", self.embed(h("embed.hook_in", inputs)))
        else:  # continuous inputs: LabModel ran the input map and hook_embed already
            x = embedded
        batch, seq = x.shape[:2]
        if positions is None:
            positions = torch.arange(seq, device=x.device).unsqueeze(0).expand(batch, -1)
        if self.pos is not None:
            x = x + h("pos_embed.hook_out", self.pos(h("pos_embed.hook_in", positions)))
        for layer in self.layers:
            x = self.block(layer, x, positions, cut=cut and layer is self.layers[-1])
        x = self.norm("ln_final", x)
        return h("unembed.hook_out", self.unembed(h("unembed.hook_in", x)))

    def norm(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        """The bridge's normalization at `prefix` with its hooks: TL4's from-scratch LayerNorm
        (NormalizationBridge._python_norm_forward) or, without normalization, the identity."""
        h = self.hook
        x = h(prefix + ".hook_in", x)
        if prefix in self.norms:
            weight, bias, eps = self.norms[prefix]
            x = x - x.mean(-1, keepdim=True)
            scale = h(prefix + ".hook_scale", (x.pow(2).mean(-1, keepdim=True) + eps).sqrt())
            x = h(prefix + ".hook_normalized", x / scale) * weight
            if bias is not None:
                x = x + bias
            x = x.contiguous()
        return h(prefix + ".hook_out", x)

    def block(self, layer: dict, x: torch.Tensor, positions: torch.Tensor, cut: bool) -> torch.Tensor:
        h, p = self.hook, layer["p"]
        x = h(p + "hook_in", x)
        a = h(p + "attn.hook_in", self.norm(p + "ln1", x))
        batch, seq, _ = a.shape
        n, d = layer["n_heads"], layer["d_head"]
        q = h(p + "attn.q.hook_out", layer["q"](h(p + "attn.q.hook_in", a))).view(batch, seq, n, d).transpose(1, 2)
        k = h(p + "attn.k.hook_out", layer["k"](h(p + "attn.k.hook_in", a))).view(batch, seq, n, d).transpose(1, 2)
        v = h(p + "attn.v.hook_out", layer["v"](h(p + "attn.v.hook_in", a))).view(batch, seq, n, d).transpose(1, 2)
        if layer["rotary"] is not None:
            q, k = layer["rotary"].apply_rope(q, k, position_ids=positions)
        scores = torch.matmul(q, k.transpose(-2, -1)) / layer["scale"]
        pattern = F.softmax(scores.masked_fill(layer["mask"][:seq, :seq], float("-inf")), dim=-1)
        pattern = h(p + "attn.hook_pattern", pattern)
        z = torch.matmul(pattern, v).transpose(1, 2).contiguous().view(batch, seq, -1)
        attn_out = h(p + "attn.hook_out", h(p + "attn.o.hook_out", layer["o"](h(p + "attn.o.hook_in", z))))
        h(p + "attn.hook_attn_scores", pattern)  # TL4 fires it after the softmax and drops its return
        x = x + attn_out
        if cut:
            x = x[:, -1:]
        if "fc_in" in layer:
            m = h(p + "mlp.hook_in", self.norm(p + "ln2", x))
            pre = h(p + "mlp.in.hook_out", layer["fc_in"](h(p + "mlp.in.hook_in", m)))
            post = h(p + "mlp.out.hook_in", layer["act"](pre))
            x = x + h(p + "mlp.hook_out", h(p + "mlp.out.hook_out", layer["fc_out"](post)))
        return h(p + "hook_out", x)


@contextlib.contextmanager
def lean_training(model, lean: LeanForward, cut: bool) -> Iterator[None]:
    """Forwards of `model` inside run through `lean` (cut to the last position with `cut`)."""
    conversions = [(point, point.hook_conversion) for point in lean.identity_points]
    model.lean, model.lean_cut = lean, cut
    for point, _ in conversions:
        point.hook_conversion = None
    try:
        yield
    finally:
        model.lean, model.lean_cut = None, False
        for point, conversion in conversions:
            point.hook_conversion = conversion
