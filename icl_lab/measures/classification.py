"""Accuracy and loss on a classification task's `train` and `test` sets (the `digits` task)."""

from __future__ import annotations

from icl_lab.measures.registry import EvalData, register_measure


@register_measure("classification_accuracy", eval_sets=("train", "test"))
def classification_accuracy(model, data: EvalData) -> dict:
    """(1/S) Σ_s [argmax ŷ_s = y_s] on the training subset and on the test images."""
    out = {}
    for set_name in ("train", "test"):
        logits = data.logits(model, set_name)
        out[f"{set_name}_accuracy"] = (logits.argmax(-1) == data.batches[set_name].targets).double().mean()
    return out


@register_measure("classification_loss", eval_sets=("train", "test"))
def classification_loss(model, data: EvalData) -> dict:
    """The task's training loss (MSE on one-hot targets or cross-entropy) on each set."""
    out = {}
    for set_name, key in (("train", "train_set_loss"), ("test", "test_loss")):
        logits = data.logits(model, set_name)
        out[key] = data.task.loss(logits.double(), data.batches[set_name])
    return out
