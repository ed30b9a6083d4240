"""Views of a run at one checkpoint: its steps, its evaluation sets, a transformer's attention
patterns on one example (each position named by the task's `token_labels`), an RFM run's
feature matrix. Torch and the models are imported inside the functions that need them, so
the pages that never open a checkpoint start fast.
"""

from __future__ import annotations

import numpy as np

from icl_lab.config import ConfigError
from icl_lab.explore.catalogue import RunInfo
from icl_lab.rfm import FEATURE_MATRIX
from icl_lab.store import RunError, checkpoint_steps, load_checkpoint, paths


def checkpoints(info: RunInfo) -> list[int]:
    """The steps at which the run kept a checkpoint."""
    return checkpoint_steps(info.path)


def eval_set_sizes(info: RunInfo) -> dict[str, int]:
    """name -> number of sequences of each evaluation set of the run's task (what an example
    index may be); RunError naming config.json when the run's config is not a run config."""
    from icl_lab.checkpoints import run_config_of
    from icl_lab.tasks import make_task

    config = run_config_of(info.path)
    task = make_task(config.task, config.task_config, seed=config.seed, device="cpu")
    return {name: int(batch.inputs.shape[0]) for name, batch in task.eval_sets().items()}


def attention_patterns(info: RunInfo, step: int, example: int = 0, eval_set: str | None = None):
    """({layer: [heads, T, T] array}, token labels) for one example sequence at a checkpoint.
    RunError (a ConfigError) when the run's config or that checkpoint cannot be loaded."""
    import torch

    from icl_lab.checkpoints import load_model

    try:
        model, task, _ = load_model(info.path, step, device="cpu")
    except (KeyError, RuntimeError) as err:  # a readable weights file that is not this model's
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunError(f"{paths(info.path).weights(step)}: weights do not fit the run's model ({first})") from None
    sets = task.eval_sets()
    name = eval_set or next(iter(sets))
    size = sets[name].inputs.shape[0]
    if not 0 <= example < size:
        raise ConfigError(f"example {example} is outside evaluation set {name!r} (0 to {size - 1})")
    batch = sets[name].slice(example, example + 1)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=names, batch=batch)
    return {l: cache[n][0].numpy() for l, n in enumerate(names)}, task.token_labels(batch, 0)


def feature_matrix(info: RunInfo, step: int) -> np.ndarray:
    """The RFM feature matrix M at an iteration; RunError when its checkpoint is unreadable."""
    tensors = load_checkpoint(info.path, step)
    M = tensors.get(FEATURE_MATRIX)
    if M is None or M.ndim != 2 or M.shape[0] != M.shape[1]:
        found = f"{FEATURE_MATRIX!r} of shape {tuple(M.shape)}" if M is not None else f"tensors {sorted(tensors)[:5]}"
        raise RunError(f"{paths(info.path).weights(step)}: no square feature matrix {FEATURE_MATRIX!r} (it holds {found})")
    return M.double().numpy()


def feature_labels(size: int) -> list:
    """The names of an RFM feature matrix's rows: its inputs are one-hot a then one-hot b
    (a0 … a(p−1), b0 … b(p−1)); plain indices when the size is odd."""
    p = size // 2
    return [f"a{i}" for i in range(p)] + [f"b{i}" for i in range(p)] if size == 2 * p else list(range(size))

