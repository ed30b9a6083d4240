"""Named run presets: a preset is a RunConfig, not a code path.

`register_preset` adds one; each task names its default preset when it is registered
(icl_lab/tasks/__init__.py), which `icl-lab train <task>` uses without `--preset`.

`bursty/small` is the reference CPU preset: the abrupt ICL transition on 2 CPU cores in well
under 3 minutes. `bursty/reddy` and `bursty/singh` carry the papers' architectures on the
bursty task (at paper-like lengths they need a GPU or patience).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from icl_lab.config import ConfigError, TrainConfig, did_you_mean, to_dict
from icl_lab.model_config import MODEL_PRESETS
from icl_lab.run_config import RunConfig
from icl_lab.model_config import ModelConfig
from icl_lab.tasks import BurstyConfig, DigitsConfig, ModularTaskConfig, PairsConfig, registered

BURSTY_MEASURES = (
    "icl_accuracy",
    "iwl_accuracy",
    "label_swap_accuracy",
    "flip_accuracy",  # with ciwl_accuracy and iwl_accuracy: which strategy answers (tasks/probes.py)
    "ciwl_accuracy",
    "eval_loss",
    "context_label_accuracy",
    "induction_score",
    "previous_token_score",
)


@dataclass(frozen=True)
class Preset:
    task: str
    name: str
    description: str
    config: RunConfig


PRESETS: dict[str, dict[str, Preset]] = {}


def register_preset(
    task: str, name: str, description: str, task_config, model: ModelConfig, train: TrainConfig,
    measures: tuple[str, ...] = (), track: tuple[str, ...] = (),
) -> Preset:
    """Add the preset `task/name` to PRESETS (its RunConfig is checked on construction: a
    registered task, its config class, measures the task supports). Returns it."""
    config = RunConfig(task=task, task_config=task_config, model=model, train=train, measures=measures, track=track, preset=name)
    preset = Preset(task=task, name=name, description=description, config=config)
    PRESETS.setdefault(task, {})[name] = preset
    return preset


def _bursty(name: str, description: str, task: BurstyConfig, model: str, train: TrainConfig) -> Preset:
    return register_preset("bursty", name, description, task, MODEL_PRESETS[model], train, BURSTY_MEASURES, ("icl_accuracy",))


# The reference task (K=2048, L=32, N=8, B=4) and its CPU training, shared by small and circuit.
REFERENCE_TASK = BurstyConfig(num_classes=2048, num_labels=32, dim=63, context_pairs=8, burstiness=4)
REFERENCE_TRAIN = TrainConfig(steps=3000, batch_size=128, optimizer="adam", lr=3e-3, eval_every=50, checkpoint_every=500,
                              checkpoints_per_decade=10)  # 631, 794, 1000, ...: the attention view sees the circuit form


_bursty(
    "small",
    "Reference CPU preset: attention-only 2 layers x 2 heads, d_model 64; K=2048 "
    "classes, L=32 labels, N=8, B=4, all bursty, trained classes only. ICL "
    "transition in about 1-2k steps (about a minute on 2 CPU cores).",
    REFERENCE_TASK, "small", REFERENCE_TRAIN,
)
_bursty(
    "circuit",
    "The reference task and training on a 3-layer x 1-head attention-only model: "
    "the ICL circuit forms with one previous-token head, one induction head and a "
    "spare head, so ablating a single head isolates its role (in `small` the two "
    "second-layer heads both become induction heads and back each other up). "
    "Transition around step 1100-1200; about a minute on 2 CPU cores.",
    REFERENCE_TASK, "circuit", REFERENCE_TRAIN,
)
_bursty(
    "transience",
    "The Reddy grid's K=256, B=4 corner of the reference preset, trained 4x longer: ICL accuracy "
    "rises to about B/N and falls back as in-weights strategies take over (issue 23; "
    "`icl-lab experiment transience`). The strategy probes read which strategy answers.",
    dataclasses.replace(REFERENCE_TASK, num_classes=256), "small",
    dataclasses.replace(REFERENCE_TRAIN, steps=12_000, eval_every=100, checkpoint_every=2000, checkpoints_per_decade=4),
)
_bursty(
    "reddy",
    "Reddy (ICLR 2024): 2 attention layers x 1 head, d_model 128, no LayerNorm, "
    "3-layer ReLU MLP classifier; p_B=1, p_C=0, K=2048, 65 position slots with "
    "random offsets; SGD lr 0.01, batch 128 (the paper trains 75k-150k steps).",
    dataclasses.replace(REFERENCE_TASK, position_slots=65),
    "reddy",
    TrainConfig(steps=100_000, batch_size=128, optimizer="sgd", lr=0.01, weight_decay=1e-6, eval_every=500, checkpoint_every=5000),
)
_bursty(
    "singh",
    "Singh et al. (ICML 2024) architecture: attention-only 2 layers x 8 heads, "
    "d_model 64, pre-LN, rotary, on the bursty task; Adam lr 1e-4 (theirs 1e-5 "
    "for 1e6 training sequences, 31,250 steps, at batch 32).",
    REFERENCE_TASK,
    "singh",
    TrainConfig(steps=20_000, batch_size=128, optimizer="adam", lr=1e-4, eval_every=200, checkpoint_every=2000),
)

MODULAR_MEASURES = (
    "modular_accuracy",
    "modular_loss",
    "fourier_embedding",
    "gini_neuron_logit",
    "restricted_excluded_loss",
    "weight_norm",
)


def _modular(name: str, description: str, task: ModularTaskConfig, model: ModelConfig, train: TrainConfig) -> Preset:
    return register_preset("modular", name, description, task, model, train, MODULAR_MEASURES, ("test_accuracy",))


def _nanda_model(d_model: int, n_heads: int, d_mlp: int) -> ModelConfig:
    # 1 layer, ReLU MLP, no LayerNorm, learned positions; init std 1/sqrt(d_model) as theirs
    return ModelConfig(
        n_layers=1, n_heads=n_heads, d_model=d_model, attn_only=False, d_mlp=d_mlp,
        act_fn="relu", normalization="none", init_range=d_model**-0.5,
    )


def _nanda_train(steps: int, weight_decay: float, eval_every: int, checkpoint_every: int, last_position_only: bool = False) -> TrainConfig:
    return TrainConfig(
        steps=steps, optimizer="adamw", lr=1e-3, weight_decay=weight_decay, betas=(0.9, 0.98),
        warmup_steps=10, eval_every=eval_every, checkpoint_every=checkpoint_every, loss_dtype="float64",
        last_position_only=last_position_only,
    )


_modular(
    "nanda",
    "Nanda et al. (ICLR 2023): a+b mod 113, 30% of pairs for training, full batch; 1 layer, "
    "d_model 128, 4 heads, d_mlp 512, ReLU, no LayerNorm; AdamW lr 1e-3, weight decay 1.0, "
    "betas (0.9, 0.98), 10-step warm-up, float64 loss; 40k steps (= epochs); training forwards skip the MLP "
    "and unembedding at the positions the loss never reads (train.last_position_only). About 40 min per "
    "15k steps on 2 CPU cores (`icl-lab experiment nanda-phases`).",
    ModularTaskConfig(p=113, op="add", train_fraction=0.3), _nanda_model(128, 4, 512), _nanda_train(40_000, 1.0, 100, 1000, True),
)
_modular(
    "cpu",
    "CPU grokking: a+b mod 59, 50% of pairs for training, full batch; Nanda's 1-layer "
    "architecture at d_model 128, 4 heads, d_mlp 512; AdamW lr 1e-3, weight decay 1.0; "
    "memorises in a few hundred steps, generalises thousands of steps later.",
    ModularTaskConfig(p=59, op="add", train_fraction=0.5), _nanda_model(128, 4, 512), _nanda_train(3000, 1.0, 50, 100),
)


def default_preset(task: str) -> str:
    """The preset the task registered as its default (`icl-lab train <task>` without --preset)."""
    return registered(task).default_preset


def get_preset(task: str, name: str | None = None) -> Preset:
    """The preset `task/name`; name None: the task's default preset."""
    name = name or default_preset(task)  # refuses unknown tasks
    if task not in PRESETS:
        raise ConfigError(f"task {task!r} has no presets yet")
    valid = sorted(PRESETS[task])
    if name not in PRESETS[task]:
        raise ConfigError(
            f"unknown preset {name!r} for task {task!r}.{did_you_mean(name, valid)} "
            f"Valid presets: {', '.join(valid)}"
        )
    return PRESETS[task][name]


