"""Developmental stages from an LLC curve, read as Hoogland et al. (TMLR 2025) read them: stage
boundaries sit at the critical points of λ̂ against log step, where its slope vanishes, either
because it turns (a peak or a trough: an increasing stage meets a decreasing one) or because
it pauses (a plateau between two stretches of change in the same direction).

The rule, as implemented (the paper smooths its curves and marks the boundaries by eye and by
the slope's zeros; the constants here are this lab's, chosen on synthetic curves in
tests/test_stages.py and stated in docs/measures.md):

1. Points: checkpoints at step ≥ 1, x = log10(step), y = λ̂.
2. Smoothing: Gaussian kernel regression in x with bandwidth `bandwidth` decades (0.15: the
   curve at 10^x averages the checkpoints within about ±40% of that step), on a grid of 256
   points from the first to the last checkpoint; slope s(x) = dŷ/dx (per decade).
3. The change that counts: `min_change` × (max ŷ − min ŷ), at least `noise` (the mean sd
   over chains, when given, times 2), so noise of the chains is not a stage.
4. Turning points: the extrema of ŷ that survive a zigzag filter, each differing from its
   neighbouring extremum (and the curve's ends) by at least the change that counts.
5. Plateaus: inside each monotone stretch between turning points, a local minimum of |s|
   below `flat` × the stretch's largest |s|, with at least the change that counts on each
   side of it within the stretch.
6. Levelling: a flat stretch (|s| below `flat` × the stretch's largest |s|) of at least
   `min_flat` decades (0.3) at the start or end of the curve, next to a change that counts,
   makes a boundary where it meets the change: `plateau_end` (the LLC starts to move) or
   `plateau_start` (it settles).
7. Each boundary's window: the steps around it where |s| stays below `flat` × the largest |s|
   of the neighbouring stretches (for a turning point: where the curve is within its top/bottom),
   `start_step`..`end_step`; `step` is the critical point itself.

Stages are the intervals between boundaries; each is `increasing` or `decreasing` (the sign
of ŷ's change across it), Hoogland et al.'s type A (LLC up) and type B (LLC down).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

GRID = 256


@dataclass(frozen=True)
class StageBoundary:
    step: int  # the critical point (rounded to a step)
    kind: str  # peak | trough | plateau (mid-curve) | plateau_end (flat start ends) | plateau_start (flat end begins)
    value: float  # the smoothed λ̂ there
    start_step: int  # the window of the critical point
    end_step: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stages:
    boundaries: tuple[StageBoundary, ...]
    stages: tuple[dict, ...]  # {"start_step", "end_step", "direction", "change"}
    reason: str | None = None  # why there are no boundaries

    def to_dict(self) -> dict:
        return {"boundaries": [b.to_dict() for b in self.boundaries], "stages": list(self.stages), "reason": self.reason}


def smooth(x: np.ndarray, y: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Nadaraya–Watson: ŷ(g) = Σ_i K(g − x_i) y_i / Σ_i K(g − x_i), K Gaussian of sd `bandwidth`."""
    weights = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bandwidth) ** 2)
    return (weights @ y) / weights.sum(axis=1)


def _extrema(y: np.ndarray, threshold: float) -> list[int]:
    """The first and last index and, between them, the confirmed turning points of y: extrema
    from which y moves back by at least `threshold` (a zigzag filter, so noise smaller than
    `threshold` makes no turning point)."""
    pivots = [0]
    low = high = 0  # before the first move of `threshold`: the lowest and highest so far
    trend, extreme = 0, 0
    for i in range(1, len(y)):
        if trend == 0:
            low = i if y[i] < y[low] else low
            high = i if y[i] > y[high] else high
            if y[i] - y[low] >= threshold:
                if y[0] - y[low] >= threshold:
                    pivots.append(low)
                trend, extreme = 1, i
            elif y[high] - y[i] >= threshold:
                if y[high] - y[0] >= threshold:
                    pivots.append(high)
                trend, extreme = -1, i
        elif trend > 0:
            if y[i] > y[extreme]:
                extreme = i
            elif y[extreme] - y[i] >= threshold:
                pivots.append(extreme)
                trend, extreme = -1, i
        else:
            if y[i] < y[extreme]:
                extreme = i
            elif y[i] - y[extreme] >= threshold:
                pivots.append(extreme)
                trend, extreme = 1, i
    pivots.append(len(y) - 1)
    return pivots


def _window(slope: np.ndarray, at: int, level: float) -> tuple[int, int]:
    lo = hi = at
    while lo > 0 and abs(slope[lo - 1]) < level:
        lo -= 1
    while hi < len(slope) - 1 and abs(slope[hi + 1]) < level:
        hi += 1
    return lo, hi


