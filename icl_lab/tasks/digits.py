"""Image classification from a small training subset: the anti-grokking task.

Prakash & Martin (2025, "Grokking and generalization collapse: insights from HTSR theory"),
after Liu et al.'s Omnigrok: 1,000 MNIST training images (100 per class), one-hot targets and
an MSE loss, a ReLU MLP initialised large, trained very long with and without weight decay.

Data, never downloaded:
- `source="digits"` (default): scikit-learn's bundled 8x8 digits (1,797 images, 64 pixels
  with values 0..16, scaled to [0, 1]). The training subset is `train_size / 10` images per
  class drawn with the run's seed; the test set is every image not in it (or `test_size`).
- `source="mnist"`: the four MNIST IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
  optionally `.gz`) in `mnist_dir`; pixels scaled to [0, 1]; the balanced training subset
  comes from the training files, the test set from the t10k files.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from icl_lab.config import ConfigError
from icl_lab.tasks.base import ModelIO, TaskBatch, position_numbers

N_CLASSES = 10
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DigitsConfig:
    """source: digits | mnist; train_size: a multiple of 10 (balanced classes); test_size 0:
    every test image; loss: mse (one-hot targets, mean over batch x classes, as
    Prakash & Martin) | cross_entropy."""

    source: str = "digits"
    mnist_dir: str = ""
    train_size: int = 1000
    test_size: int = 0
    loss: str = "mse"

    def __post_init__(self) -> None:
        if self.source not in ("digits", "mnist"):
            raise ConfigError(f"task.source={self.source!r} is not one of digits, mnist")
        if self.loss not in ("mse", "cross_entropy"):
            raise ConfigError(f"task.loss={self.loss!r} is not one of mse, cross_entropy")
        if self.train_size < N_CLASSES or self.train_size % N_CLASSES:
            raise ConfigError(f"task.train_size must be a positive multiple of {N_CLASSES} (balanced classes), got {self.train_size}")
        if self.test_size < 0:
            raise ConfigError(f"task.test_size must be >= 0 (0 = every test image), got {self.test_size}")
        if self.source == "mnist":
            missing_files(self.mnist_dir)  # raises with the missing names


def missing_files(mnist_dir: str) -> dict[str, Path]:
    """Paths of the four IDX files in `mnist_dir`; a ConfigError naming what is missing."""
    if not mnist_dir:
        raise ConfigError("task.source='mnist' needs task.mnist_dir, a folder with the MNIST IDX files: " + ", ".join(MNIST_FILES.values()))
    folder = Path(mnist_dir).expanduser()
    found, missing = {}, []
    for key, name in MNIST_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                found[key] = candidate
                break
        else:
            missing.append(name)
    if missing:
        raise ConfigError(f"task.mnist_dir={mnist_dir!r} lacks {', '.join(missing)} (plain or .gz)")
    return found


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format: magic 0x00000803 images / 0x00000801 labels, then
    big-endian int32 sizes, then unsigned bytes) as a uint8 array."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


def load_arrays(config: DigitsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(pool images [n, d] in [0, 1], pool labels, test images, test labels); test is None
    when the test set is the rest of the pool (digits)."""
    if config.source == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64), None, None
    files = missing_files(config.mnist_dir)
    x = read_idx(files["train_images"]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = read_idx(files["train_labels"]).astype(np.int64)
    xt = read_idx(files["test_images"]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    yt = read_idx(files["test_labels"]).astype(np.int64)
    return x, y, xt, yt


class DigitsTask:
    name = "digits"
    input_kind = "features"
    eval_set_names = ("train", "test")
    probe_set = "train"  # Golechha's measures read the training images
    milestones = ()
    transition_readings: dict = {}
    x_axis = "training step"

    def __init__(self, config: DigitsConfig, seed: int, device="cpu"):
        self.config = config
        self.device = torch.device(device)
        x, y, xt, yt = load_arrays(config)
        rng = np.random.default_rng(seed)
        per_class = config.train_size // N_CLASSES
        train_idx = []
        for c in range(N_CLASSES):
            members = np.flatnonzero(y == c)
            if members.size < per_class:
                raise ConfigError(f"task.train_size={config.train_size} needs {per_class} images of class {c}; the data has {members.size}")
            train_idx.append(rng.choice(members, per_class, replace=False))
        train_idx = np.sort(np.concatenate(train_idx))
        if xt is None:
            rest = np.setdiff1d(np.arange(y.size), train_idx)
            xt, yt = x[rest], y[rest]
        if config.test_size:
            if config.test_size > yt.size:
                raise ConfigError(f"task.test_size={config.test_size} exceeds the {yt.size} test images")
            pick = np.sort(rng.choice(yt.size, config.test_size, replace=False))
            xt, yt = xt[pick], yt[pick]
        self.train = self._batch(x[train_idx], y[train_idx])
        self.test = self._batch(xt, yt)

    def _batch(self, x: np.ndarray, y: np.ndarray) -> TaskBatch:
        inputs = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return TaskBatch(
            inputs=inputs,  # [n, d_input]
            positions=torch.zeros(len(y), 1, dtype=torch.long, device=self.device),
            targets=torch.from_numpy(y).to(self.device),
        )

    @property
    def io(self) -> ModelIO:
        return ModelIO(input_kind=self.input_kind, n_ctx=1, n_outputs=N_CLASSES, seq_len=1, d_input=self.train.inputs.shape[1])

    def make_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample_batch(self, batch_size: int, gen: torch.Generator) -> TaskBatch:
        """`batch_size` distinct training images, drawn afresh each step (the whole training
        set when batch_size >= train_size)."""
        n = self.train.size
        if batch_size >= n:
            return self.train
        pick = torch.randperm(n, generator=gen, device=self.device)[:batch_size]
        return TaskBatch(inputs=self.train.inputs[pick], positions=self.train.positions[pick], targets=self.train.targets[pick])

    def loss(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """MSE (1/(B·10)) Σ (ŷ − onehot(y))² (Omnigrok, Prakash & Martin) or cross-entropy."""
        if self.config.loss == "mse":
            target = torch.nn.functional.one_hot(batch.targets, N_CLASSES).to(logits.dtype)
            return torch.nn.functional.mse_loss(logits, target)
        return torch.nn.functional.cross_entropy(logits, batch.targets)

    def token_labels(self, batch: TaskBatch, example: int) -> list[str]:
        """One position (the image's feature vector): ["0"]."""
        return position_numbers(batch)

    def eval_sets(self, size: int | None = None) -> dict[str, TaskBatch]:
        """`train`: the whole training subset; `test`: the held-out images."""
        return {"train": self.train, "test": self.test}
