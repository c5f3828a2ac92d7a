"""Real jobs across the nodes of a real 2-node Slurm on this machine (``local_cluster.sh start
--nodes 2``: each node a network namespace with its own address and host name).

Every backend trains the same seed on 2 nodes x 1 rank, 1 node x 2 ranks and 2 nodes x 2 ranks
through ``larsbench slurm --submit --wait``; the first two must agree to 1e-5. Then what goes
wrong across nodes: a rendezvous host that does not resolve, an allocation unlike the script's,
a missing network interface, a node's ranks killed, a node cut off mid-run, preemption with
requeue; and ``larsbench slurm --comm`` across both nodes.

Kept small (tiny CNN, a few steps): the 2 nodes share the machine's 2 cores. The test that cuts
a node off runs last: Slurm holds that node "completing" until it hears from it again.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from larsbench.core.layout import RunFiles
from larsbench.loop.progress import read_status
from larsbench.slurm import submit
from tests.conftest import REPO
from tests.slurm.conftest import job_field, job_ids, larsbench_slurm, logs, records, wait_for

pytestmark = pytest.mark.multiprocess

BACKENDS = ("ddp", "deepspeed", "horovod")
TINY = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "32", "--micro-batch", "4",
        "--synthetic-samples", "64", "--device", "cpu", "--cpus-per-task", "1", "--poll-seconds", "0.5"]  # fmt: skip
# Faults: a short collective timeout and watchdog margin, so a cut-off node shows quickly.
TIMEOUT_SEC, MARGIN_SEC = 10, 10
# What the job may take beyond them: the step in flight, probing the nodes (3 s), and writing
# the record from a fresh interpreter (imports alone take ~8 s on 2 busy cores). docs/slurm.md.
BOUND_SEC = 30


def experiment(tmp_path, name: str, defaults: dict, backends=BACKENDS) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "defaults": defaults, "sweep": {"backend": list(backends)}}))
    return str(path)


@pytest.fixture(scope="module")
def shapes(slurm_nodes, tmp_path_factory):
    """Every backend, one seed, on three allocation shapes; all submitted at once."""
    tmp = tmp_path_factory.mktemp("shapes")
    defaults = {"model": "tiny_cnn", "dataset": "synthetic", "image_size": 32, "micro_batch_size": 4, "steps": 6,
                "synthetic_samples": 64, "device": "cpu", "seed": 3, "network_interface": "eth0", "compute_probe_steps": 2}  # fmt: skip
    exp = experiment(tmp, "across", defaults)
    shapes = {
        "2n1t": ["--world-size", "2", "--nodes", "2"],
        "1n2t": ["--world-size", "2", "--nodes", "1"],
        # the same global batch as the others, over 4 ranks on both nodes
        "2n2t": ["--world-size", "4", "--nodes", "2", "--micro-batch", "2"],
    }
    began = time.monotonic()
    with ThreadPoolExecutor(len(shapes)) as pool:
        done = dict(zip(shapes, pool.map(
            lambda args: larsbench_slurm(exp, *args, "--cpus-per-task", "1", "--poll-seconds", "0.5",
                                         "--output", str(tmp / args[1] / args[3]), "--wait", timeout=900, env=slurm_nodes.env),
            shapes.values(),
        )))  # fmt: skip
    print(f"\n3 shapes x {len(BACKENDS)} backends on 2 nodes: {time.monotonic() - began:.0f} s")
    out = {}
    for shape, args in shapes.items():
        folder = tmp / args[1] / args[3]
        assert done[shape].returncode == 0, done[shape].stdout + done[shape].stderr + logs(folder)
        out[shape] = {r["backend"]: r for r in records(folder)}
        assert sorted(out[shape]) == sorted(BACKENDS)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_nodes_train_like_one_node(shapes, backend):
    across, together = shapes["2n1t"][backend], shapes["1n2t"][backend]
    for record in (across, together):
        assert record["status"] == "ok", record["error"]
    assert [s for s, _ in across["loss_curve"]] == [s for s, _ in together["loss_curve"]] == list(range(1, 7))
    worst = max(abs(a - b) for (_, a), (_, b) in zip(across["loss_curve"], together["loss_curve"]))
    assert worst <= 1e-5, f"loss curves differ by {worst:.2e}"
    assert abs(across["param_checksum"] - together["param_checksum"]) <= 1e-5 * max(1.0, abs(together["param_checksum"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_say_where_every_rank_ran(shapes, backend):
    assert [r["host"] for r in shapes["2n1t"][backend]["ranks"]] == ["node1", "node2"]
    assert [r["host"] for r in shapes["2n2t"][backend]["ranks"]] == ["node1", "node1", "node2", "node2"]
    (host,) = {r["host"] for r in shapes["1n2t"][backend]["ranks"]}
    assert host in ("node1", "node2")
    for shape, nodes in (("2n1t", 2), ("2n2t", 2), ("1n2t", 1)):
        record = shapes[shape][backend]
        assert record["status"] == "ok", record["error"]
        assert record["provenance"]["num_nodes"] == nodes
        assert record["provenance"]["node_list"] == ("node[1-2]" if nodes == 2 else host)
        assert all(r["device"] == "cpu" for r in record["ranks"])
        # network_interface reached every library and is recorded
        assert record["provenance"]["config"]["network_interface"] == "eth0"
        env = record["provenance"]["environment"]
        assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == env["HOROVOD_GLOO_IFACE"] == "eth0"


def failed_record(slurm_nodes, tmp_path, *args: str, env_extra: dict | None = None) -> tuple[dict, str]:
    out = tmp_path / "out"
    done = larsbench_slurm(*args, *TINY, "--output", str(out), "--wait", env={**slurm_nodes.env, **(env_extra or {})})
    assert done.returncode == 1, done.stdout + done.stderr + logs(out)
    (record,) = records(out)
    assert record["status"] == "failed" and record["throughput_images_per_sec"] is None
    return record, done.stdout


def rank_errors(error: str) -> dict[int, str]:
    """A failed record's ``error`` by rank (``rank0: ...; rank1: ...``)."""
    return {int(rank): text for rank, text in re.findall(r"rank(\d+): (.*?)(?=; rank\d+: |$)", error)}


