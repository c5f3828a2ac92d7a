"""Statistics a benchmark's figures need: a summary with its uncertainty, a test for a real
change between two samples, and the stability of one run's step times.

- ``summarize``: mean, median, 95% confidence interval of the mean (Student's t), coefficient
  of variation, and MLPerf's olympic mean (drop the fastest and the slowest) where n ≥ 5.
- ``changed``: Welch's t-test (unequal variances) between two samples: is the difference of
  means larger than their noise explains?
- ``stability``: is one run's step-time series steady? Its spread (a robust CV, from the median
  absolute deviation, so one stall does not read as noise), stalls that cost a real share of the
  window, a persistent shift (one change point, ``ruptures``' binary segmentation, confirmed by a
  rank test) and a warm-up that had not settled when the window began.
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
UNSTABLE_CV = 0.10  # pyperf warns at a standard deviation of 10% of the mean
STALL = 3.0  # a step this many times the median is a stall
STALL_SHARE = 0.05  # stalls that took more than this share of the window make a run unstable
SHIFT = 0.10  # a persistent change of the step time by more than this is a shift
ALPHA = 0.01  # for the rank test that confirms a shift


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
    cv: float | None  # robust CV of the step times
    shift_at: int | None  # index into the series where a persistent shift begins


def stability(step_times: list[float]) -> Stability:
    """Judge one run's measured step times (in order). Fewer than 10 steps: too few to tell."""
    times = [t for t in step_times if t is not None and math.isfinite(t)]
    cv = robust_cv(times)
    if len(times) < 10:
        return Stability(False, (), cv, None)
    reasons: list[str] = []
    if cv is not None and cv > UNSTABLE_CV:
        reasons.append(f"step times vary: robust CV {cv:.0%} (> {UNSTABLE_CV:.0%})")
    median = statistics.median(times)
    stalls = [t for t in times if t > STALL * median]
    if sum(stalls) > STALL_SHARE * sum(times):
        reasons.append(
            f"{len(stalls)} stalled step(s) over {STALL:g}× the median took {sum(stalls) / sum(times):.0%} of the window"
        )
    shift_at = _shift(times)
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


def _shift(times: list[float]) -> int | None:
    """The start of a persistent level change, or None. The candidate is ruptures' best
    single split of the series; it counts when the two sides' medians differ by more than
    ``SHIFT`` and a Mann-Whitney test says they are not one distribution."""
    min_size = max(3, len(times) // 20)
    if _no_shift_possible(times, min_size):
        return None  # ruptures and scipy.stats take a second to import, in every run's record
    return _change_point_shift(times, min_size)


def _no_shift_possible(times: list[float], min_size: int) -> bool:
    """True when no split into sides of at least ``min_size`` steps can have medians more
    than ``SHIFT`` apart. A side of k >= m steps has its median between the ceil(m/2)-th
    smallest and the ceil(m/2)-th largest step of the whole series (its middle elements are
    among the series' own), so both medians lie in that range, and its width bounds their
    ratio."""
    ordered = sorted(times)
    j = math.ceil(min_size / 2)
    if len(ordered) < 2 * min_size:
        return True  # no admissible split at all
    low, high = ordered[j - 1], ordered[-j]
    return low > 0 and high / low - 1 <= SHIFT


def _change_point_shift(times: list[float], min_size: int) -> int | None:
    import ruptures

    series = np.log(np.asarray(times, dtype=float))  # relative changes weigh alike at any speed
    try:
        (split, _end) = ruptures.Binseg(model="l2", min_size=min_size, jump=1).fit(series).predict(n_bkps=1)
    except ruptures.exceptions.BadSegmentationParameters:
        return None
    before, after = times[:split], times[split:]
    low, high = sorted((statistics.median(before), statistics.median(after)))
    if low <= 0 or high / low - 1 <= SHIFT:
        return None
    if _scipy_stats().mannwhitneyu(before, after, alternative="two-sided").pvalue >= ALPHA:
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
    if scale <= 0 or lag < min_lag * scale:
        return None  # checked first: the binomial test needs scipy.stats, a second's import in every run
    chance = _scipy_stats().binomtest(last.count(rank), len(rows), 1 / n, alternative="greater").pvalue
    if chance >= alpha:
        return None
    return Straggler(rank, share, lag, sum(max(0.0, x) for x in lags), own / others - 1 if others > 0 else 0.0)
