"""Horovod started the way srun starts it (no horovodrun, no MPI) across two "nodes": two
worker processes on this machine with the variables srun gives tasks on two different nodes,
so the per-node (local) and cross-node gloo communicators are both exercised without Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from larsbench.suite.config import build_spec
from larsbench.core.results import read_records
from tests.slurm.conftest import REPO

pytestmark = pytest.mark.multiprocess


def network_address() -> str:
    """This machine's first global IPv4 address: the rendezvous check refuses a loopback
    address for a job on several nodes, as it must on a real cluster."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True)
    addresses = [line.split()[3].split("/")[0] for line in shown.stdout.splitlines()]
    assert addresses, "this test needs a non-loopback IPv4 address on the machine"
    return addresses[0]


def test_horovod_rendezvous_across_two_nodes(tmp_path):
    spec = build_spec([("test", {"backend": "horovod", "model": "tiny_cnn", "world_size": 2, "micro_batch_size": 4,
                                 "steps": 3, "synthetic_samples": 64, "device": "cpu"})])  # fmt: skip
    results = tmp_path / "results.jsonl"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HOROVOD_", "OMPI_", "PMI"))}
    base.update(SLURM_JOB_ID="31337", SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_JOB_NUM_NODES="2",
                SLURM_TASKS_PER_NODE="1(x2)", SLURM_JOB_NODELIST="localhost,localhost", OMP_NUM_THREADS="1",
                PYTHONWARNINGS="ignore", MASTER_ADDR=network_address())  # fmt: skip
    command = [sys.executable, "-m", "larsbench.suite.worker", "--spec-json", json.dumps(spec.to_dict()), "--run-id", "hvd-2n",
               "--results", str(results)]  # fmt: skip
    ranks = [
        subprocess.Popen(command, cwd=REPO, env={**base, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for r in (1, 0)  # rank 1 first: it must wait for rank 0's rendezvous server
    ]
    outputs = [p.communicate(timeout=180)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    (record,) = read_records(results)
    assert record["status"] == "ok" and record["steps"] == 3
    assert (record["provenance"]["launcher"], record["provenance"]["num_nodes"]) == ("slurm", 2)
