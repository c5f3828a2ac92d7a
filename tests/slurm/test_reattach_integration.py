"""The Slurm controller going away while ``larsbench slurm --wait`` follows a job, for real: the
local cluster's slurmctld is stopped mid-wait and started again. The wait gives up with one line
naming the jobs file and the command that picks the jobs up; that command then follows the same
job to its end without submitting anything again.

It stops the controller of the cluster the fixtures give (CI's single-node one): keep it off a
cluster whose jobs others are waiting for at the same moment."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from larsbench.slurm.submit import jobs_file, uncollected_jobs
from tests.slurm.conftest import LOCAL_CLUSTER, REPO, job_field, job_ids, larsbench_slurm, logs, records, wait_for

pytestmark = pytest.mark.multiprocess

TINY = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "32", "--micro-batch", "4", "--steps", "3",
        "--synthetic-samples", "64", "--device", "cpu", "--cpus-per-task", "1"]  # fmt: skip
TIMEOUT = 3  # --controller-timeout, seconds


def cluster(command: str) -> subprocess.CompletedProcess:
    """local_cluster.sh COMMAND on the fixture's cluster (its state dir and ports are in os.environ)."""
    return subprocess.run(["bash", str(LOCAL_CLUSTER), command], capture_output=True, text=True, timeout=120)


def daemon(state: Path, name: str) -> int:
    return int((state / "run" / f"{name}.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def job_state(job_id: str) -> str | None:
    return job_field(job_id, "JobState")


def test_a_wait_cut_short_by_the_controller_is_picked_up_again(slurm_cluster, tmp_path):
    state = Path(slurm_cluster["LARSBENCH_SLURM_DIR"])
    out = tmp_path / "re attach"
    gate = tmp_path / "let go"
    # The job holds before its run until the test lets it go: it must outlive the outage (a
    # script that ends while the controller is away is Slurm's to settle on its return), and
    # then take no longer than a tiny run.
    hold = f"for i in $(seq 600); do [ -e {shlex.quote(str(gate))} ] && break; sleep 0.2; done"
    waiter = subprocess.Popen(
        [sys.executable, "-m", "larsbench", "slurm", *TINY, "--setup", hold, "--output", str(out), "--submit", "--wait",
         "--poll-seconds", "0.3", "--controller-timeout", str(TIMEOUT)],
        cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(waiter.stdout), daemon=True)
    reader.start()
    job_id = None
    try:
        (job_id,) = wait_for(lambda: uncollected_jobs(out), 60, f"a job id in {jobs_file(out)}")
        wait_for(lambda: f"jobs {job_id}: 1 RUNNING\n" in said, 60, f"the wait to see job {job_id} run")
        munged, slurmd, ctld = (daemon(state, name) for name in ("munged", "slurmd", "slurmctld"))
        os.kill(ctld, signal.SIGTERM)  # as an outage or an administrator's restart stops it
        wait_for(lambda: not alive(ctld), 30, "slurmctld to exit")

        waiter.wait(timeout=60)
        reader.join(10)
        stdout, stderr = "".join(said), waiter.stderr.read()
        assert waiter.returncode == 2, stdout + stderr
        assert "the Slurm controller does not answer" in stdout, stdout
        (line,) = stderr.strip().splitlines()
        assert line.startswith(f"larsbench: error: --wait: no answer from the Slurm controller for {TIMEOUT} s"), line
        assert f"jobs {job_id} may still run and are kept in {jobs_file(out)}" in line, line
        assert f"`larsbench slurm --output {shlex.quote(str(out))} --wait` picks them up again" in line, line
        assert uncollected_jobs(out) == [job_id]

        restarted = cluster("start")  # idempotent: starts what is missing, the controller here
        assert restarted.returncode == 0, restarted.stderr
        assert alive(daemon(state, "slurmctld")) and daemon(state, "slurmctld") != ctld
        assert (daemon(state, "munged"), daemon(state, "slurmd")) == (munged, slurmd), "start disturbed daemons that ran"
        assert job_state(job_id) == "RUNNING", "the job did not outlive the outage"
        # A restarted slurmctld refuses new job steps for a few seconds ("Requested nodes are
        # busy"), and an srun refused then keeps waiting, past any test's patience: let the job's
        # srun start once a step of its own goes through.
        wait_for(lambda: subprocess.run(["timeout", "3", "srun", f"--jobid={job_id}", "--overlap", "--ntasks=1", "true"],
                                        capture_output=True).returncode == 0, 60, "the controller to take job steps")  # fmt: skip

        gate.touch()
        picked = larsbench_slurm("--output", str(out), "--wait", "--poll-seconds", "0.3", timeout=120)
        assert picked.returncode == 0, picked.stdout + picked.stderr + logs(out)
        assert f"jobs {job_id} were submitted and not yet seen to end; waiting for them instead of submitting again" in picked.stdout
        assert job_ids(picked.stdout) == [], "submitted again instead of picking the job up"
        (record,) = records(out)
        assert record["status"] == "ok" and record["steps"] == 3, record.get("error")
        assert record["provenance"]["slurm_job_id"] == job_id
        assert uncollected_jobs(out) == []
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        if cluster("status").returncode != 0:
            restored = cluster("start")
            assert restored.returncode == 0, f"the local Slurm could not be restored: {restored.stderr[-2000:]}"
        if job_id is not None and job_state(job_id) not in ("COMPLETED", None):
            subprocess.run(["scancel", job_id], capture_output=True)  # a failed test leaves no job holding a CPU
