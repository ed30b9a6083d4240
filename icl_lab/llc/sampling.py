"""The LLC of a lab model at one checkpoint, sampled with devinterp (the thinnest adapter).

    λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*))        (Lau et al. 2023; Hoogland et al. 2025)

the expectation over SGLD draws from the posterior localised at the checkpoint's weights w*
(devinterp's `SGMCMC.sgld`: Δw = ε/2 · (nβ ∇L_batch(w) + γ (w − w*)) + N(0, ε)), after
`num_burnin_steps`, per chain; `llc` is the mean over chains, `llc.std` their sd.

What the adapter does, because devinterp v2 expects a language model on token ids:
- data: devinterp's dataset is a Hugging Face `Dataset` of `input_ids`; ours holds the *index*
  of each sequence in a fixed pool of TaskBatch rows (continuous items, task structure), and
  the loss function looks the rows up.
- loss: the task's own training loss (`task.loss`: cross-entropy at the query/answer position
  for the bursty and pairs tasks), a batch mean, given to devinterp as a [batch, 1] "per-token"
  loss (the same value in every row: devinterp averages it back to the batch mean).
- models: devinterp deep-copies the model for every chain. A TransformerBridge's own
  `deepcopy` leaves TL4's capture hooks pointing at the original blocks, so LabModel copies
  itself by rebuilding from its config and loading its weights (`LabModel.__deepcopy__`).
- clamps: a copy carries no hooks; with `llc.clamps=on` an InterventionEngine with the run's
  specs (their running means as stored at the checkpoint) is attached to every copy at the
  checkpoint's step, phase `train`, so the chains move in the landscape the run trained in.
- the estimate: devinterp's `compute_llc` averages every SGLD step including burn-in; here λ̂
  reads the draws after burn-in (devinterp's `sampling_loss` array), and `init_loss` is
  devinterp's, averaged over `init_loss_batches` batches.
- divergence: devinterp only warns when a chain's loss turns NaN/Inf and stops that chain;
  here such a chain, or one whose last-quarter mean loss exceeds L_n(w*) by more than
  `max_loss_rise`, makes the estimate `diverged` (with the reason): no number is returned.
- RNG: devinterp seeds torch, numpy and random globally; the caller's generators are restored.
  Its per-chain progress bars are switched off (the caller draws one per checkpoint), and so is
  its gc.collect() around every chain (CUDA's cache is still emptied).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import random
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch

from icl_lab.config import ConfigError
from icl_lab.llc.config import LLCConfig, metric_name
from icl_lab.llc.parts import parameter_masks
from icl_lab.tasks.base import TaskBatch

INSTALL = "pip install 'icl-lab[llc]' (devinterp, the SGLD sampler)"


def require_devinterp() -> None:
    """Refuse, before any work, when devinterp (an optional extra) is not installed."""
    try:
        import devinterp  # noqa: F401
    except ImportError:
        raise ConfigError(f"the llc measure needs devinterp, which is not installed: {INSTALL}") from None


@dataclass(frozen=True)
class LLCEstimate:
    """One estimate: λ̂ (None when a chain diverged), its sd over chains, each chain's λ̂."""

    llc: float | None
    std: float | None
    per_chain: tuple[float, ...]
    init_loss: float
    diverged: str | None = None  # why the estimate is not a number
    draws: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)  # [chain, draw] batch losses

    def metrics(self, part: str | None, data: str, unclamped: bool = False) -> dict[str, float]:
        """Metric rows: `llc[.part][@data]`, `.std`, `.chain{i}`, or `.diverged` = 1."""
        name = functools.partial(metric_name, part, data, unclamped=unclamped)
        if self.diverged is not None:
            return {name("diverged"): 1.0}
        out = {name(): self.llc, name("std"): self.std}
        out.update({name(f"chain{i}"): v for i, v in enumerate(self.per_chain)})
        return out


def take(batch: TaskBatch, index: torch.Tensor) -> TaskBatch:
    """The rows `index` of every field of a TaskBatch."""
    return TaskBatch(**{f.name: None if (v := getattr(batch, f.name)) is None else v[index] for f in dataclasses.fields(TaskBatch)})


def sampling_pool(task, config: LLCConfig, seed: int) -> TaskBatch:
    """The sequences the sampler draws batches from: `dataset_size` training sequences drawn
    with `seed` (the same at every checkpoint of a run), or the evaluation set `config.data`."""
    if config.data == "train":
        return task.sample_batch(config.dataset_size, task.make_generator(seed))
    sets = task.eval_sets()
    if config.data not in sets:
        raise ConfigError(f"llc.data={config.data!r} is not train or one of this task's evaluation sets: {', '.join(sets)}")
    return sets[config.data]


