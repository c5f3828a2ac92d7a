import numpy as np
import pytest

from larsbench.reports.changepoints import find_steps, noise_sigma


def noisy(seed: int, n: int = 30, cv: float = 0.02, level: float = 100.0) -> np.ndarray:
    return level * (1 + cv * np.random.default_rng(seed).standard_normal(n))


def test_noise_is_estimated_through_a_step_and_an_outlier():
    y = noisy(0, n=200)
    y[120:] -= 20
    y[50] -= 50
    assert noise_sigma(y) == pytest.approx(2.0, rel=0.2)  # the series' own std would be ~8
    assert np.std(y) > 7


@pytest.mark.parametrize("seed", range(8))
def test_a_10_percent_drop_at_night_18_is_found_there(seed):
    y = noisy(seed)
    y[18:] *= 0.9
    (step,) = find_steps(y)
    assert abs(step.index - 18) <= 1
    assert step.relative == pytest.approx(-0.10, abs=0.025)
    assert step.nights_after == 30 - step.index


@pytest.mark.parametrize("seed", range(8))
def test_noise_alone_has_no_step_at_the_default_tolerance(seed):
    assert find_steps(noisy(seed), smallest_change=lambda level: 0.05 * level) == []


@pytest.mark.parametrize("seed", range(8))
def test_single_outlier_nights_are_not_steps_even_without_a_tolerance(seed):
    y = noisy(seed)
    y[10] *= 0.7
    y[22] *= 1.3
    y[29] *= 0.75  # the newest night alone is no level either
    assert find_steps(y) == []


def test_two_odd_nights_among_good_ones_are_not_a_level():
    y = noisy(3)
    y[26:28] *= 0.75  # nights 26 and 27 bad, 28 and 29 good again
    assert find_steps(y) == []


def test_the_new_level_must_hold_min_nights():
    y = noisy(4)
    y[28:] *= 0.85  # two nights so far
    assert find_steps(y, min_nights=3) == []
    (step,) = find_steps(y, min_nights=2)
    assert step.index == 28


def test_up_and_down_steps_and_the_tolerance():
    y = noisy(5, n=40)
    y[10:25] *= 1.12
    y[25:] *= 0.97
    steps = find_steps(y)
    assert [s.index for s in steps] == [10, 25]
    assert steps[0].change > 0 > steps[1].change
    # a tolerance larger than the 3% net step from 10 to 25 still keeps the 12% ones
    assert [s.index for s in find_steps(y, smallest_change=lambda level: 0.05 * level)] == [10, 25]
    assert find_steps(y, smallest_change=lambda level: 0.2 * level) == []


def test_a_series_that_repeats_to_the_last_bit_still_has_a_threshold():
    y = np.r_[np.full(10, 0.91), np.full(10, 0.85)]
    (step,) = find_steps(y)
    assert step.index == 10 and step.after == pytest.approx(0.85)
    assert find_steps(np.full(20, 0.91)) == []


def test_too_short_series_have_no_steps():
    assert find_steps([100, 100, 100, 80, 80]) == []
