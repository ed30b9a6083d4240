"""Colour ranges for the explorer's heatmaps: a scale centred on no change (ablation deltas),
and a range that a few outlying entries cannot wash out (an RFM feature matrix's diagonal)."""

from __future__ import annotations

import numpy as np


def delta_domain(values) -> list[float]:
    """A colour domain symmetric about zero, so that no change is the scale's neutral middle."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    reach = float(finite.max()) if finite.size else 0.0
    reach = reach if reach > 0 else 1e-9  # all zero: still a valid, centred domain
    return [-reach, reach]


def robust_range(matrix: np.ndarray, mask_diagonal: bool) -> tuple[float, float]:
    """The 1st to 99th percentile of a matrix's entries (off the diagonal when it is masked), so
    that a few large entries, such as an RFM feature matrix's diagonal, do not wash out the rest."""
    keep = ~np.eye(matrix.shape[0], dtype=bool) if mask_diagonal and matrix.shape[0] > 1 else np.ones(matrix.shape, bool)
    low, high = np.percentile(matrix[keep], [1, 99])
    return float(low), float(high if high > low else low + 1e-9)

