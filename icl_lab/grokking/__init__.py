"""Grokking modular arithmetic in a transformer, with Nanda et al.'s progress measures."""

from icl_lab.grokking import measures  # noqa: F401  (registers the measures)
from icl_lab.grokking.fourier import (
    fourier_basis,
    frequency_norms,
    gini,
    key_frequencies_from_embedding,
    neuron_frequencies,
    restricted_and_excluded_logits,
)

__all__ = [
    "fourier_basis",
    "frequency_norms",
    "gini",
    "key_frequencies_from_embedding",
    "neuron_frequencies",
    "restricted_and_excluded_logits",
]
