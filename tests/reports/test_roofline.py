"""The network roofline: max(compute, the gradient at the network's best), which runs it marks
and the causes it names, on records made by the suite's record builder (``tests/records.py``)
and comm records as a comm rank writes them."""

from __future__ import annotations

import pytest

from larsbench.reports.predict_comm import networks
from larsbench.reports.roofline import roofline, rooflines
from tests.records import make_record
from tests.reports.test_predict import MiB, comm_run

LINK = 1.25e9  # bytes/s: 10 Gbit/s
NETWORK = networks(comm_run("ddp", 2, 1, LINK) + comm_run("horovod", 2, 1, LINK / 4))


def run(**fields) -> dict:
    defaults = dict(throughput=200.0, world_size=2, num_nodes=2, hosts=["node1", "node2"], step_sec=0.105, compute_sec=0.1,
                    ready_sec=0.08, comm_sec=0.04, exposed_comm_sec=0.005, allreduce_bytes_per_step=50 * MiB,
                    comm_messages_bytes=[25 * MiB, 25 * MiB])  # fmt: skip
    return make_record(**{**defaults, **fields})


def test_a_run_near_its_roofline_is_not_marked():
    roof = roofline(run(), NETWORK)
    # 50 MiB over 2 ranks at 10 Gbit/s: 50 MiB × 2·1/2 / 1.25 GB/s = 42 ms, below compute
    assert roof.network_sec == pytest.approx(50 * MiB / LINK, rel=0.01) and roof.roofline_sec == pytest.approx(0.1)
    assert "ddp's" in roof.network_source and not roof.marked and roof.causes == []


def test_data_starvation_is_named():
    roof = roofline(run(step_sec=0.2, data_wait_sec=0.09), NETWORK)
    assert roof.marked and roof.causes[0].startswith("data starvation: each step waited 90 ms")


def test_small_buckets_are_named():
    messages = [64 * 1024] * 800  # 50 MiB in 800 reductions: 800 latencies
    roof = roofline(run(step_sec=0.3, comm_sec=0.25, exposed_comm_sec=0.2, comm_messages_bytes=messages), NETWORK)
    assert roof.marked and any(c.startswith("small buckets: 800 reductions of 64 KiB") for c in roof.causes)


def test_a_slow_interface_is_named():
    # the same two buckets took 10× what larsbench comm measured on this allocation
    roof = roofline(run(step_sec=0.5, comm_sec=0.42, exposed_comm_sec=0.4), NETWORK)
    assert roof.marked and any(c.startswith("a slow interface") for c in roof.causes)


def test_a_slower_library_path_and_a_host_transport_are_named():
    slow = roofline(run(backend="horovod", step_sec=0.3, comm_sec=0.2, exposed_comm_sec=0.18), NETWORK)
    assert slow.marked and any(c.startswith("a slower library path: horovod's all-reduce") for c in slow.causes)


def test_runs_without_a_network_figure_or_on_one_rank_have_no_roofline():
    assert roofline(run(world_size=1, hosts=["node1"], num_nodes=1), NETWORK) is None
    # no comm records: the run's own communication span is the network
    own = roofline(run(step_sec=0.2, data_wait_sec=0.09), {})
    assert own.network_sec == pytest.approx(0.04) and "own communication span" in own.network_source and own.marked
    assert [r.run_id for r in rooflines([run(), run(status="failed")], NETWORK)] != []


def test_horovod_is_judged_on_the_collectives_its_fusion_makes():
    tensors = [64 * 1024] * 800  # one launch per gradient tensor; Horovod fuses what is ready
    fused = roofline(run(backend="horovod", step_sec=0.3, comm_sec=0.2, exposed_comm_sec=0.1, comm_messages_bytes=tensors), NETWORK)
    assert not any(c.startswith("small buckets") for c in fused.causes)
    unfused = roofline(run(backend="horovod", step_sec=0.3, comm_sec=0.2, exposed_comm_sec=0.1, comm_messages_bytes=tensors,
                           environment={"HOROVOD_FUSION_THRESHOLD": "65536"}), NETWORK)  # fmt: skip
    assert unfused.marked and any(c.startswith("small buckets: 800 reductions") for c in unfused.causes)
