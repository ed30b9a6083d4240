"""Models: TransformerLens 4 native bridges, with an input map for continuous tasks.

`build_model` returns a `LabModel`: a `TransformerBridge.boot_native(...)` plus, for tasks
whose tokens are vectors (the bursty task), a linear input map. The input map's output goes
through the bridge's own `hook_embed`, the bridge adds its learned position embedding
(`hook_pos_embed`) at the task's position indices, and the blocks run as usual, so every
TransformerLens hook name (`blocks.{l}.attn.hook_pattern`, `hook_z`, `hook_resid_pre`, ...)
fires and can be hooked or cached.

Readouts: `unembed` reads the class logits off the bridge's unembedding at the last position
(Singh et al.); `mlp` is Reddy's classifier: a 3-layer ReLU MLP then a linear readout, where
the bridge's unembedding is the MLP's first layer (so `hook_unembed` carries that layer's
pre-activations, not class logits).

Configuration and presets: `icl_lab.model_config` (`ModelConfig`, `MODEL_PRESETS`, re-exported
here).

Speed (benchmarks/train_throughput.py): TL4's bridge repeats two lookups on every component
call whose answer never changes for our models (the signature of each block's wrapped forward;
whether a wrapped module carries an Accelerate offload hook): `_BlockKwargFilter` and
`_align_module_device` answer them from a memo / a dict check (the second replaces a TL4
function for the whole process, so it is installed by an explicit call, `install_speedups()`,
which the trainer and `load_model` make). TL's native attention masks the
softmaxed pattern a second time, an identity without an attention mask:
`_attention_without_remask` skips it. Every hook point still fires, and logits and gradients
are bitwise those of TL's own code (tests/test_hooks_fire.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

import transformer_lens.model_bridge.generalized_components.base as tl_component_base
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from accelerate.utils import align_module_device as accelerate_align_module_device
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components.block import BlockBridge
from transformer_lens.model_bridge.sources.native.model import NativeAttention
from transformer_lens.utilities.activation_functions import apply_softcap

from icl_lab.config import ConfigError
from icl_lab.hooked import HookedLabModel
from icl_lab.model_config import MODEL_PRESETS, ModelConfig  # noqa: F401  (re-exported)
from icl_lab.tasks.base import ModelIO, TaskBatch


class LabModel(HookedLabModel, nn.Module):
    """A TransformerBridge with the task's input map and readout.

    forward(inputs, positions) -> logits [batch, n_outputs] at the last position.
    Hook names are the bridge's (TransformerLens) names; `hooks`, `run_with_cache` and
    `hook_names` work as on a TransformerBridge.
    """

    def __init__(
        self,
        bridge: TransformerBridge,
        io: ModelIO,
        config: ModelConfig,
        input_map: nn.Module | None,
        readout: nn.Module | None,
    ):
        super().__init__()
        self.bridge = bridge
        self.io = io
        self.config = config
        self.input_map = input_map
        self.readout = readout
        self._fired_names: list[str] | None = None
        self.current_batch: TaskBatch | None = None
        # callables (model, inputs, positions, batch) run before each forward (interventions)
        self.pre_forward_callbacks: list = []
        self.lean, self.lean_cut = None, False  # set while a training step runs the lean forward
        for module in bridge.modules():
            if isinstance(module, BlockBridge):
                _BlockKwargFilter.install(module)
            if type(module) is NativeAttention and TL_ATTENTION_MATCHES:
                module.forward = types.MethodType(_attention_without_remask, module)

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        batch: TaskBatch | None = None,
    ) -> torch.Tensor:
        """Logits [batch, n_outputs] at the last position.

        `batch` (the TaskBatch the inputs come from) is visible to hooks as
        `model.current_batch` during the call: interventions whose targets depend on the task's
        structure (ideal attention patterns, another checkpoint's activations) read it there.
        """
        previous = self.current_batch
        self.current_batch = batch
        try:
            for callback in self.pre_forward_callbacks:
                callback(self, inputs, positions, batch)
            embed = None
            if self.input_map is not None:
                inputs = inputs.to(self.input_map.weight.dtype)
                embed = self.bridge.hook_embed(self.input_map(inputs))  # [batch, pos, d_model]
            if self.lean is not None:  # train.forward='lean' (icl_lab/lean_forward.py)
                out = self.lean(inputs, positions, cut=self.lean_cut, embedded=embed)
            else:
                out = self.bridge(inputs if embed is None else embed, position_ids=positions)
        finally:
            self.current_batch = previous
        last = out[:, -1, :]  # the query / answer position
        return self.readout(last) if self.readout is not None else last

    def forward_batch(self, batch: TaskBatch) -> torch.Tensor:
        return self(batch.inputs, batch.positions, batch=batch)

    # -- hooks ----------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every hook name that fires in this model's forward pass (aliases included).

        Found once with a one-sequence dry run: TL4 declares some hook points that a native
        model never fires (e.g. `attn.hook_hidden_states`), and gated ones (`hook_result`,
        `hook_q_input`, ...) until their `set_use_*` switch is on; neither is listed.
        """
        if self._fired_names is None:
            fired: set[str] = set()

            def note(name: str):
                def hook(act, hook):
                    fired.add(name)
                    return act

                return hook

            names = [
                n for n in self.bridge.hook_dict if self.bridge._gated_hook_reason(n) is None
            ]
            with torch.no_grad(), self.hooks(fwd_hooks=[(n, note(n)) for n in names]):
                self(*self.dry_run_inputs())
            self._fired_names = sorted(fired)
        return list(self._fired_names)

    def dry_run_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, positions) of one all-zero sequence, for dry runs that find what fires."""
        device = next(self.parameters()).device
        T = self.io.seq_len
        if self.io.input_kind == "continuous":
            dummy = torch.zeros(1, T, self.io.d_input, device=device)
        else:
            dummy = torch.zeros(1, T, dtype=torch.long, device=device)
        return dummy, torch.arange(T, device=device)[None]

    def hook_point(self, name: str):
        """The HookPoint called `name` (interventions attach their permanent hooks here)."""
        return self.bridge.hook_dict[name]

    def hooks(self, fwd_hooks=(), bwd_hooks=()) -> contextlib.AbstractContextManager:
        """Temporarily add (name, fn) hooks, as TransformerBridge.hooks."""
        return self.bridge.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks))

    # -- weights --------------------------------------------------------------------------
    def checkpoint_state(self, keep_vars: bool = False) -> dict[str, torch.Tensor]:
        """Every weight under clean names: `bridge.<TL name>`, `input_map.*`, `readout.*`;
        detached copies-to-save, or with `keep_vars` the Parameters themselves (TL4's
        `named_parameters` spells them `..._original_component...` instead)."""
        state = {f"bridge.{k}": v for k, v in self.bridge.state_dict(keep_vars=keep_vars).items()}
        for part in ("input_map", "readout"):
            module = getattr(self, part)
            if module is not None:
                state.update({f"{part}.{k}": v for k, v in module.state_dict(keep_vars=keep_vars).items()})
        if keep_vars:
            return state
        return {k: v.detach().contiguous() for k, v in state.items()}

    def __deepcopy__(self, memo: dict) -> LabModel:
        """A new model with these weights, its train/eval mode, and no hooks or callbacks.

        Rebuilt from the config rather than copied attribute by attribute: TL4's bridge wires
        forward pre-hooks whose closures hold (weak) references to their own blocks, so a plain
        deepcopy would keep writing the copy's activations into this model (found by the LLC
        sampler, which copies the model once per chain). Hooks and intervention engines are
        not copied: attach them to the copy."""
        device = next(self.parameters()).device
        copied = build_model(self.config, self.io, seed=0, device=device)
        copied.load_checkpoint_state({k: v.clone() for k, v in self.checkpoint_state().items()})
        copied.train(self.training)
        memo[id(self)] = copied
        return copied

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        groups: dict[str, dict[str, torch.Tensor]] = {"bridge": {}, "input_map": {}, "readout": {}}
        for key, value in state.items():
            part, _, rest = key.partition(".")
            if part not in groups:
                raise KeyError(f"unexpected checkpoint key {key!r}")
            groups[part][rest] = value
        self.bridge.load_state_dict(groups["bridge"])
        for part in ("input_map", "readout"):
            module = getattr(self, part)
            if module is not None:
                module.load_state_dict(groups[part])


class _BlockKwargFilter:
    """`BlockBridge._filter_kwargs_for_forward`, memoised.

    TL4 calls it on every block call, and it runs `inspect.signature` on the wrapped module's
    forward each time (about 60 us a block on one CPU core). Its answer depends only on that
    forward and on the keyword names and positional count, never on the values: the kept
    names are computed once per (wrapped module, names, count) by TL's own method.
    """

    def __init__(self, block: BlockBridge):
        self.block = block
        self.kept: dict[tuple, tuple[str, ...]] = {}

    @classmethod
    def install(cls, block: BlockBridge) -> None:
        # an instance attribute shadows the class's method; object.__setattr__ skips the
        # bridge's attribute forwarding to the wrapped module
        object.__setattr__(block, "_filter_kwargs_for_forward", cls(block))

    def __call__(self, kwargs: dict, num_positional_args: int = 0) -> dict:
        key = (self.block.original_component, tuple(kwargs), num_positional_args)
        kept = self.kept.get(key)
        if kept is None:
            kept = tuple(type(self.block)._filter_kwargs_for_forward(self.block, dict.fromkeys(kwargs), num_positional_args))
            self.kept[key] = kept
        return {name: kwargs[name] for name in kept}


def _attention_without_remask(self: NativeAttention, hidden_states, attention_mask=None, position_ids=None, pattern_fn=None, **kwargs):
    """TL4's `NativeAttention.forward` without its second mask pass, for causal attention with no
    attention mask (how our models always run); anything else goes to TL's own forward.

    TL masks the scores with -inf, softmaxes, then masks the pattern again with 0 so that a fully
    masked padding row gives zeros instead of NaN. Under the causal mask alone every row keeps
    its diagonal and the softmax already gives exact zeros at the masked keys, so the second pass
    is an identity forward, and backward too (the softmax's backward multiplies the gradient at
    those keys by their zero probability). It costs about 0.2 ms a layer per training step of
    bursty/small on one core. The rest is TL's forward line for line; `hook_pattern`
    (`pattern_fn`) sees the same tensor. Installed only while TL's forward is the one this was
    written against (_TL_ATTENTION_SHA).
    """
    if attention_mask is not None or not self.causal:
        return NativeAttention.forward(self, hidden_states, attention_mask, position_ids, pattern_fn, **kwargs)
    batch, seq, _ = hidden_states.shape
    q = self.q(hidden_states).view(batch, seq, self.n_heads, self.d_head).transpose(1, 2)
    k = self.k(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
    v = self.v(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
    if self.rotary is not None:
        q, k = self.rotary.apply_rope(q, k, position_ids=position_ids)
    if self.kv_repeats > 1:
        k = k.repeat_interleave(self.kv_repeats, dim=1)
        v = v.repeat_interleave(self.kv_repeats, dim=1)
    scores = apply_softcap(torch.matmul(q, k.transpose(-2, -1)) / self.scale, self.attn_scores_soft_cap)
    pattern = F.softmax(scores.masked_fill(self.causal_mask[:seq, :seq], float("-inf")), dim=-1)
    if pattern_fn is not None:
        pattern = pattern_fn(pattern)
    attn = torch.matmul(pattern, v).transpose(1, 2).contiguous().view(batch, seq, -1)
    return self.o(attn), pattern


# sha256 of inspect.getsource(NativeAttention.forward) in transformer-lens 4 as installed when
# _attention_without_remask was written; a different forward keeps TL's (tests/test_hooks_fire.py
# then fails, so the copy gets re-checked)
_TL_ATTENTION_SHA = "97fd08712a48da2f0cfe0ce69c3bc4da3c74b45949b14df5e5d56cf529ce26d1"
TL_ATTENTION_MATCHES = hashlib.sha256(inspect.getsource(NativeAttention.forward).encode()).hexdigest() == _TL_ATTENTION_SHA


_NO_OFFLOAD = contextlib.nullcontext()


def _align_module_device(module: nn.Module, execution_device: torch.device | None = None):
    """Accelerate's `align_module_device`, which TL4 enters around every bridge component call:
    for a module without an Accelerate hook (`_hf_hook`, what `has_offloaded_params` looks for)
    and no execution device, Accelerate's context is a bare `yield`; this returns a shared
    no-op context instead of building a generator context. Any other module gets Accelerate's."""
    if execution_device is None and "_hf_hook" not in module.__dict__ and not hasattr(type(module), "_hf_hook"):
        return _NO_OFFLOAD
    return accelerate_align_module_device(module, execution_device)


