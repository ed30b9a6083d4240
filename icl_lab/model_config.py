"""The model's configuration: the `ModelConfig` dataclass and the named `MODEL_PRESETS`.

Kept apart from `icl_lab.models` (which builds the TransformerLens bridge) so that presets,
run configs and the command line can be read without importing TransformerLens.

Presets (`MODEL_PRESETS`):
- `reddy`: Reddy (ICLR 2024): two causal attention layers, one head each, no LayerNorm, no MLP
  between them, then the MLP classifier (128 wide). Differences that TL imposes: attention is
  scaled by 1/√d_head, Q/K/V/O carry biases and there is an output projection W_O.
- `singh`: Singh et al. (ICML 2024): attention-only, 2 layers × 8 heads, d_model 64, pre-LN,
  rotary positions, readout at the query.
- `small`: the reference CPU model: attention-only, 2 layers × 2 heads, d_model 64, learned
  positions, no LayerNorm.
- `circuit`: as `small` with 3 layers × 1 head: one previous-token head, one induction head
  and one spare head, so head ablations isolate each role (in `small` both second-layer heads
  become induction heads and back each other up).
- `mlp`: a ReLU MLP 200-200 initialised 8x default (Prakash & Martin), for feature tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from icl_lab.config import ConfigError, check_fields


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. `d_head` 0 means d_model // n_heads; `d_mlp` 0 means 4·d_model."""

    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    d_head: int = 0
    attn_only: bool = True
    d_mlp: int = 0
    act_fn: str = "relu"
    normalization: str = "none"  # none | LN | LNPre | RMS | RMSPre
    positional: str = "learned"  # learned | rotary
    readout: str = "unembed"  # unembed | mlp
    readout_hidden: int = 128  # mlp readout: width of its hidden layers
    readout_layers: int = 3  # mlp readout: ReLU layers before the linear readout
    init_range: float = -1.0  # std of the bridge's initial weights; -1 = TL default 0.8/√d_model
    # arch "mlp": a plain ReLU MLP on feature vectors (tasks with input_kind "features");
    # the transformer fields above are then unused.
    arch: str = "transformer"  # transformer | mlp
    mlp_widths: tuple[int, ...] = (200, 200)  # hidden layer widths of arch "mlp"
    init_scale: float = 1.0  # arch "mlp": every weight is PyTorch's default init times this
    dtype: str = "float32"  # float32 | float64 (parameters and activations)

    def __post_init__(self) -> None:
        check_fields(self, "model", at_least_one=("n_layers", "n_heads", "d_model", "readout_hidden", "readout_layers"), choices={
            "normalization": ("none", "LN", "LNPre", "RMS", "RMSPre"),
            "positional": ("learned", "rotary"),
            "readout": ("unembed", "mlp"),
            "act_fn": ("relu", "gelu", "gelu_new", "silu"),
            "arch": ("transformer", "mlp"),
            "dtype": ("float32", "float64"),
        })
        if self.arch == "mlp" and (not self.mlp_widths or min(self.mlp_widths) < 1):
            raise ConfigError(f"model.mlp_widths must be one or more widths >= 1, got {self.mlp_widths}")
        if self.init_scale <= 0:
            raise ConfigError(f"model.init_scale must be > 0, got {self.init_scale}")
        if not self.d_head and self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                "set model.d_head explicitly"
            )

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads


MODEL_PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(n_layers=2, n_heads=2, d_model=64),
    "reddy": ModelConfig(
        n_layers=2, n_heads=1, d_model=128, readout="mlp", readout_hidden=128, readout_layers=3
    ),
    "singh": ModelConfig(
        n_layers=2, n_heads=8, d_model=64, normalization="LN", positional="rotary"
    ),
    # one head per layer, three layers: the induction circuit's heads are single components
    "circuit": ModelConfig(n_layers=3, n_heads=1, d_model=64),
    # Prakash & Martin (2025), after Liu et al.'s Omnigrok: ReLU MLP 784 -> 200 -> 200 -> 10
    # with weights initialised 8x larger than default
    "mlp": ModelConfig(arch="mlp", mlp_widths=(200, 200), init_scale=8.0),
}