def describe_presets() -> str:
    lines = []
    for task, presets in PRESETS.items():
        for name, preset in presets.items():
            default = " (default)" if default_preset(task) == name else ""
            lines.append(f"{task}/{name}{default}: {preset.description}")
            cfg = to_dict(preset.config)
            for section in ("task_config", "model", "train"):
                items = ", ".join(f"{k}={v}" for k, v in cfg[section].items())
                lines.append(f"    {section.replace('_config', '')}: {items}")
            lines.append("")
    return "\n".join(lines)


# Anti-grokking (Prakash & Martin 2025): the HTSR α of every layer is tracked live.
DIGITS_MEASURES = ("classification_accuracy", "classification_loss", "weight_norm", "htsr")


def _digits(name: str, description: str, task: DigitsConfig, model: ModelConfig, train: TrainConfig) -> Preset:
    return register_preset("digits", name, description, task, model, train, DIGITS_MEASURES, ("test_accuracy",))


_digits(
    "cpu",
    "Anti-grokking at CPU length: scikit-learn's 8x8 digits, 1,000 training images (100 "
    "per class), MSE on one-hot targets; ReLU MLP 64-200-200-10 initialised 8x larger "
    "than default; AdamW lr 1e-2, no weight decay, batch 200; 150k steps (a few minutes). "
    "Memorises, generalises, then test accuracy erodes while the weights grow and the "
    "hidden layers' alpha falls. Weight-decay control: --set train.weight_decay=0.01.",
    DigitsConfig(source="digits", train_size=1000, loss="mse"),
    MODEL_PRESETS["mlp"],
    TrainConfig(steps=150_000, batch_size=200, optimizer="adamw", lr=1e-2, weight_decay=0.0, eval_every=2500, checkpoint_every=10_000),
)
_digits(
    "paper",
    "Prakash & Martin's length: 1,000 training images, MSE, ReLU MLP 200-200 at 8x init, "
    "AdamW lr 1e-3, batch 200, float64, 10M steps, no weight decay (GPU length). Their data "
    "is MNIST: --set task.source=mnist task.mnist_dir=DIR (the four IDX files).",
    DigitsConfig(source="digits", train_size=1000, loss="mse"),
    dataclasses.replace(MODEL_PRESETS["mlp"], dtype="float64"),
    TrainConfig(steps=10_000_000, batch_size=200, optimizer="adamw", lr=1e-3, weight_decay=0.0, eval_every=20_000, checkpoint_every=500_000, loss_dtype="float64"),
)


