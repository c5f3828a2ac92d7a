"""Statistics a benchmark's figures need: a summary with its uncertainty, a test for a real
change between two samples, and the stability of one run's step times.

- ``summarize``: mean, median, 95% confidence interval of the mean (Student's t), coefficient
  of variation, and MLPerf's olympic mean (drop the fastest and the slowest) where n ≥ 5.
- ``difference``: the difference of two samples' means with its Welch standard error and
  two-sided p-value (None where a side gives no noise estimate); ``changed`` asks whether it is
  larger than their noise explains; ``repeats_for`` how many repeats per side ``compare``'s
  one-sided test needs to tell a difference of a given size from that noise (a power
  calculation); ``ci_half_width``
  the 95% confidence interval's half-width of one sample's mean.
- ``stability``: was one run disturbed? Stalls that cost a real share of the window, a
  persistent shift (one change point, ``ruptures``' binary segmentation, confirmed by a rank
  test) and a warm-up that had not settled when the window began (``StabilityRule``); the
  series' spread (a robust CV from the median absolute deviation) is reported beside it.
- ``find_straggler``: the rank the others waited for, from every window step's per-rank ready times.
"""

from __future__ import annotations

import heapq
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
    - ``shift`` / ``shift_share``: a persistent change of the step time by at least the factor
      ``shift`` (one change point, ruptures' binary segmentation on log step times, confirmed by
      a Mann-Whitney test at ``alpha``) that moved the window's mean step by at least
      ``shift_share``: the shorter side's share of the steps times the change. Mid-window it is
      another job landing on the node; at the start a warm-up that had not settled. A shared
      machine's own drift moves a few steps at either end of a window by 10-30%; such a change
      moves the window's figures by a percent or two, and is no disturbance worth a flag.

    The defaults come from real runs with planted causes (benchmarks/calibration/detectors.py,
    docs/method.md has the table)."""

    stall: float = 3.0
    stall_share: float = 0.05
    shift: float = 1.10
    shift_share: float = 0.15
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


CHANGE_ALPHA = 0.05  # two-sided level of ``changed``
# One-sided level at which ``compare`` calls a change worse than its tolerance real. The gate
# asks a question with a direction ("did it get worse?"), so a two-sided test spends half its
# level on a direction that gates nothing. 0.04, not 0.05: chosen on the calibration campaigns'
# real A/A draws, where 0.05 gave up to 5.1% false regressions (above the 5% target) and 0.04
# at most 4.2%; 4.3% on a held-out campaign (docs/calibration.md, benchmarks/calibration/levels.py).
REGRESSION_ALPHA = 0.04
POWER = 0.8  # the chance a repeats estimate aims for of telling a real change of the observed size from noise
MOST_REPEATS = 1000  # repeats_for looks no further


@dataclass(frozen=True)
class Difference:
    """``mean(current) − mean(baseline)``, with Welch's standard error, degrees of freedom and
    two-sided p-value; the last three are None where there is no noise estimate."""

    value: float
    se: float | None
    df: float | None
    p_value: float | None
    sd_baseline: float | None
    sd_current: float | None

    @property
    def measured(self) -> bool:
        """Whether the repeats give a noise estimate to judge the difference against."""
        return self.p_value is not None

    @property
    def p_one_sided(self) -> float | None:
        """The one-sided p-value for a change in the direction observed: half the two-sided one
        (the t distribution is symmetric)."""
        return None if self.p_value is None else self.p_value / 2


def difference(baseline: list[float] | tuple[float, ...], current: list[float] | tuple[float, ...]) -> Difference:
    """The difference of means and, where both sides have two or more values and at least one
    of them a spread, Welch's t-test (unequal variances). Without a spread on either side
    (identical repeats: a deterministic metric, or one seed) there is no noise estimate: zero
    spread in a few repeats is not evidence of zero noise, so no test is made."""
    value = statistics.fmean(current) - statistics.fmean(baseline)
    sd_b = statistics.stdev(baseline) if len(baseline) > 1 else None
    sd_c = statistics.stdev(current) if len(current) > 1 else None
    if sd_b is None or sd_c is None or (sd_b == 0 and sd_c == 0):
        return Difference(value, None, None, None, sd_b, sd_c)
    vb, vc = sd_b**2 / len(baseline), sd_c**2 / len(current)
    se = math.sqrt(vb + vc)
    df = (vb + vc) ** 2 / (vb**2 / (len(baseline) - 1) + vc**2 / (len(current) - 1))
    p = float(2 * _scipy_stats().t.sf(abs(value) / se, df))
    return Difference(value, se, df, p, sd_b, sd_c)


def changed(
    baseline: list[float] | tuple[float, ...], current: list[float] | tuple[float, ...], alpha: float = CHANGE_ALPHA
) -> bool | None:
    """Whether the means differ beyond the noise (Welch's t-test at ``alpha``); None when the
    repeats give no noise estimate (a side with one value, or no spread on either side)."""
    found = difference(baseline, current)
    return None if found.p_value is None else found.p_value < alpha


def repeats_for(
    change: float, sd_baseline: float, sd_current: float, alpha: float = REGRESSION_ALPHA, power: float = POWER,
    most: int = MOST_REPEATS, sides: int = 1,
) -> int | None:  # fmt: skip
    """Repeats per side with which Welch's test at ``alpha`` (one-sided in the direction of
    ``change``, as ``compare``'s regression verdict tests, or two-sided with ``sides=2``) finds a true
    difference of ``change`` with probability ``power``, given these standard deviations of one
    run (the noncentral t distribution); None when more than ``most`` would be needed."""
    stats = _scipy_stats()
    spread = sd_baseline**2 + sd_current**2
    if change == 0 or spread == 0:
        return None if change == 0 else 2

    def achieved(n: int) -> float:
        se = math.sqrt(spread / n)
        df = spread**2 / ((sd_baseline**4 + sd_current**4) / (n - 1))
        critical = stats.t.ppf(1 - alpha / sides, df)
        shift = abs(change) / se
        value = float(stats.nct.sf(critical, df, shift) + (stats.nct.cdf(-critical, df, shift) if sides == 2 else 0.0))
        # scipy's noncentral t gives NaN far out in its tail: there the normal approximation holds
        return value if math.isfinite(value) else float(stats.norm.sf(critical - shift))

    high = 2
    while achieved(high) < power:  # power grows with n: double until it is reached ...
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(2, high // 2)
    while low < high:  # ... then the smallest n that reaches it
        middle = (low + high) // 2
        if achieved(middle) >= power:
            high = middle
        else:
            low = middle + 1
    return low


def ci_half_width(values: list[float] | tuple[float, ...], confidence: float = 0.95) -> float | None:
    """Half the width of the confidence interval of the mean (Student's t); None for n < 2."""
    if len(values) < 2:
        return None
    return float(_scipy_stats().t.ppf(0.5 + confidence / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


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
    min_size = max(3, len(times) // 20)
    if _no_shift_possible(times, min_size, rule):
        return None  # ruptures and scipy.stats take a second to import, in every run's record
    return _change_point_shift(times, min_size, rule)


def _no_shift_possible(times: list[float], min_size: int, rule: StabilityRule) -> bool:
    """True when no split into sides of at least ``min_size`` steps passes the two median tests
    a shift must pass (sides' medians ``rule.shift`` apart, moving the window's mean by
    ``rule.shift_share``): the change-point search can only pick one of these splits, so it
    could find no shift either. Every split is checked, from running medians (milliseconds for
    thousands of steps), so steady runs, noisy ones included, never import the search."""
    n = len(times)
    if n < 2 * min_size:
        return True  # no admissible split at all
    left, right = _running_medians(times), _running_medians(times[::-1])[::-1]
    slack = 1 - 1e-9  # running and library medians may round apart: never skip a borderline split
    for split in range(min_size, n - min_size + 1):
        low, high = sorted((left[split - 1], right[split]))
        if low <= 0:
            continue  # the search rejects such a split too
        if high / low >= rule.shift * slack and min(split, n - split) / n * (high / low - 1) >= rule.shift_share * slack:
            return False
    return True


def _running_medians(values: list[float]) -> list[float]:
    """``out[k]``: the median of ``values[:k + 1]`` (two heaps: the lower half as a max-heap)."""
    lower: list[float] = []  # negated
    upper: list[float] = []
    out = []
    for value in values:
        if lower and value > -lower[0]:
            heapq.heappush(upper, value)
        else:
            heapq.heappush(lower, -value)
        if len(lower) > len(upper) + 1:
            heapq.heappush(upper, -heapq.heappop(lower))
        elif len(upper) > len(lower):
            heapq.heappush(lower, -heapq.heappop(upper))
        out.append(-lower[0] if len(lower) > len(upper) else (-lower[0] + upper[0]) / 2)
    return out


def _change_point_shift(times: list[float], min_size: int, rule: StabilityRule) -> int | None:
    import ruptures

    series = np.log(np.asarray(times, dtype=float))  # relative changes weigh alike at any speed
    try:
        (split, _end) = ruptures.Binseg(model="l2", min_size=min_size, jump=1).fit(series).predict(n_bkps=1)
    except ruptures.exceptions.BadSegmentationParameters:
        return None
    before, after = times[:split], times[split:]
    low, high = sorted((statistics.median(before), statistics.median(after)))
    if low <= 0 or high / low < rule.shift:
        return None
    if min(split, len(times) - split) / len(times) * (high / low - 1) < rule.shift_share:
        return None  # too short or too small a change to move the window's figures
    if _scipy_stats().mannwhitneyu(before, after, alternative="two-sided").pvalue >= rule.alpha:
        return None
    return split


STRAGGLER_ALPHA = 1e-3  # a rank behind the others more than chance explains, at this level
STRAGGLER_LAG = 0.10  # ... and by at least this share of the step on average (benchmarks/calibration/detectors.py sweep)


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
    collective. The candidate is the rank last most often. It counts when its mean lag behind
    the others' median is at least ``min_lag`` of the mean step (``step_sec``; its own mean
    ready time without one) and its lags are positive more than chance explains (Wilcoxon's
    signed-rank test at ``alpha``): the test weighs how far behind it was in each step, not
    only whether, so a rank held up now and then, last in fewer steps but by much, is found
    (benchmarks/calibration/detectors.py: on real runs with one rank throttled, a binomial
    test of how often it was last missed some that this finds, with no more false alarms)."""
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
        return None  # checked first: the test needs scipy.stats, a second's import in every run
    chance = _scipy_stats().wilcoxon(lags, alternative="greater").pvalue
    if chance >= alpha:
        return None
    return Straggler(rank, share, lag, sum(max(0.0, x) for x in lags), own / others - 1 if others > 0 else 0.0)
