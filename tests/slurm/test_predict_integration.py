"""``larsbench predict`` against a real run across the 2-node local Slurm: a run on one node plus
``larsbench comm`` across both nodes, with both links held to 200 Mbit/s, predict the 2-node DDP
step within 20%.

The model (``alexnet_bn_mini``, 32 px) has a 2 MB gradient: over 200 Mbit/s its all-reduce takes
about as long as the step's compute, so the prediction has to get the overlap right, and a step
stays well under a second. The links are unlimited again whatever happens."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.slurm.conftest import LOCAL_CLUSTER, larsbench_slurm, logs, records

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

RATE = "200mbit"
DEFAULTS = {"backend": "ddp", "model": "alexnet_bn_mini", "dataset": "synthetic", "image_size": 32, "micro_batch_size": 16,
            "device": "cpu", "steps": 14, "timing_warmup_steps": 4, "compute_probe_steps": 3, "threads_per_rank": 1,
            "network_interface": "eth0", "log_every_steps": 7}  # fmt: skip


def test_one_node_and_comm_predict_the_two_node_ddp_step_over_slow_links(slurm_nodes, tmp_path):
    exp = tmp_path / "predict.yaml"
    exp.write_text(json.dumps({"name": "predict", "defaults": DEFAULTS}))
    common = ["--cpus-per-task", "1", "--poll-seconds", "0.5", "--wait"]
    shaped = subprocess.run(["bash", str(LOCAL_CLUSTER), "shape", RATE], capture_output=True, text=True, env=slurm_nodes.env)
    try:
        assert shaped.returncode == 0, shaped.stderr
        base = larsbench_slurm(str(exp), "--world-size", "1", "--nodes", "1", *common, "--output", str(tmp_path / "base"), env=slurm_nodes.env)
        assert base.returncode == 0, base.stdout + base.stderr + logs(tmp_path / "base")
        comm = larsbench_slurm(str(exp), "--comm", "--world-size", "2", "--nodes", "2", "--operations", "all_reduce",
                               "--max-bytes", "2M", "--iterations", "5", *common, "--output", str(tmp_path / "comm"), env=slurm_nodes.env)  # fmt: skip
        assert comm.returncode == 0, comm.stdout + comm.stderr + logs(tmp_path / "comm")
        predicted = subprocess.run(
            [sys.executable, "-m", "larsbench", "predict", str(tmp_path / "base"), "--comm", str(tmp_path / "comm"), "--nodes", "2", "--json"],
            capture_output=True, text=True, env=slurm_nodes.env,
        )  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr
        two = larsbench_slurm(str(exp), "--world-size", "2", "--nodes", "2", *common, "--output", str(tmp_path / "two"), env=slurm_nodes.env)
        assert two.returncode == 0, two.stdout + two.stderr + logs(tmp_path / "two")
    finally:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "shape", "off"], capture_output=True, env=slurm_nodes.env)
    (family,) = json.loads(predicted.stdout)["predictions"]
    (shape,) = [s for s in family["shapes"] if s["scaling"] == "weak" and s["nodes"] == 2]
    (run,) = records(tmp_path / "two")
    assert run["status"] == "ok" and run["provenance"]["num_nodes"] == 2, run["error"]
    measured, error = run["step_time_mean_sec"], shape["step_sec"] / run["step_time_mean_sec"] - 1
    print(f"\n2 nodes over {RATE}: predicted {shape['step_sec'] * 1e3:.0f} ms [{shape['step_sec_low'] * 1e3:.0f}–"
          f"{shape['step_sec_high'] * 1e3:.0f}], measured {measured * 1e3:.0f} ms ({error:+.1%}); exposed communication "
          f"predicted {shape['parts']['exposed_comm_sec'] * 1e3:.0f} ms, measured {run['exposed_comm_sec_per_step'] * 1e3:.0f} ms")  # fmt: skip
    # the link shows: communication is a real part of the step it predicts
    assert shape["parts"]["exposed_comm_sec"] > 0.2 * shape["step_sec"]
    assert abs(error) <= 0.20

