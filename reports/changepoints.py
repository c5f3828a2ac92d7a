"""Persistent steps in a nightly series: where a benchmark's level changed, not where one night
was odd.

1. Noise. σ is estimated from the successive differences, ``1.4826 · MAD(diff) / √2``: a step
   moves one difference and an outlier two, so neither inflates it, as both would inflate the
   series' own standard deviation. It is floored at ``NOISE_FLOOR`` of the series' level, so a
   metric that repeats to the last bit (top-1 of a deterministic run) still gets a finite
   threshold.
2. Candidates. ruptures' PELT on the L2 cost (``KernelCPD`` with the linear kernel, its compiled
   implementation; hundreds of nights take a millisecond) with the penalty
   ``PENALTY · σ² · ln n``, the BIC-like choice for a change in mean of a series of noise σ.
   It places steps; it does not decide them.
3. Persistence. A candidate stands when each level holds: at least ``min_nights`` nights on
   either side of it lie on their level's side of the midpoint between the two levels (two bad
   nights among good ones make no level), and the medians of those two segments differ by
   more than ``Z`` standard errors (a median's is ``1.2533 · σ / √k``) and by more than the
   metric's smallest change that matters (its tolerance). Medians, so that an outlier inside a
   segment moves nothing. The weakest failing candidate is dropped and its two segments merged,
   until every remaining one stands: a single outlier night, which PELT may cut out as a
   segment of its own, merges back into its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ruptures
from scipy.stats import median_abs_deviation

PENALTY = 2.0
Z = 4.0
NOISE_FLOOR = 1e-3
MEDIAN_SE = math.sqrt(math.pi / 2)  # standard error of a normal sample's median / that of its mean


@dataclass(frozen=True)
class Step:
    """A change of level: ``index`` is the first point at the new level."""

    index: int
    before: float  # median of the segment before
    after: float  # median of the segment after
    nights_before: int
    nights_after: int
    z: float  # |after - before| in standard errors of the difference of the two medians
    held_before: int  # nights before it on the old level's side of the midpoint between the levels
    held_after: int  # nights after it on the new level's side

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def relative(self) -> float:
        return self.change / abs(self.before) if self.before else math.inf


def noise_sigma(values: Sequence[float]) -> float:
    """The night-to-night noise of a series, robust to steps and outliers (see module docstring)."""
    y = np.asarray(values, dtype=float)
    level = float(np.median(np.abs(y))) if len(y) else 0.0
    floor = NOISE_FLOOR * level if level else NOISE_FLOOR
    if len(y) < 3:
        return floor
    sigma = float(median_abs_deviation(np.diff(y), scale="normal")) / math.sqrt(2)
    return max(sigma, floor)


def find_steps(
    values: Sequence[float],
    min_nights: int = 3,
    smallest_change: Callable[[float], float] = lambda level: 0.0,
) -> list[Step]:
    """The persistent steps of ``values`` (one value per night, oldest first), in order.

    ``min_nights``: nights each level must hold (2 or more). ``smallest_change(level)``: the
    least change, in the metric's units, that counts at a level (the metric's tolerance)."""
    y = np.asarray(values, dtype=float)
    n = len(y)
    if n < 2 * min_nights:
        return []
    sigma = noise_sigma(y)
    penalty = PENALTY * sigma**2 * math.log(n)
    found = ruptures.KernelCPD(kernel="linear", min_size=2).fit(y).predict(pen=penalty)
    bounds = [0, *found[:-1], n]  # ruptures ends its list with n
    while len(bounds) > 2:
        steps = [_step(y, bounds, i, sigma) for i in range(1, len(bounds) - 1)]
        weakest, worst = None, math.inf
        for i, step in enumerate(steps, start=1):
            if not _stands(step, min_nights, smallest_change):
                if step.z < worst:
                    weakest, worst = i, step.z
        if weakest is None:
            return steps
        del bounds[weakest]
    return []


def _step(y: np.ndarray, bounds: list[int], i: int, sigma: float) -> Step:
    before, after = y[bounds[i - 1] : bounds[i]], y[bounds[i] : bounds[i + 1]]
    b, a = float(np.median(before)), float(np.median(after))
    se = MEDIAN_SE * sigma * math.sqrt(1 / len(before) + 1 / len(after))
    mid, up = (a + b) / 2, np.sign(a - b)
    held_before, held_after = int(np.sum((before - mid) * up < 0)), int(np.sum((after - mid) * up > 0))
    return Step(int(bounds[i]), b, a, len(before), len(after), abs(a - b) / se, held_before, held_after)


def _stands(step: Step, min_nights: int, smallest_change: Callable[[float], float]) -> bool:
    return (
        min(step.held_before, step.held_after) >= min_nights
        and step.z > Z
        and abs(step.change) > smallest_change(step.before)
    )
