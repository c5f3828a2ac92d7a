import random
import statistics

import pytest

from larsbench.core.stats import changed, robust_cv, stability, summarize


def noisy(level: float, n: int, cv: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.gauss(0, cv)) for _ in range(n)]


def test_summary_of_five_values():
    s = summarize([100.0, 104.0, 96.0, 102.0, 98.0])
    assert (s.n, s.mean, s.median, s.low, s.high) == (5, 100.0, 100.0, 96.0, 104.0)
    assert s.std == pytest.approx(statistics.stdev([100, 104, 96, 102, 98]))
    assert (s.ci_low, s.ci_high) == pytest.approx((100 - 2.776445 * s.std / 5**0.5, 100 + 2.776445 * s.std / 5**0.5))
    assert s.olympic_mean == 100.0 and s.cv == pytest.approx(s.std / 100)


def test_summary_needs_five_for_an_olympic_mean_and_two_for_an_interval():
    assert summarize([1.0, 2.0, 3.0, 4.0]).olympic_mean is None
    one = summarize([7.0])
    assert (one.std, one.ci_low, one.cv, one.olympic_mean) == (None, None, None, None)
    assert summarize([]) is None and summarize([float("nan")]) is None


def test_changed_tells_a_real_difference_from_noise():
    assert changed(noisy(100, 5, 0.02, 1), noisy(90, 5, 0.02, 2)) is True
    assert changed([100.0, 120.0], [95.0, 105.0]) is False
    assert changed([100.0], [90.0, 91.0]) is None  # no noise estimate on one side


def test_a_steady_series_is_stable():
    judged = stability(noisy(0.2, 100, 0.02, 3))
    assert not judged.unstable and judged.reasons == () and judged.cv < 0.05


def test_a_shift_mid_window_is_found_where_it_happened():
    times = noisy(0.2, 50, 0.02, 4) + noisy(0.3, 50, 0.02, 5)
    judged = stability(times)
    assert judged.unstable and judged.shift_at == 50
    assert any("shifted at step 50" in r for r in judged.reasons)


def test_an_unsettled_warm_up_is_named_as_such():
    judged = stability(noisy(0.4, 18, 0.02, 6) + noisy(0.2, 82, 0.02, 7))
    assert judged.unstable and any("warm-up not settled" in r and "timing_warmup_steps" in r for r in judged.reasons)


def test_a_change_too_short_to_move_the_window_is_drift_not_a_disturbance():
    # The last 6 of 150 steps 30% slower (a shared machine's drift) move the mean by 1.2%.
    drift = noisy(0.2, 144, 0.02, 11) + noisy(0.26, 6, 0.02, 12)
    assert not stability(drift).unstable
    # 40% slower over the last half moves it by 20%: a disturbance.
    landed = noisy(0.2, 75, 0.02, 13) + noisy(0.28, 75, 0.02, 14)
    judged = stability(landed)
    assert judged.unstable and judged.shift_at == 75


def test_one_short_stall_is_not_instability_but_stalls_that_cost_the_window_are():
    times = noisy(0.2, 100, 0.02, 8)
    times[40] = 0.5  # 2.5× the median, 2% of the window
    assert not stability(times).unstable
    for i in (10, 30, 50):
        times[i] = 2.0
    judged = stability(times)
    assert judged.unstable and any("stalled step" in r for r in judged.reasons)


def test_too_few_steps_to_judge():
    assert not stability([0.1, 0.5, 0.1]).unstable
    assert robust_cv([1.0]) is None
