"""The stability judgement skips the change-point search (ruptures, scipy.stats: a second of
imports in every run's record) only where no split could count as a shift: it never changes
the verdict."""

from __future__ import annotations

import random
import statistics

from larsbench.core.stats import RULE, _change_point_shift, _no_shift_possible, _running_medians, stability


def series(rng: random.Random, n: int, kind: str) -> list[float]:
    base = rng.uniform(0.01, 0.5)
    noise = {"quiet": 0.01, "noisy": 0.08, "wild": 0.3}[kind.split("+")[0]]
    times = [base * (1 + rng.gauss(0, noise)) for _ in range(n)]
    if "shift" in kind:
        at, factor = rng.randrange(1, n), rng.choice([0.7, 0.85, 0.95, 1.05, 1.15, 1.4])
        times = times[:at] + [t * factor for t in times[at:]]
    if "stall" in kind:
        times[rng.randrange(n)] *= 8
    return [max(t, 1e-4) for t in times]


def test_the_shortcut_never_hides_a_shift_the_search_would_find():
    rng = random.Random(7)
    kinds = [f"{noise}{extra}" for noise in ("quiet", "noisy", "wild") for extra in ("", "+shift", "+stall", "+shift+stall")]
    skipped = 0
    for trial in range(600):
        kind = kinds[trial % len(kinds)]
        times = series(rng, rng.randrange(10, 160), kind)
        min_size = max(3, len(times) // 20)
        if _no_shift_possible(times, min_size, RULE):
            skipped += 1
            assert _change_point_shift(times, min_size, RULE) is None, (kind, times)
    assert skipped > 400  # it saves the search on most series without a shift, noisy ones included


def test_a_steady_run_is_judged_without_the_search_and_a_shifted_one_with_it():
    steady = [0.1 * (1 + 0.01 * ((i * 7) % 5 - 2)) for i in range(60)]
    assert _no_shift_possible(steady, 3, RULE)
    assert not stability(steady).unstable
    # half the window slower by twice what each of the rule's two tests asks for
    change = 2 * max(RULE.shift - 1, RULE.shift_share / 0.5)
    shifted = [0.1] * 30 + [0.1 * (1 + change)] * 30
    assert not _no_shift_possible(shifted, 3, RULE)
    assert stability(shifted).shift_at == 30


def test_running_medians_are_the_medians_of_every_prefix():
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101):
        values = [rng.choice([0.5, 1.0, rng.random()]) for _ in range(n)]  # ties included
        assert _running_medians(values) == [statistics.median(values[: k + 1]) for k in range(n)]