def test_a_rendezvous_host_that_does_not_resolve_fails_before_training(slurm_nodes, tmp_path):
    record, _ = failed_record(slurm_nodes, tmp_path, "--world-size", "2", "--nodes", "2", "--steps", "3",
                              env_extra={"MASTER_ADDR": "node9"})  # fmt: skip
    # Whichever rank fails first says why, naming its own node (rank r runs on node r+1); srun
    # then ends the other task, which says so unless it failed the same way first.
    errors = rank_errors(record["error"])
    said = {rank: text for rank, text in errors.items() if not text.startswith("stopped by its launcher")}
    assert said, record["error"]
    for rank, text in said.items():
        assert text.startswith(f"rendezvous: the rendezvous host 'node9' (MASTER_ADDR) does not resolve on node{rank + 1}"), text
        assert "or export MASTER_ADDR=<its address> before srun" in text


def test_a_missing_network_interface_fails_before_training(slurm_nodes, tmp_path):
    record, _ = failed_record(slurm_nodes, tmp_path, "--world-size", "2", "--nodes", "2", "--steps", "3", "--network-interface", "ib0")
    errors = rank_errors(record["error"])
    said = {rank: text for rank, text in errors.items() if not text.startswith("stopped by its launcher")}
    assert said, record["error"]
    for rank, text in said.items():
        assert text.startswith(f"network_interface: node{rank + 1} has no network interface 'ib0' (it has eth0, lo)"), text


