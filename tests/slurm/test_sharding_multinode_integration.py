"""Sharded optimizer state across nodes: on the local 2-node Slurm (one rank per node), DeepSpeed
ZeRO-2 with LARS ends with the parameters of the same run unsharded, its layer norms reduced
over the two nodes' partitions, and half the optimizer state per rank (both cells of one job
array, submitted with ``larsbench slurm --submit --wait``)."""

from __future__ import annotations

import json

import pytest

from tests.slurm.conftest import larsbench_slurm, logs, records

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def cells(slurm_nodes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded-nodes")
    experiment = tmp / "sharded.yaml"
    experiment.write_text(json.dumps({
        "name": "sharded-nodes",
        "defaults": {"backend": "deepspeed", "optimizer": "lars", "model": "tiny_cnn", "dataset": "synthetic",
                     "image_size": 16, "micro_batch_size": 8, "steps": 12, "synthetic_samples": 128, "device": "cpu",
                     "seed": 5, "weight_decay": 0.01, "network_interface": "eth0", "compute_probe_steps": 2},
        "sweep": {"optimizer_sharding": ["none", "zero2"]},
    }))  # fmt: skip
    out = tmp / "out"
    done = larsbench_slurm(str(experiment), "--world-size", "2", "--nodes", "2", "--cpus-per-task", "1",
                           "--poll-seconds", "0.5", "--output", str(out), "--submit", "--wait",
                           timeout=900, env=slurm_nodes.env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    found = {r["optimizer_sharding"]: r for r in records(out)}
    assert sorted(found) == ["none", "zero2"], found
    return found


def test_zero2_across_two_nodes_ends_with_the_unsharded_parameters(cells):
    whole, sharded = cells["none"], cells["zero2"]
    for record in (whole, sharded):
        assert record["status"] == "ok", record["error"]
        assert [r["host"] for r in record["ranks"]] == ["node1", "node2"]
        assert record["provenance"]["num_nodes"] == 2
    assert sharded["param_checksum"] == pytest.approx(whole["param_checksum"], rel=1e-6)
    for (step, a), (_, b) in zip(whole["loss_curve"], sharded["loss_curve"]):
        assert b == pytest.approx(a, rel=1e-6), f"step {step}"


def test_each_node_holds_half_the_optimizer_state(cells):
    whole = cells["none"]["optimizer_state_bytes"]
    assert all(abs(r["optimizer_state_bytes"] - whole / 2) <= 64 for r in cells["zero2"]["ranks"])