@contextlib.contextmanager
def preserved_rng() -> contextlib.AbstractContextManager[None]:
    """Restore torch's (CPU and CUDA), numpy's and random's global state on exit."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def estimate_llc(
    model,
    task,
    config: LLCConfig,
    pool: TaskBatch,
    *,
    part: str | None = None,
    attach_clamps: Callable | None = None,
) -> LLCEstimate:
    """λ̂ of `model` (restricted to `part`'s weights when given) on batches from `pool`.

    `attach_clamps(model) -> engine`: called on every copy the sampler makes (and on the copy
    that measures L_n(w*)); the engines are closed at the end. The model itself is not changed.
    """
    require_devinterp()
    from datasets import Dataset
    from devinterp.slt import sampler as devinterp_sampler
    from devinterp.slt.sampling import sample

    n = pool.size
    if config.batch_size > n:
        raise ConfigError(f"llc.batch_size={config.batch_size} is larger than the sampling set ({n} sequences)")
    device = next(model.parameters()).device
    engines: dict[int, tuple[object, object]] = {}  # id(model copy) -> (copy, engine)

    def loss_fn(copy_model, index_ids: torch.Tensor) -> torch.Tensor:
        if attach_clamps is not None and id(copy_model) not in engines:
            engines[id(copy_model)] = (copy_model, attach_clamps(copy_model))
        batch = take(pool, index_ids[:, 0].to(pool.targets.device))
        loss = task.loss(copy_model.forward_batch(batch).float(), batch)
        return loss.expand(index_ids.shape[0], 1)  # [batch, 1]: devinterp's per-"token" loss

    reference = copy.deepcopy(model)  # a clean copy: L_n(w*) under the same clamps as the chains
    masks = parameter_masks(reference, part)
    dataset = Dataset.from_dict({"input_ids": [[i, i] for i in range(n)]}).with_format("torch")
    caught: list[warnings.WarningMessage] = []
    try:
        quiet = mock.patch.object(devinterp_sampler, "trange", functools.partial(devinterp_sampler.trange, disable=True))
        no_gc = mock.patch.object(devinterp_sampler, "_gc_and_empty_cache", _empty_cuda_cache)
        with preserved_rng(), quiet, no_gc, tempfile.TemporaryDirectory(prefix="icl-lab-llc-") as folder, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            samples = sample(
                reference, dataset, {}, lr=config.lr, n_beta=config.n_beta, param_masks=masks,
                num_chains=config.num_chains, num_draws=config.num_draws, batch_size=config.batch_size,
                num_burnin_steps=config.num_burnin_steps, num_init_loss_batches=config.init_loss_batches,
                init_seed=config.seed, localization=config.localization, device=str(device),
                output_path=f"{folder}/samples.zarr", loss_fn=loss_fn,
            )
            draws = np.asarray(samples.dataset.sampling_loss.values, dtype=np.float64).mean(axis=(2, 3))  # [chain, draw]
            init = np.asarray(samples.dataset.init_loss.values, dtype=np.float64).mean(axis=1)  # [chain]
    finally:
        for _, engine in engines.values():
            engine.close()
    failed = [str(w.message) for w in caught if "Chain failed" in str(w.message)]
    return dataclasses.replace(read_estimate(draws, init, config, failed), draws=draws)


def _empty_cuda_cache() -> None:
    """devinterp runs gc.collect() before and after every chain (0.2 s each in a process
    holding a few runs' objects, more than a short chain); the CUDA cache is still emptied."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def read_estimate(draws: np.ndarray, init: np.ndarray, config: LLCConfig, failed: list[str] = ()) -> LLCEstimate:
    """λ̂ per chain = nβ · (mean draw loss − L_n(w*)), or the reason the chains diverged.

    draws: [chain, draw] batch losses after burn-in; init: [chain] L_n(w*)."""
    init_loss = float(init.mean())
    if failed:
        return LLCEstimate(None, None, (), init_loss, diverged=f"{len(failed)} chain(s) stopped: {failed[0]}")
    if not (np.isfinite(draws).all() and np.isfinite(init).all()):
        return LLCEstimate(None, None, (), init_loss, diverged="a chain's loss became NaN or infinite")
    quarter = max(1, draws.shape[1] // 4)
    rise = draws[:, -quarter:].mean(axis=1) - init
    if (rise > config.max_loss_rise).any():
        return LLCEstimate(None, None, (), init_loss, diverged=(
            f"a chain's loss ran away: its last {quarter} draws average {rise.max():.3g} nats above the "
            f"checkpoint's loss (llc.max_loss_rise={config.max_loss_rise}); lower llc.lr or raise llc.localization"
        ))
    per_chain = config.n_beta * (draws.mean(axis=1) - init)
    std = float(per_chain.std(ddof=1)) if len(per_chain) > 1 else 0.0
    return LLCEstimate(float(per_chain.mean()), std, tuple(float(v) for v in per_chain), init_loss)
