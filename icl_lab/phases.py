"""Phase-transition detection: where (and how sharply) a metric curve jumps to its final level.

A *transition* is a rise of the metric to its final high level from a plateau below it. Given
the curve y(step) of a rising metric (an accuracy; `direction="down"` flips a falling one):

1. Smoothing: a centred running median over `window` evaluations (3 by default). It removes
   single-evaluation noise and, unlike a mean, never moves a monotone edge by a step. The start
   is padded with the first value (the untrained model is a real measurement); the end is
   reflected, so a single odd last evaluation is an outlier like any other.
2. The final level `y_hi` is the median of the smoothed last 10% of evaluations (end-robust).
3. Candidate rises: an evaluation is *low* when it lies at least `min_rise` below `y_hi`. Each
   run of low evaluations followed by a higher one ends at a candidate seed (the last low
   evaluation), which lies inside the rise that follows it. Candidates are tried from the last.
4. Walking out from the seed, which lies inside the rise (so a dip or an outlier in the
   plateau before it is never reached, as a first or last crossing over the whole curve
   would be):
   - back to the *foot* (`start_step`): the first evaluation, going back, within 10% of the
     rise of its plateau, the median of the `w = max(3, n // 10)` evaluations before it (at
     the first evaluation: its own value), where that plateau is itself flat (within 10% of
     the rise of the plateau w evaluations earlier: a steady creep is followed back to where
     it began). That plateau is `y_lo`;
   - to the nearest crossing of the midpoint y_lo + ½(y_hi − y_lo): `transition_step` is the
     first evaluation at or above it;
   - forward from there to the first evaluation at or above 90% of the rise: `end_step`.
   `width` = end_step − start_step, the 10-90% rise measured on the rise alone. Steps are
   evaluation steps: the resolution is the evaluation interval.
5. The rule for "reaches its high level": a candidate is a transition when
   - its rise y_hi − y_lo is at least `min_rise` (in the metric's units; 0.2 by default), and
   - it closes at least `min_closed` (2/3) of the distance from its plateau to the metric's
     `ceiling`, the best value the metric can take: 1.0 for rising metrics (accuracies), none
     by default for falling ones. (A final level more than min_rise beyond the ceiling means
     the metric is not bounded by it: no transition, and `reason` says so.)
   An accuracy that rises from chance to a level well below the ceiling and stays there has
   no transition. In the bursty task (Reddy 2024) ICL accuracy first creeps from chance 1/L
   to the random-context-label level B/N (0.5 for the reference N = 8, B = 4), later jumps
   to ~1 when an induction head forms. A run that never jumps (small K: it learns in-weights)
   makes only the first rise, which closes (B/N − 1/L) / (1 − 1/L) ≈ 48% of the gap: no
   transition; the jump from B/N to 1 closes all of it. Grokking's test accuracy (≈ 0 → 1)
   and RFM's (0 → 1) close all of it too.
   The first candidate, from the end, that passes is the transition, so a later dip inside
   the final level (shorter than w evaluations: its plateau is the high level) is skipped.
   A rise from the first evaluation (no plateau before it, e.g. a clamp that removes the
   plateau) counts, with the first value as `y_lo`. Without a transition, `y_lo` is where
   the last rise began (the first value when there is none) and `reason` says why.

Falling metrics (a loss: Singh et al.'s ln 2 plateau then a drop to ~0) work with
`direction="down"`, but the ceiling rule needs a bounded score: a loss has no default ceiling,
so only `min_rise` (in nats) decides, and the early drop from ln L to ln 2 of a run that never
learns ICL passes it. A `Reading` fixes both for a task whose plateau level is known: the
curve is read on min(loss, plateau) (max for a rising metric), so the approach to the plateau
is not part of any rise, with the metric's best value as the ceiling. Tasks declare theirs in
`transition_readings` (the pairs task: the training loss from ln 2, best value 0), and
summary.json reads each tracked metric with its task's reading, else the default one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

FOOT = 0.1  # the foot of the rise: within 10% of the rise of the plateau
TOP = 0.9  # the top of the rise: 90% of the way up


@dataclass(frozen=True)
class Transition:
    transition_step: int | None  # first evaluation at or above the midpoint of the rise
    width: int | None  # end_step - start_step: the 10-90% rise distance, in steps
    y_lo: float  # the plateau before the rise (without a transition: where the last rise began)
    y_hi: float  # the final level
    start_step: int | None = None  # the foot: last evaluation at or below 10% of the rise
    end_step: int | None = None  # first evaluation at or above 90% of the rise after the midpoint
    reason: str | None = None  # why there is no transition; None when there is one

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """How a metric's transition is read: `find_transition` with `direction` and `ceiling` on
    the curve clipped at `plateau`, the level a run sits at before the transition (values on
    the far side of it, the approach from chance or from ln L, read as the plateau itself)."""

    direction: str = "up"
    ceiling: float | None | Literal["auto"] = "auto"
    plateau: float | None = None

    def clip(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self.plateau is None:
            return values
        return np.minimum(values, self.plateau) if self.direction == "down" else np.maximum(values, self.plateau)

    def find(self, steps, values) -> Transition:
        return find_transition(steps, self.clip(values), direction=self.direction, ceiling=self.ceiling)


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


def _plateau(smooth: np.ndarray, i: int, w: int) -> float:
    """The level the curve sat at before evaluation i: the median of the w evaluations before."""
    return float(smooth[0]) if i == 0 else float(np.median(smooth[max(0, i - w) : i]))


def _foot(smooth: np.ndarray, seed: int, y_hi: float, w: int) -> int:
    """Walk back from the seed to the first evaluation within FOOT of the rise of its plateau,
    where that plateau is flat: within FOOT of the rise of the plateau w evaluations earlier
    (so a steady ramp is followed down to where it began)."""

    def near(value: float, lo: float) -> bool:
        return value <= lo + FOOT * (y_hi - lo)

    i = seed
    while i > 0:
        lo = _plateau(smooth, i, w)
        if near(smooth[i], lo) and near(lo, _plateau(smooth, max(0, i - w), w)):
            break
        i -= 1
    return i


def _first_at_or_above(smooth: np.ndarray, level: float, start: int) -> int | None:
    above = np.nonzero(smooth[start:] >= level)[0]
    return int(start + above[0]) if len(above) else None


def _why_not(
    y_lo: float, y_hi: float, min_rise: float, ceiling: float | None, min_closed: float, sign: float
) -> str | None:
    """Why the rise from y_lo to y_hi is not a transition (None when it is one). The levels
    are on the rising curve; `sign` turns them back into the metric's values for the message."""
    rise = y_hi - y_lo
    lo_hi = f"from {sign * y_lo:.3g} to {sign * y_hi:.3g}"
    if rise < min_rise:
        return f"the change {lo_hi} is smaller than min_rise={min_rise:g}"
    if ceiling is None:
        return None
    if y_hi > ceiling + min_rise:
        return (f"the final level {sign * y_hi:.3g} lies beyond the ceiling {sign * ceiling:g} (the "
                "metric's best value); pass ceiling=None for a metric without one")
    if rise < min_closed * (ceiling - y_lo):
        return (f"the change {lo_hi} closes {rise / (ceiling - y_lo):.0%} of the gap to the ceiling "
                f"{sign * ceiling:g}, less than min_closed={min_closed:.0%}")
    return None


