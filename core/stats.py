"""Statistics a benchmark's figures need: a summary with its uncertainty, a test for a real
change between two samples, and the stability of one run's step times.

- ``summarize``: mean, median, 95% confidence interval of the mean (Student's t), coefficient
  of variation, and MLPerf's olympic mean (drop the fastest and the slowest) where n ≥ 5.
- ``changed``: Welch's t-test (unequal variances) between two samples: is the difference of
  means larger than their noise explains?
- ``stability``: was one run disturbed? Stalls that cost a real share of the window, a
  persistent shift (one change point, ``ruptures``' binary segmentation, confirmed by a rank
  test) and a warm-up that had not settled when the window began (``StabilityRule``); the
  series' spread (a robust CV from the median absolute deviation) is reported beside it.
- ``find_straggler``: the rank the others waited for, from every window step's per-rank ready times.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np


def _scipy_stats():
    # Imported when a statistic is computed, not with the module: it takes seconds, and every
    # rank of every run imports this module at start-up.
    from scipy import stats

    return stats


# MLPerf's olympic mean needs at least this many results (the ResNet rule is 5).
OLYMPIC_MIN_N = 5


@dataclass(frozen=True)
class StabilityRule:
    """What makes a run's step times say it was disturbed. Steady noise, however large (JPEG
    decoding sharing the rank's cores moves step times by 10-30% from step to step), is the
    workload's own and is no disturbance; these are:

    - ``stall`` / ``stall_share``: steps over ``stall`` × the median that together took more than
      ``stall_share`` of the window beyond the median (a rank stopped, a node paging);
    - ``shift``: a persistent change of the step time by at least this factor (one change point,
      ruptures' binary segmentation on log step times, confirmed by a Mann-Whitney test at
      ``alpha``), mid-window (another job landed on the node) or at its start (a warm-up that had
      not settled).

    The defaults come from real runs with planted causes (benchmarks/calibration/detectors.py,
    docs/method.md has the table)."""

    stall: float = 3.0
    stall_share: float = 0.05
    shift: float = 1.10
    alpha: float = 0.01


RULE = StabilityRule()


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    std: float | None  # sample standard deviation; None for n = 1
    ci_low: float | None  # 95% confidence interval of the mean; None for n = 1
    ci_high: float | None
    cv: float | None  # std / mean
    olympic_mean: float | None  # mean without the lowest and highest value; None for n < 5
    low: float
    high: float


def summarize(values: list[float] | tuple[float, ...]) -> Summary | None:
    """The summary of the finite values, or None when there are none."""
    scipy_stats = _scipy_stats()
    data = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not data:
        return None
    n = len(data)
    mean = statistics.fmean(data)
    std = statistics.stdev(data) if n > 1 else None
    ci_low = ci_high = None
    if std is not None:
        half = float(scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci_low, ci_high = mean - half, mean + half
    ordered = sorted(data)
    olympic = statistics.fmean(ordered[1:-1]) if n >= OLYMPIC_MIN_N else None
    cv = std / mean if std is not None and mean else None
    return Summary(n, mean, statistics.median(data), std, ci_low, ci_high, cv, olympic, ordered[0], ordered[-1])


def changed(baseline: list[float] | tuple[float, ...], current: list[float] | tuple[float, ...], alpha: float = 0.05) -> bool | None:
    """Whether the means differ beyond the noise (Welch's t-test at ``alpha``); None when a
    side has fewer than two values (no noise estimate: only a threshold can decide)."""
    scipy_stats = _scipy_stats()
    if len(baseline) < 2 or len(current) < 2:
        return None
    if statistics.pvariance(baseline) == 0 and statistics.pvariance(current) == 0:
        return statistics.fmean(baseline) != statistics.fmean(current)
    result = scipy_stats.ttest_ind(current, baseline, equal_var=False)
    return bool(result.pvalue < alpha)


def robust_cv(values: list[float]) -> float | None:
    """1.4826 × MAD / median: the CV a normal sample would have, unmoved by a few outliers."""
    if len(values) < 2:
        return None
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return 1.4826 * mad / median if median else None


@dataclass(frozen=True)
class Stability:
    unstable: bool
    reasons: tuple[str, ...]
    cv: float | None  # robust CV of the step times (reported, not judged: steady noise is no disturbance)
    shift_at: int | None  # index into the series where a persistent shift begins


def stability(step_times: list[float], rule: StabilityRule = RULE) -> Stability:
    """Judge one run's measured step times (in order). Fewer than 10 steps: too few to tell."""
    times = [t for t in step_times if t is not None and math.isfinite(t)]
    cv = robust_cv(times)
    if len(times) < 10:
        return Stability(False, (), cv, None)
    reasons: list[str] = []
    median = statistics.median(times)
    stalls = [t for t in times if t > rule.stall * median]
    lost = sum(t - median for t in stalls)
    if lost > rule.stall_share * sum(times):
        reasons.append(
            f"{len(stalls)} stalled step(s) over {rule.stall:g}× the median cost {lost / sum(times):.0%} of the window "
            f"({lost:.3g} s)"
        )
    shift_at = _shift(times, rule)
    if shift_at is not None:
        before, after = statistics.median(times[:shift_at]), statistics.median(times[shift_at:])
        if shift_at <= len(times) // 5 and before > after:
            reasons.append(
                f"warm-up not settled: the first {shift_at} steps took {before * 1e3:.4g} ms, the rest "
                f"{after * 1e3:.4g} ms (raise timing_warmup_steps)"
            )
        else:
            reasons.append(f"step time shifted at step {shift_at} of the window: {before * 1e3:.4g} → {after * 1e3:.4g} ms")
    return Stability(bool(reasons), tuple(reasons), cv, shift_at)


def _shift(times: list[float], rule: StabilityRule) -> int | None:
    """The start of a persistent level change, or None. The candidate is ruptures' best
    single split of the series; it counts when the two sides' medians differ by at least
    ``rule.shift`` and a Mann-Whitney test says they are not one distribution."""
    scipy_stats = _scipy_stats()
    import ruptures

    series = np.log(np.asarray(times, dtype=float))  # relative changes weigh alike at any speed
    min_size = max(3, len(times) // 20)
    try:
        (split, _end) = ruptures.Binseg(model="l2", min_size=min_size, jump=1).fit(series).predict(n_bkps=1)
    except ruptures.exceptions.BadSegmentationParameters:
        return None
    before, after = times[:split], times[split:]
    low, high = sorted((statistics.median(before), statistics.median(after)))
    if low <= 0 or high / low < rule.shift:
        return None
    if scipy_stats.mannwhitneyu(before, after, alternative="two-sided").pvalue >= rule.alpha:
        return None
    return split


STRAGGLER_ALPHA = 1e-3  # a rank last to be ready more often than chance explains, at this level
STRAGGLER_LAG = 0.05  # ... and by at least this share of the step on average


@dataclass(frozen=True)
class Straggler:
    """A rank the others waited for, judged from every window step's per-rank ready times."""

    rank: int
    last_share: float  # share of the window's steps in which it was the last rank ready
    lag_sec_per_step: float  # mean over steps of its ready time minus the median of the others'
    cost_sec: float  # what the others waited for it over the window: its positive lags summed
    slower_by: float  # its mean ready time over the median of the others' means, minus 1


def find_straggler(
    ready: list[list[float | None]], step_sec: float | None = None, alpha: float = STRAGGLER_ALPHA, min_lag: float = STRAGGLER_LAG
) -> Straggler | None:
    """The rank the others waited for, or None. ``ready[r][i]``: seconds from the start of
    window step ``i`` on rank ``r`` to its last gradient being handed to a reduction, i.e.
    its own data wait and compute; peers that were ready earlier wait that long at the
    collective. A rank counts when it was last more often than chance explains (binomial
    test at ``alpha`` against 1/n) and its mean lag behind the others' median is at least
    ``min_lag`` of the mean step (``step_sec``; its own mean ready time without one)."""
    n = len(ready)
    steps = min((len(row) for row in ready), default=0)
    if n < 2 or steps < 5:
        return None
    rows = [[row[i] for row in ready] for i in range(steps)]
    rows = [row for row in rows if all(v is not None for v in row)]
    if len(rows) < 5:
        return None
    last = [max(range(n), key=lambda r: row[r]) for row in rows]
    rank = max(range(n), key=last.count)
    lags = [row[rank] - statistics.median([v for r, v in enumerate(row) if r != rank]) for row in rows]
    lag = statistics.fmean(lags)
    own = statistics.fmean(row[rank] for row in rows)
    others = statistics.median(statistics.fmean(row[r] for row in rows) for r in range(n) if r != rank)
    scale = step_sec or own
    share = last.count(rank) / len(rows)
    chance = _scipy_stats().binomtest(last.count(rank), len(rows), 1 / n, alternative="greater").pvalue
    if chance >= alpha or scale <= 0 or lag < min_lag * scale:
        return None
    return Straggler(rank, share, lag, sum(max(0.0, x) for x in lags), own / others - 1 if others > 0 else 0.0)