def find_stages(
    steps,
    values,
    *,
    bandwidth: float = 0.15,
    min_change: float = 0.15,
    flat: float = 0.25,
    noise: float = 0.0,
    min_flat: float = 0.3,
) -> Stages:
    """Stage boundaries of an LLC curve (λ̂ at checkpoint `steps`); see the module docstring."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = (steps >= 1) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps)
    steps, values = steps[order], values[order]
    if len(steps) < 5:
        return Stages((), (), reason=f"{len(steps)} estimates at step >= 1; at least 5 are needed")
    x = np.log10(steps)
    grid = np.linspace(x[0], x[-1], GRID)
    fitted = smooth(x, values, grid, bandwidth)
    slope = np.gradient(fitted, grid)
    span = float(fitted.max() - fitted.min())
    threshold = max(min_change * span, 2.0 * noise)
    if span < threshold or span == 0:
        return Stages((), ({"start_step": int(steps[0]), "end_step": int(steps[-1]), "direction": "flat", "change": span},),
                      reason=f"λ̂ changes by {span:.3g} in all, less than the change that counts ({threshold:.3g})")
    pivots = _extrema(fitted, threshold)
    points: list[tuple[int, str]] = []
    for a, b in zip(pivots[:-1], pivots[1:]):
        if a != 0:
            points.append((a, "peak" if fitted[a] > fitted[b] else "trough"))
        points += [(p, "plateau") for p in _plateaus(fitted, slope, a, b, threshold, flat)]
    points += _level_ends(grid, fitted, slope, pivots, threshold, flat, min_flat)
    points.sort()
    boundaries = []
    for index, kind in points:
        level = flat * float(np.abs(slope).max())
        lo, hi = _window(slope, index, level)
        boundaries.append(StageBoundary(
            step=int(round(10 ** grid[index])), kind=kind, value=float(fitted[index]),
            start_step=int(round(10 ** grid[lo])), end_step=int(round(10 ** grid[hi])),
        ))
    edges = [0, *[index for index, _ in points], GRID - 1]
    stages = tuple(
        {"start_step": int(round(10 ** grid[a])), "end_step": int(round(10 ** grid[b])),
         "direction": "increasing" if fitted[b] >= fitted[a] else "decreasing", "change": float(fitted[b] - fitted[a])}
        for a, b in zip(edges[:-1], edges[1:])
    )
    reason = None if boundaries else f"no turning point, plateau or levelling with a change of at least {threshold:.3g}"
    return Stages(tuple(boundaries), stages, reason)


def _plateaus(fitted: np.ndarray, slope: np.ndarray, a: int, b: int, threshold: float, flat: float) -> list[int]:
    """Local minima of |slope| strictly inside the monotone stretch a..b, below `flat` × its
    largest |slope|, with at least `threshold` of change on each side within the stretch."""
    if b - a < 3:
        return []
    magnitude = np.abs(slope[a : b + 1])
    level = flat * magnitude.max()
    found = []
    for i in range(1, len(magnitude) - 1):
        j = a + i
        if magnitude[i] <= magnitude[i - 1] and magnitude[i] < magnitude[i + 1] and magnitude[i] < level:
            if abs(fitted[j] - fitted[a]) >= threshold and abs(fitted[b] - fitted[j]) >= threshold:
                found.append(j)
    return found


def _level_ends(grid, fitted, slope, pivots, threshold, flat, min_flat) -> list[tuple[int, str]]:
    """A curve that is flat for at least `min_flat` decades at its start (end) before (after) a
    change that counts: a boundary where the flat stretch meets the change."""
    out = []
    for a, b, at_start in ((pivots[0], pivots[1], True), (pivots[-2], pivots[-1], False)):
        if abs(fitted[b] - fitted[a]) < threshold:
            continue
        level = flat * np.abs(slope[a : b + 1]).max()
        i = a if at_start else b
        step = 1 if at_start else -1
        while a <= i + step <= b and abs(slope[i + step]) < level:
            i += step
        if abs(grid[i] - grid[a if at_start else b]) >= min_flat:
            out.append((i, "plateau_end" if at_start else "plateau_start"))
    return out


def stages_of_run(metrics) -> dict[str, dict]:
    """{LLC metric: Stages.to_dict()} for every LLC estimate in a run's metrics (long format:
    step, metric, value), the chains' mean sd as the noise level."""
    from icl_lab.llc.config import is_estimate

    out = {}
    for name in sorted({m for m in metrics["metric"].unique().to_list() if is_estimate(m)}):
        curve = metrics.filter(metrics["metric"] == name).sort("step")
        sd = metrics.filter(metrics["metric"] == f"{name}.std")["value"]
        noise = float(sd.mean()) if sd.len() else 0.0
        out[name] = find_stages(curve["step"].to_numpy(), curve["value"].to_numpy(), noise=noise).to_dict()
    return out
