"""No host synchronisation inside a training step (issue 14, the GPU path).

A training step (sample a batch, forward with the clamps, loss, backward, optimizer, the
on-device loss tally) must queue GPU work without waiting for it: a value read back to the
host (`.item()`, `float(t)`, `if t`, `.tolist()`, `.cpu()`), an op whose output size only the
host can know (`nonzero`, boolean-mask indexing, `unique`) or a tensor built from host data
(`torch.tensor([...])`, a Python scalar assigned through an index tensor) stalls the launch
queue every step. Reading back is the point of evaluation and checkpoints, so those are
exempt: the guard is on from the end of the first update (the optimizer's state exists) to
the end of the loop, and paused while a run records metrics or writes a checkpoint.

Two guards, one set of runs:
- on CUDA (skipped without it): torch.cuda.set_sync_debug_mode("error"), which raises on
  every synchronising CUDA call;
- everywhere, a CPU proxy, `HostReadGuard`: the Python-level reads raise, and a
  TorchDispatchMode raises on the aten ops that synchronise on a GPU (the op itself, not the
  device, is the evidence), so a sync sneaking into the step fails CI without a GPU. The
  optimizers (torch/optim, capturable=False) keep their step counts on the host on a GPU too,
  so their reads of them are allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from icl_lab import get_preset, load_run, train
from icl_lab.batched import train_group
from icl_lab.experiments.singh import PAIRS_CONDITIONS, condition_specs
from icl_lab.train import TrainingRun

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

OPTIM_DIR = os.path.dirname(torch.optim.__file__) + os.sep
# aten ops that wait for the device on a GPU, and why
SYNCING_OPS = {
    "aten::_local_scalar_dense": "reads a value back to the host (.item(), float(t), int(t), bool(t), if t)",
    "aten::is_nonzero": "bool(t) / `if t` reads the value back to the host",
    "aten::equal": "torch.equal returns a host bool",
    "aten::nonzero": "its output size is known only once the device has run",
    "aten::argwhere": "its output size is known only once the device has run",
    "aten::masked_select": "its output size is known only once the device has run",
    "aten::_unique2": "its output size is known only once the device has run",
    "aten::unique_dim": "its output size is known only once the device has run",
    "aten::unique_consecutive": "its output size is known only once the device has run",
    "aten::bincount": "its output size is known only once the device has run",
    "aten::lift_fresh": "a tensor built from host data (torch.tensor(...), a Python scalar set through an index): "
    "a host-to-device copy on a GPU",
}
INDEXING_OPS = ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_")
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostSync(AssertionError):
    """A training step synchronised with the host."""


def _in_optimizer() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(OPTIM_DIR):
            return True
        frame = frame.f_back
    return False


class _SyncingOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        why = SYNCING_OPS.get(name)
        if name in INDEXING_OPS and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None
        ):
            why = "boolean-mask indexing: the selected count is known only once the device has run"
        if name == "aten::repeat_interleave" and func._overloadname == "Tensor" and kwargs.get("output_size") is None:
            why = "repeat_interleave by a tensor without output_size: the output size is known only on the device"
        if why and not _in_optimizer():
            raise HostSync(f"{name} inside a training step: {why}")
        return func(*args, **kwargs)


class HostReadGuard:
    """The CPU proxy: while on, host reads and syncing ops raise HostSync."""

    def __init__(self, monkeypatch):
        self.on_now = False
        self._mode: _SyncingOps | None = None
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._refusing(name, getattr(torch.Tensor, name)))

    def _refusing(self, name, original):
        guard = self

        def method(*args, **kwargs):
            if guard.on_now and not _in_optimizer():
                raise HostSync(f"Tensor.{name} inside a training step reads a value back to the host")
            return original(*args, **kwargs)

        return method

    def on(self) -> None:
        if not self.on_now:
            self._mode = _SyncingOps()
            self._mode.__enter__()
            self.on_now = True

    def off(self) -> None:
        if self.on_now:
            self.on_now = False
            self._mode.__exit__(None, None, None)


class CudaSyncGuard:
    """torch.cuda.set_sync_debug_mode("error") while on."""

    on_now = False

    def on(self) -> None:
        torch.cuda.set_sync_debug_mode("error")
        self.on_now = True

    def off(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self.on_now = False


@contextlib.contextmanager
def guarded_steps(monkeypatch, guard):
    """Switch `guard` on after the first update and off while a run evaluates or checkpoints,
    and when the loop ends or fails; yields a tally of the updates made while it was on."""
    tally = {"guarded_updates": 0}
    original = {name: getattr(TrainingRun, name) for name in ("update", "after_update", "record", "checkpoint", "check_fired", "close_engine")}

    def update(self, loss, step):
        tally["guarded_updates"] += guard.on_now
        return original["update"](self, loss, step)

    def after_update(self, step):
        floats = original["after_update"](self, step)
        guard.on()
        return floats

    def paused(name):
        def method(self, *args):
            was_on = guard.on_now
            guard.off()
            try:
                return original[name](self, *args)
            finally:
                if was_on:
                    guard.on()

        return method

    def ending(name):  # after the loop (check_fired), or leaving it on an error (close_engine)
        def method(self):
            guard.off()
            return original[name](self)

        return method

    for name, method in (("update", update), ("after_update", after_update), ("record", paused("record")),
                         ("checkpoint", paused("checkpoint")), ("check_fired", ending("check_fired")),
                         ("close_engine", ending("close_engine"))):
        monkeypatch.setattr(TrainingRun, name, method)
    try:
        yield tally
    finally:
        guard.off()


# -- the runs ------------------------------------------------------------------------------
def bursty_tiny(device: str, steps: int):
    """bursty/small at test size, evaluated at the first and last step only."""
    return get_preset("bursty", "small").config.with_overrides({
        "task.num_classes": 64, "task.num_labels": 8, "task.dim": 15, "task.context_pairs": 4, "task.burstiness": 2,
        "task.eval_size": 64, "model.d_model": 16, "train.batch_size": 16, "train.steps": steps, "train.eval_every": steps,
        "train.checkpoint_every": 0, "train.checkpoints_per_decade": 0, "device": device,
    })


def single_runs(device: str, steps: int) -> dict:
    base = bursty_tiny(device, steps)
    short = {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": 0, "device": device}
    pairs = get_preset("pairs", "cpu").config.with_overrides({**short, "task.eval_size": 64, "train.batch_size": 16})
    modular = get_preset("modular", "cpu").config.with_overrides({**short, "task.p": 23})
    return {
        "plain": base,
        # the bursty experiment's ideal clamps: L0H0 previous-token on label rows, L1H0 induction
        "ideal_clamps": dataclasses.replace(base, interventions=condition_specs("prev_token") + condition_specs("induction")),
        # Singh et al.'s pairs task: keep one head, L0H2 previous-token clamp, perfect copying
        "pairs_perfect_copying": dataclasses.replace(pairs, interventions=PAIRS_CONDITIONS["perfect_copying_prev_token"].specs),
        "modular": modular,  # token inputs, MLP, float64 loss, full batch
    }


def group_members(device: str, steps: int) -> list:
    base = bursty_tiny(device, steps)
    return [
        base,
        dataclasses.replace(base, seed=1, interventions=condition_specs("induction")),
        base.with_overrides({"seed": 2, "train.optimizer": "adamw", "train.weight_decay": 0.1, "train.grad_clip": 0.5}),
        dataclasses.replace(base, seed=3, interventions=condition_specs("prev_token")),
    ]


def check_finished(run_dir, steps: int, device_type: str) -> None:
    run = load_run(run_dir)
    assert run.status["state"] == "done"
    assert run.record["resolved_device"].startswith(device_type)
    metrics = run.metrics
    assert sorted(set(metrics["step"].to_list())) == [0, steps]
    assert "train_loss" in metrics["metric"].to_list()
    # perfect copying puts all of the output on the two context labels, so the IWL probe's target
    # (its class absent from the context) gets probability 0: its loss is +inf by construction,
    # and every other value is finite
    infinite = {"iwl_loss"} if any(spec.target == "perfect_copying" for spec in run.config.interventions) else set()
    for metric, value in zip(metrics["metric"].to_list(), metrics["value"].to_list()):
        assert (value == math.inf) if metric in infinite else math.isfinite(value), (run_dir, metric, value)


def train_guarded(kind: str, device: str, steps: int, tmp_path, monkeypatch, guard) -> None:
    """Train the run (or the group) `kind` under `guard`; every update after the first guarded."""
    with guarded_steps(monkeypatch, guard) as tally:
        if kind == "group":
            outs = [tmp_path / f"member{i}" for i in range(4)]
            train_group(group_members(device, steps), outs)
        else:
            outs = [tmp_path / kind]
            train(single_runs(device, steps)[kind], outs[0], progress=False)
    assert tally["guarded_updates"] == len(outs) * (steps - 1)
    for out in outs:
        check_finished(out, steps, torch.device(device).type)


KINDS = ["plain", "ideal_clamps", "pairs_perfect_copying", "modular", "group"]


# -- on a GPU --------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_no_host_sync_in_a_cuda_training_step(kind, tmp_path, monkeypatch):
    train_guarded(kind, "cuda", 30, tmp_path, monkeypatch, CudaSyncGuard())


@requires_cuda
def test_the_cuda_guard_catches_a_sync():
    guard = CudaSyncGuard()
    guard.on()
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            torch.ones(2, device="cuda").sum().item()
    finally:
        guard.off()


# -- the CPU proxy -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_no_host_read_in_a_training_step(kind, tmp_path, monkeypatch):
    train_guarded(kind, "cpu", 6, tmp_path, monkeypatch, HostReadGuard(monkeypatch))


READS = {  # what a step does -> the words its HostSync names (None: device work, allowed)
    "item": (lambda loss, batch: loss.item(), "Tensor.item"),
    "float": (lambda loss, batch: float(loss.detach()), "Tensor.__float__"),
    "read inside an op": (lambda loss, batch: torch.nn.functional.one_hot(batch.targets), "_local_scalar_dense"),
    "if tensor": (lambda loss, batch: bool((batch.targets > 3).any()), "Tensor.__bool__"),
    "boolean mask": (lambda loss, batch: batch.targets[batch.targets > 3], "boolean-mask indexing"),
    "nonzero": (lambda loss, batch: batch.targets.nonzero(), "aten::nonzero"),
    "torch.tensor": (lambda loss, batch: torch.tensor([0, 1]), "host data"),
    "scalar through an index": (lambda loss, batch: batch.targets.clone().__setitem__(torch.arange(2), 0), "host data"),
    "scalar argument": (lambda loss, batch: batch.targets.clone().index_fill_(0, torch.arange(2), 0), None),
    "cpu": (lambda loss, batch: batch.inputs.cpu(), "Tensor.cpu"),
}


@pytest.mark.parametrize("read", READS)
def test_the_proxy_fails_a_step_that_reads_back(read, tmp_path, monkeypatch):
    """A step that reads back fails the run with HostSync naming the read (the first step,
    before the guard is on, does the same read and passes); device work passes."""
    from icl_lab.tasks.bursty import BurstyTask

    inject, words = READS[read]
    loss = BurstyTask.loss

    def reading_loss(self, logits, batch):
        value = loss(self, logits, batch)
        inject(value, batch)
        return value

    monkeypatch.setattr(BurstyTask, "loss", reading_loss)
    guard = HostReadGuard(monkeypatch)
    if words is None:
        train_guarded("plain", "cpu", 4, tmp_path, monkeypatch, guard)
        return
    with pytest.raises(HostSync, match=words):
        train_guarded("plain", "cpu", 4, tmp_path, monkeypatch, guard)
    assert not guard.on_now and torch.ones(1).item() == 1.0  # off again after the failure
    assert load_run(tmp_path / "plain").status["state"] == "failed"