def install_speedups() -> None:
    """Put `_align_module_device` in TL4's place (a process-wide change to
    transformer_lens...generalized_components.base). Idempotent; called where runs build their
    models (the trainer, `load_model`), never on import, so importing icl_lab.models changes
    nothing and a test can build a model on TL's own code."""
    tl_component_base.align_module_device = _align_module_device


def speedups_installed() -> bool:
    return tl_component_base.align_module_device is _align_module_device


def _bridge_config(cfg: ModelConfig, io: ModelIO, d_vocab_out: int, seed: int) -> TransformerBridgeConfig:
    return TransformerBridgeConfig(
        d_model=cfg.d_model,
        d_head=cfg.head_dim,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        n_ctx=io.n_ctx,
        d_vocab=max(io.d_vocab, 1),
        d_vocab_out=d_vocab_out,
        d_mlp=cfg.d_mlp or 4 * cfg.d_model,
        attn_only=cfg.attn_only,
        act_fn=cfg.act_fn,
        normalization_type=None if cfg.normalization == "none" else cfg.normalization,
        positional_embedding_type="rotary" if cfg.positional == "rotary" else "standard",
        initializer_range=cfg.init_range,
        seed=seed,
    )


def build_model(cfg: ModelConfig, io: ModelIO, seed: int, device: torch.device | str):
    """Build the model for a task's ModelIO, deterministically from `seed`: a LabModel
    (TransformerBridge) for sequence tasks, an MLPModel for feature tasks."""
    if (cfg.arch == "mlp") != (io.input_kind == "features"):
        need = "model.arch='mlp'" if io.input_kind == "features" else "model.arch='transformer'"
        raise ConfigError(
            f"model.arch={cfg.arch!r} cannot read this task's inputs ({io.input_kind!r}); "
            f"it needs {need}"
        )
    if cfg.arch == "mlp":
        from icl_lab.mlp import MLPModel

        return MLPModel(cfg, io, seed=seed).to(device=torch.device(device), dtype=DTYPES[cfg.dtype])
    d_vocab_out = cfg.readout_hidden if cfg.readout == "mlp" else io.n_outputs
    bridge = TransformerBridge.boot_native(
        _bridge_config(cfg, io, d_vocab_out, seed), device=torch.device(device)
    )
    # Our own modules are initialised under a forked RNG so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        input_map = None
        if io.input_kind == "continuous":
            input_map = nn.Linear(io.d_input, cfg.d_model, bias=False)
        elif io.input_kind != "tokens":
            raise ConfigError(f"unknown input kind {io.input_kind!r}")
        readout = None
        if cfg.readout == "mlp":
            layers: list[nn.Module] = [nn.ReLU()]  # after the unembed = first MLP layer
            for _ in range(cfg.readout_layers - 1):
                layers += [nn.Linear(cfg.readout_hidden, cfg.readout_hidden), nn.ReLU()]
            layers.append(nn.Linear(cfg.readout_hidden, io.n_outputs))
            readout = nn.Sequential(*layers)
    model = LabModel(bridge, io, cfg, input_map, readout)
    return model.to(device=torch.device(device), dtype=DTYPES[cfg.dtype])


DTYPES = {"float32": torch.float32, "float64": torch.float64}
