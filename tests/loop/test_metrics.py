import pytest

from larsbench.loop.metrics import RunMetrics, quantile, step_split, straggler


def metrics(compute: list[list[float]], waits: list[list[float]], steps: list[float]) -> RunMetrics:
    return RunMetrics(
        rank_hosts=[f"node{r}" for r in range(len(compute))], rank_compute_sec=compute,
        rank_data_waits=waits, rank_step_times=[steps for _ in compute],
    )  # fmt: skip


def test_quantile_matches_linear_interpolation():
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    assert quantile([], 0.5) is None


def test_the_split_follows_the_critical_rank_and_adds_up():
    m = metrics([[0.10, 0.10, 0.11], [0.15, 0.15, 0.15]], [[0.01, 0.01], [0.02, 0.02]], [0.30, 0.30])
    split = step_split(m)
    assert split.critical_rank == 1
    assert (split.data_wait_sec, split.compute_sec) == pytest.approx((0.02, 0.15))
    assert split.exposed_comm_sec == pytest.approx(0.13)
    assert split.data_wait_sec + split.compute_sec + split.exposed_comm_sec == pytest.approx(split.step_sec)
    assert split.note is None


def test_a_probe_slower_than_the_step_is_said_not_hidden():
    split = step_split(metrics([[0.4]], [[0.0]], [0.3, 0.3]))
    assert split.exposed_comm_sec == 0.0 and "33% longer than the measured step" in split.note


def test_no_split_without_a_probe():
    assert step_split(RunMetrics(step_times=[0.1, 0.2])) is None


def test_a_straggler_is_named_with_its_host():
    m = metrics([[0.10], [0.10], [0.16], [0.11]], [[0.0]] * 4, [0.2])
    found = straggler(m)
    assert found["rank"] == 2 and found["host"] == "node2" and found["slower_by"] == pytest.approx(0.6)
    assert straggler(metrics([[0.10], [0.11], [0.105], [0.10]], [[0.0]] * 4, [0.2])) is None
    assert straggler(metrics([[0.10]], [[0.0]], [0.2])) is None
