"""find_straggler on ready times shaped like the calibration runs' (docs/method.md): the rank the
others wait for is named by how far behind it is, not only by how often it is last."""

import random

from larsbench.core.stats import find_straggler


def ready_times(lag_of_rank1, steps: int = 78, seed: int = 0) -> list[list[float]]:
    """Two ranks, 100 ms to ready with 10% noise each; rank 1 later by ``lag_of_rank1(step)``."""
    rng = random.Random(seed)
    rank0 = [0.1 * rng.uniform(0.9, 1.1) for _ in range(steps)]
    rank1 = [0.1 * rng.uniform(0.9, 1.1) + lag_of_rank1(i) for i in range(steps)]
    return [rank0, rank1]


def test_a_rank_held_up_now_and_then_is_named_though_last_in_few_more_steps_than_chance():
    # Behind by 80 ms in every third step and level otherwise: last in about 2 steps of 3, a
    # share a binomial test at p < 0.001 would not pass over 78 steps, by far more than noise.
    ready = ready_times(lambda i: 0.08 if i % 3 == 0 else 0.0)
    found = find_straggler(ready, step_sec=0.12)
    assert found is not None and found.rank == 1
    assert 0.5 < found.last_share < 0.8 and found.cost_sec > 26 * 0.07


def test_ranks_level_with_each_other_name_nobody():
    for seed in range(20):
        assert find_straggler(ready_times(lambda i: 0.0, seed=seed), step_sec=0.12) is None


def test_a_rank_behind_in_every_step_by_less_than_the_least_lag_is_not_named():
    # 5 ms behind in every step: certain, but 4% of the step, within an idle run's spread
    assert find_straggler(ready_times(lambda i: 0.005), step_sec=0.12) is None
    assert find_straggler(ready_times(lambda i: 0.03), step_sec=0.12).rank == 1
