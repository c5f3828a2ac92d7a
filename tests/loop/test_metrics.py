import pytest

from larsbench.loop.metrics import RunMetrics, critical_rank, quantile, split_for, step_split


def metrics(steps, waits, ready, exposed, comm, probe=None) -> RunMetrics:
    """Two ranks' per-step series (each argument: one list per rank)."""
    return RunMetrics(
        rank_hosts=[f"node{r}" for r in range(len(steps))], rank_step_times=steps, rank_data_waits=waits,
        rank_ready_times=ready, rank_exposed_comm=exposed, rank_comm_times=comm, rank_compute_sec=probe or [],
    )  # fmt: skip


def test_quantile_matches_linear_interpolation():
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    assert quantile([], 0.5) is None


def test_the_split_follows_the_rank_ready_last_and_its_parts_add_up_to_its_step():
    m = metrics(
        steps=[[0.30, 0.30], [0.30, 0.30]], waits=[[0.01, 0.01], [0.02, 0.02]],
        ready=[[0.12, 0.12], [0.20, 0.20]], exposed=[[0.15, 0.15], [0.07, 0.07]], comm=[[0.20, 0.20], [0.10, 0.10]],
        probe=[[0.10, 0.10, 0.11], [0.15, 0.15, 0.15]],
    )  # fmt: skip
    assert critical_rank(m) == 1
    split = step_split(m)
    assert split.rank == 1
    assert (split.data_wait_sec, split.compute_sec, split.exposed_comm_sec) == pytest.approx((0.02, 0.15, 0.07))
    assert split.overhead_sec == pytest.approx(0.30 - 0.02 - 0.15 - 0.07)
    assert split.overlapped_comm_sec == pytest.approx(0.03)
    assert split.data_wait_sec + split.compute_sec + split.exposed_comm_sec + split.overhead_sec == pytest.approx(split.step_sec)
    assert split.note is None


def test_on_one_rank_nothing_is_communication():
    # One rank: its reduction calls (a copy, a division) took 0.05 s per step and moved nothing.
    one = RunMetrics(rank_step_times=[[0.3, 0.3]], rank_data_waits=[[0.0, 0.0]], rank_ready_times=[[0.2, 0.2]],
                     rank_exposed_comm=[[0.05, 0.05]], rank_comm_times=[[0.15, 0.15]], rank_compute_sec=[[0.2]])  # fmt: skip
    split = step_split(one)
    assert split.exposed_comm_sec == 0.0 and split.comm_sec == 0.0
    assert split.overhead_sec == pytest.approx(0.1) and "moved nothing" in split.note


def test_a_probe_slower_than_the_loop_is_said_not_hidden():
    m = metrics(steps=[[0.3, 0.3]] * 2, waits=[[0.0, 0.0]] * 2, ready=[[0.2, 0.2]] * 2, exposed=[[0.05, 0.05]] * 2,
                comm=[[0.05, 0.05]] * 2, probe=[[0.4]] * 2)  # fmt: skip
    split = split_for(m, 0)
    assert split.compute_sec == pytest.approx(0.25) and split.overhead_sec == 0.0
    assert "took longer than the loop's compute" in split.note


def test_without_a_probe_compute_and_overhead_are_unknown_but_communication_is_not():
    m = metrics(steps=[[0.1, 0.2]] * 2, waits=[[0.0, 0.0]] * 2, ready=[[0.05, 0.05]] * 2, exposed=[[0.02, 0.02]] * 2,
                comm=[[0.03, 0.03]] * 2)  # fmt: skip
    split = split_for(m, 0)
    assert split.compute_sec is None and split.overhead_sec is None and split.exposed_comm_sec == pytest.approx(0.02)
    assert split_for(RunMetrics(), 0) is None