# Singh et al. (ICML 2024): x_a ℓ_a x_b ℓ_b x_q from Gaussian-cluster items (icl_lab/tasks/pairs.py).
PAIRS_MEASURES = ("icl_accuracy", "flip_accuracy", "ciwl_accuracy", "iwl_accuracy", "eval_loss", "context_label_accuracy",
                  "induction_score", "previous_token_score")


def _pairs(name: str, description: str, task: PairsConfig, train: TrainConfig) -> Preset:
    return register_preset("pairs", name, description, task, MODEL_PRESETS["singh"], train, PAIRS_MEASURES, ("train_loss", "icl_accuracy"))


_pairs(
    "paper",
    "Singh et al. (ICML 2024): two exemplar-label pairs and a query, 50 training / 100 "
    "held-out classes, 5 labels (8 training / 2 held-out pairs); attention-only 2 layers x 8 "
    "heads, d_model 64, pre-LN, rotary; Adam lr 1e-5, batch 32, their main run's 1e6 training "
    "sequences (their train_iters counts sequences: main.py steps it by the batch size), so "
    "31,250 steps; evaluation every 156 steps (their 5k sequences) on 1k sequences, "
    "checkpoints every 313 steps (1e4 sequences; theirs every 1e3). Their clamp runs were 6e5 "
    "sequences (--steps 18750), their label and class scaling runs 2e6 (--steps 62500).",
    PairsConfig(eval_size=1000),
    TrainConfig(steps=31_250, batch_size=32, optimizer="adam", lr=1e-5, eval_every=156, checkpoint_every=313),
)
_pairs(
    "cpu",
    "The paper's task and model at CPU length: Adam lr 3e-4, batch 64, 3000 steps (about a "
    "minute on 2 CPU cores). Measured (seed 0): the training loss sits near ln 2 (one of the "
    "two context labels at random) around steps 300-450, then drops to ~0 by step 900.",
    PairsConfig(eval_size=512),
    TrainConfig(steps=3000, batch_size=64, optimizer="adam", lr=3e-4, eval_every=50, checkpoint_every=1000),
)