def find_transition(
    steps,
    values,
    direction: str = "up",
    min_rise: float = 0.2,
    ceiling: float | None | Literal["auto"] = "auto",
    min_closed: float = 2 / 3,
    window: int = 3,
) -> Transition:
    """The transition of a metric curve (see the module docstring for the rules).

    `ceiling`: the metric's best value; "auto" is 1.0 for direction="up" (accuracies) and None
    (no ceiling rule) for "down". Non-finite values (a diverged loss) are dropped.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if not (ceiling is None or ceiling == "auto" or isinstance(ceiling, (int, float))):
        raise ValueError(f"ceiling must be a number, None or 'auto', got {ceiling!r}")
    if not 0 < min_closed <= 1:
        raise ValueError(f"min_closed must lie in (0, 1], got {min_closed!r}")
    steps = np.asarray(steps, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(y)
    steps, y = steps[finite], y[finite]
    if len(y) == 0:
        return Transition(None, None, float("nan"), float("nan"), reason="no finite evaluations")
    order = np.argsort(steps, kind="stable")
    steps, y = steps[order], y[order]
    sign = -1.0 if direction == "down" else 1.0
    if ceiling == "auto":
        ceiling = 1.0 if direction == "up" else None
    ceiling = None if ceiling is None else sign * float(ceiling)
    smooth = running_median(sign * y, window)

    n = len(smooth)
    k, w = max(1, n // 10), max(3, n // 10)
    y_hi = float(np.median(smooth[-k:]))
    low = smooth <= y_hi - min_rise
    seeds = np.nonzero(low[:-1] & ~low[1:])[0]  # last low evaluation before a higher one
    if len(seeds) == 0:
        y_lo = float(smooth[0])
        why = f"the curve never lies min_rise={min_rise:g} below its final level {sign * y_hi:.3g}"
        return Transition(None, None, sign * y_lo, sign * y_hi, reason=why)

    last_rise = None
    for seed in seeds[::-1]:
        seed = int(seed)
        start = _foot(smooth, seed, y_hi, w)
        y_lo = _plateau(smooth, start, w)
        why = _why_not(y_lo, y_hi, min_rise, ceiling, min_closed, sign)
        if why is None:
            mid = y_lo + 0.5 * (y_hi - y_lo)
            if smooth[seed] >= mid:  # walk back to the crossing
                below = np.nonzero(smooth[start : seed + 1] < mid)[0]
                middle = start + int(below[-1]) + 1
            else:  # walk forward to it
                middle = _first_at_or_above(smooth, mid, seed)
            end = None if middle is None else _first_at_or_above(smooth, y_lo + TOP * (y_hi - y_lo), middle)
            if end is not None:
                return Transition(
                    transition_step=int(steps[middle]),
                    width=int(steps[end] - steps[start]),
                    y_lo=sign * y_lo,
                    y_hi=sign * y_hi,
                    start_step=int(steps[start]),
                    end_step=int(steps[end]),
                )
            why = f"the change from {sign * y_lo:.3g} never gets 90% of the way to {sign * y_hi:.3g}"
        if last_rise is None:  # the last rise, the one that led to the final level
            last_rise = (y_lo, why)
    y_lo, why = last_rise
    return Transition(None, None, sign * y_lo, sign * y_hi, reason=why)


@dataclass(frozen=True)
class Transience:
    """A rise followed by a lasting fall (Singh et al. 2023: ICL that emerges, then fades).

    The levels are the smoothed curve's (running median), in the metric's units."""

    peak_step: int | None  # the first evaluation at the smoothed curve's highest point
    peak_value: float  # its value
    half_step: int | None  # the first evaluation after the peak below the level where it has
    #                        lost half its gain (peak − ½ (peak − start))
    final_value: float  # the final level: median of the smoothed last 10% of evaluations
    start_value: float  # where the rise began: the smoothed first evaluation
    reason: str | None = None  # why there is no transience; None when there is one

    @property
    def transient(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict:
        """As JSON can hold it: a level that could not be read (NaN) is None."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def find_transience(steps, values, direction: str = "up", min_rise: float = 0.2, min_loss: float = 0.5,
                    window: int | None = None) -> Transience:
    """Whether a metric rose and then lastingly fell back, and where.

    With y the curve smoothed by a centred running median over `window` evaluations (default:
    max(3, n // 20), odd), y₀ its first value, the peak P = max y (first evaluation at it) and
    the final level F = the median of the last 10% of y:
    - the gain is G = P − y₀, the fall P − F; the curve is *transient* when G ≥ `min_rise`
      (metric units), the fall is at least `min_loss` · G (half the gain by default), and the
      peak lies before the last 10% of evaluations;
    - `half_step` is the first evaluation after the peak below P − ½ G. The fall must last to
      the end (F is read on the last 10%), so a dip that recovers is not a fall; with
      min_loss < ½ a transient curve may stay above P − ½ G and its half_step is None.
    A curve that rises and stays (with noise), or never rises, has no transience, and `reason`
    says which rule failed. `direction="down"` reads a falling metric (a loss) by flipping
    the sign. Non-finite values are dropped."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    if not 0 < min_loss <= 1:
        raise ValueError(f"min_loss must lie in (0, 1], got {min_loss!r}")
    steps = np.asarray(steps, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(y)
    steps, y = steps[finite], y[finite]
    order = np.argsort(steps, kind="stable")
    steps, y = steps[order], y[order]
    nan = float("nan")
    if len(y) < 5:
        return Transience(None, nan, None, nan, nan, reason=f"{len(y)} finite evaluations: too few to see a rise and a fall")
    sign = -1.0 if direction == "down" else 1.0
    n = len(y)
    if window is None:
        window = max(3, (n // 20) | 1)
    smooth = running_median(sign * y, window)
    k = max(1, n // 10)
    start, final = float(smooth[0]), float(np.median(smooth[-k:]))
    peak_at = int(np.argmax(smooth))
    peak = float(smooth[peak_at])
    gain = peak - start
    values_out = dict(peak_step=int(steps[peak_at]), peak_value=sign * peak, final_value=sign * final, start_value=sign * start)
    if gain < min_rise:
        return Transience(half_step=None, **values_out, reason=f"the rise from {sign * start:.3g} to {sign * peak:.3g} is smaller than min_rise={min_rise:g}")
    if peak_at >= n - k:
        return Transience(half_step=None, **values_out, reason="the peak lies in the last 10% of evaluations: no fall yet")
    if peak - final < min_loss * gain:
        return Transience(half_step=None, **values_out, reason=(
            f"the final level {sign * final:.3g} keeps {(final - start) / gain:.0%} of the gain; a fall loses at least {min_loss:.0%}"))
    below = np.nonzero(smooth[peak_at:] < peak - 0.5 * gain)[0]
    return Transience(half_step=int(steps[peak_at + int(below[0])]) if len(below) else None, **values_out)
