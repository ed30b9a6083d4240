"""Phase-transition detection: where (and how sharply) a metric curve jumps.

Given a curve y(step) that moves from a low plateau to a high one (accuracy) we report:

- `transition_step`: the first step at which the smoothed curve crosses the midpoint
  y_lo + ½ (y_hi − y_lo) and stays above it for the rest of the run;
- `width`: the steps between the last crossing of the 10% and the 90% levels around it
  (the 10–90 rise distance);
- `y_lo`, `y_hi`: the plateaus, as medians of the first and last 10% of evaluations. A low
  plateau must hold for that first 10%: when the curve crosses its midpoint within it (a
  clamp that removes the plateau), `y_lo` is the first evaluation instead.

Smoothing is a centred running median (window 3 by default), which removes single-point
evaluation noise without shifting a step. A curve whose rise y_hi − y_lo is smaller than
`min_rise` has no transition (`transition_step` None). Falling curves (loss) are handled by
`direction="down"`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Transition:
    transition_step: int | None
    width: int | None
    y_lo: float
    y_hi: float
    start_step: int | None = None  # last crossing of the 10% level before the transition
    end_step: int | None = None  # first crossing of the 90% level after it

    def to_dict(self) -> dict:
        return asdict(self)


def running_median(values: np.ndarray, window: int = 3) -> np.ndarray:
    """Centred running median. The start is padded with the first value (the untrained model
    is a real measurement); the end is reflected, so a single odd last evaluation is treated
    like any other outlier."""
    if window <= 1 or len(values) < window:
        return values.copy()
    half = window // 2
    tail = values[-2 : -2 - half : -1] if len(values) > half + 1 else np.full(half, values[-1])
    padded = np.concatenate([np.full(half, values[0]), values, tail])
    return np.array([np.median(padded[i : i + window]) for i in range(len(values))])


def _stays_above(y: np.ndarray, level: float) -> int | None:
    """Index of the first point from which y stays >= level to the end, or None."""
    below = np.nonzero(y < level)[0]
    if len(below) == 0:
        return 0
    first = below[-1] + 1
    return int(first) if first < len(y) else None


def find_transition(
    steps, values, direction: str = "up", min_rise: float = 0.2, window: int = 3
) -> Transition:
    steps = np.asarray(steps, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if len(y) == 0:
        return Transition(None, None, float("nan"), float("nan"))
    order = np.argsort(steps)
    steps, y = steps[order], y[order]
    if direction == "down":
        y = -y
    smooth = running_median(y, window)
    k = max(1, len(y) // 10)
    y_lo, y_hi = float(np.median(smooth[:k])), float(np.median(smooth[-k:]))
    mid = _stays_above(smooth, y_lo + 0.5 * (y_hi - y_lo))
    if y_hi - y_lo < min_rise or (mid is not None and mid < k):
        # no low plateau: the curve rose within its first 10% of evaluations, so the low
        # level is where it started
        y_lo = float(smooth[0])
        mid = _stays_above(smooth, y_lo + 0.5 * (y_hi - y_lo))
    sign = -1.0 if direction == "down" else 1.0
    if y_hi - y_lo < min_rise:
        return Transition(None, None, sign * y_lo, sign * y_hi)
    hi = _stays_above(smooth, y_lo + 0.9 * (y_hi - y_lo))
    if mid is None or hi is None:
        return Transition(None, None, sign * y_lo, sign * y_hi)
    below10 = np.nonzero(smooth[: mid + 1] <= y_lo + 0.1 * (y_hi - y_lo))[0]
    lo_idx = int(below10[-1]) if len(below10) else 0
    return Transition(
        transition_step=int(steps[mid]),
        width=int(steps[hi] - steps[lo_idx]),
        y_lo=sign * y_lo,
        y_hi=sign * y_hi,
        start_step=int(steps[lo_idx]),
        end_step=int(steps[hi]),
    )