def test_an_allocation_unlike_the_script_fails_before_srun(slurm_nodes, tmp_path):
    out = tmp_path / "out"
    written = larsbench_slurm("--world-size", "2", "--nodes", "2", "--steps", "3", *TINY, "--output", str(out), env=slurm_nodes.env)
    assert written.returncode == 0, written.stderr
    (script,) = (out / "slurm").glob("*.sbatch")
    # sbatch's own command-line options win over the script's #SBATCH lines
    job = slurm_nodes.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", str(script), check=True).stdout.strip()
    wait_for(lambda: job_field(job, "JobState", slurm_nodes.env) in ("FAILED", "COMPLETED"), 120, "the job to end")
    assert job_field(job, "JobState", slurm_nodes.env) == "FAILED"
    (record,) = records(out)
    assert record["status"] == "failed" and record["ranks"] == []  # no rank started
    assert record["error"].startswith("allocation: the script asks for 2 node(s) x 1 task(s) but the job got 1 node(s) with 2 task(s) per node")


def start_long_run(slurm_nodes, out, *extra: str) -> str:
    done = larsbench_slurm("--backend", "ddp", "--world-size", "2", "--nodes", "2", "--steps", "100000", "--log-every-steps", "5",
                           "--collective-timeout-sec", str(TIMEOUT_SEC), "--stop-margin-seconds", str(MARGIN_SEC), *TINY, *extra,
                           "--output", str(out), "--submit", env=slurm_nodes.env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = job_ids(done.stdout)
    progress = RunFiles.of(out / "results.jsonl", f"lbnodes-{job}").progress
    wait_for(lambda: (read_status(progress) or {}).get("step", 0) >= 10, 120, "training to reach step 10")
    return job


def wait_ended(slurm_nodes, job: str, out, timeout: float) -> dict:
    """The run's record, once the job's script wrote it (the job may stay COMPLETING on a node
    Slurm cannot reach)."""
    wait_for(lambda: records(out), timeout, f"job {job}'s record")
    (record,) = records(out)
    return record


def test_killing_a_nodes_ranks_ends_the_job_and_names_them(slurm_nodes, tmp_path):
    out = tmp_path / "out"
    job = start_long_run(slurm_nodes, out)
    pid_file = out / ".larsbench" / "pids" / f"lbnodes-{job}.rank1"
    pid, host = pid_file.read_text().split()
    assert host == "node2"
    subprocess.run(["kill", "-KILL", pid], check=True)  # no pid namespaces: node2's rank is visible here
    killed = time.time()
    record = wait_ended(slurm_nodes, job, out, TIMEOUT_SEC + MARGIN_SEC + BOUND_SEC + 30)
    took = record["timestamp_end"] - killed
    print(f"\nnode2's rank killed: job {job} recorded its failure after {took:.1f} s")
    assert took <= TIMEOUT_SEC + MARGIN_SEC + BOUND_SEC
    assert record["status"] == "failed"
    assert record["error"].startswith("rank1 on node2 ended without an error (killed?)"), record["error"]
    assert record["unreachable_nodes"] == [] and [r["host"] for r in record["ranks"]] == ["node1", "node2"]
    wait_for(lambda: job_field(job, "JobState", slurm_nodes.env) == "FAILED", 60, "the job to be FAILED")


def test_preemption_resumes_across_both_nodes_to_the_same_parameters(slurm_nodes, tmp_path, monkeypatch):
    out = tmp_path / "preempt"
    run = ["--backend", "ddp", "--world-size", "2", "--model", "tiny_cnn", "--dataset", "generated", "--image-size", "32",
           "--micro-batch", "4", "--steps", "160", "--train-images-per-class", "16", "--val-images-per-class", "5",
           "--num-classes", "4", "--data-workers", "1", "--eval-every-epochs", "10", "--log-every-steps", "5", "--device", "cpu"]  # fmt: skip
    done = larsbench_slurm(*run, "--nodes", "2", "--cpus-per-task", "1", "--output", str(out), "--submit", env=slurm_nodes.env)
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = job_ids(done.stdout)
    progress = RunFiles.of(out / "results.jsonl", f"lbnodes-{job}").progress
    wait_for(lambda: (read_status(progress) or {}).get("step", 0) >= 10, 120, "training to reach step 10")
    slurm_nodes.run("scancel", "--batch", f"--signal={signal.SIGUSR1.name.removeprefix('SIG')}", job, check=True)
    for name in ("SLURM_CONF", "PATH"):
        monkeypatch.setenv(name, slurm_nodes.env[name])
    final = submit.wait([job], poll_seconds=0.5)
    assert submit.exit_status(final) == 0, logs(out)
    assert job_field(job, "Restarts", slurm_nodes.env) == "1"
    text = logs(out)
    # 75 from the ranks, or 143 when srun --kill-on-bad-exit stopped one a moment before it exited itself
    assert re.search(rf"larsbench: run lbnodes-{job} preempted \(status (75|143)\); requeueing job {job}", text), text
    assert "resumed at step" in text
    (record,) = records(out)
    assert record["status"] == "ok" and (record["steps"], record["restarts"]) == (160, 1)
    assert [r["host"] for r in record["ranks"]] == ["node1", "node2"]
    reference = subprocess.run([sys.executable, "-m", "larsbench", "run", *run, "--output", str(tmp_path / "reference")],
                               capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]
    (uninterrupted,) = records(tmp_path / "reference")
    assert record["param_checksum"] == pytest.approx(uninterrupted["param_checksum"], rel=1e-6)


def test_collectives_across_the_nodes(slurm_nodes, tmp_path):
    out = tmp_path / "comm"
    exp = experiment(tmp_path, "links", {"world_size": 2, "device": "cpu", "network_interface": "eth0"})
    done = larsbench_slurm(exp, "--comm", "--nodes", "2", "--cpus-per-task", "1", "--max-bytes", "16K", "--iterations", "3",
                           "--poll-seconds", "0.5", "--output", str(out), "--wait", env=slurm_nodes.env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    assert "collectives: 27 measurement(s)" in done.stdout
    found = [json.loads(line) for line in (out / "comm.jsonl").read_text().splitlines()]
    assert sorted({r["backend"] for r in found}) == sorted(BACKENDS)
    for r in found:
        assert (r["num_nodes"], r["hosts"], r["world_size"], r["ranks_per_node"]) == (2, ["node1", "node2"], 2, 1)
        assert 0 < r["latency_sec"] < 1 and r["loops"] == 3
        assert r["provenance"]["environment"]["GLOO_SOCKET_IFNAME"] == "eth0"
        assert r["busbw_gbps"] > 0


def test_cutting_a_node_off_ends_the_job_and_names_the_node(slurm_nodes, tmp_path):
    """Last in this file: Slurm keeps the cut-off node 'completing' the job for minutes after."""
    out = tmp_path / "out"
    job = start_long_run(slurm_nodes, out)
    link = slurm_nodes.link("node2")
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    cut = time.time()
    try:
        record = wait_ended(slurm_nodes, job, out, TIMEOUT_SEC + MARGIN_SEC + BOUND_SEC + 60)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    took = record["timestamp_end"] - cut
    print(f"\nnode2 cut off: job {job} recorded its failure after {took:.1f} s "
          f"(collective timeout {TIMEOUT_SEC} s + margin {MARGIN_SEC} s + {took - TIMEOUT_SEC - MARGIN_SEC:.1f} s)")  # fmt: skip
    assert took <= TIMEOUT_SEC + MARGIN_SEC + BOUND_SEC
    assert record["status"] == "failed" and record["unreachable_nodes"] == ["node2"]
    assert record["error"].startswith("node2 unreachable from node1 (no answer from its slurmd at "), record["error"]
    assert f"; its ranks: 1; srun still ran {MARGIN_SEC} s after rank" in record["error"]
    assert [r["host"] for r in record["ranks"]] == ["node1", "node2"]
