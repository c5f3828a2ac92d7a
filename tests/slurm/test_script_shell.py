"""The generated script run by bash, without Slurm: ``srun`` and ``scontrol`` are stubs that
record their arguments, everything else (the runs file, ``slurm.job``) is real.

Every config string that reaches the script carries ``$(touch PWNED)``, backticks and a
``; touch PWNED``: the script must pass them on as plain text and PWNED must never exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from larsbench.slurm.options import merge
from larsbench.slurm.sweep import plan, write
from larsbench.suite.config import resolve_experiment
from tests.slurm.conftest import REPO, wait_for

STUB_SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$STUB_DIR/srun.args"
if [[ -n $STUB_SRUN_HANG ]]; then
    # rank 1 fails, and the step never ends: srun waiting on a node it cannot reach
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        [[ ${args[i]} == --results ]] && results=${args[i + 1]}
        [[ ${args[i]} == --run-id ]] && run_id=${args[i + 1]}
    done
    mkdir -p "$(dirname "$results")/.larsbench/errors"
    echo "RuntimeError: Timed out waiting 10000ms for recv operation to complete" \\
        > "$(dirname "$results")/.larsbench/errors/$run_id.rank1"
    trap '' TERM INT
    while true; do sleep 0.05; done
fi
if [[ -n $STUB_SRUN_WAIT ]]; then
    trap 'echo usr1 >> "$STUB_DIR/srun.signals"; exit 75' USR1
    touch "$STUB_DIR/srun.started"
    while true; do sleep 0.05; done
fi
exit "${STUB_SRUN_EXIT:-0}"
"""
STUB_SCONTROL = """#!/bin/bash
[ "$1" = show ] && exit 0  # the queue-time lookup; only state changes are recorded
printf '%s\\0' "$@" > "$STUB_DIR/scontrol.args"
"""


def evil(pwned: Path) -> str:
    # Through $STUB_DIR (run_script's environment; ``pwned`` is in it), not the path itself: the
    # path three times in one folder name passed 255 bytes where temporary folders are deep.
    assert pwned.parent.name and pwned.name == "pwned"
    return "$(touch $STUB_DIR/pwned) `touch $STUB_DIR/pwned` ; touch $STUB_DIR/pwned '\""


@pytest.fixture
def job(tmp_path):
    """An injected one-run script, written, plus a stub bin folder."""
    pwned = tmp_path / "pwned"
    bad = evil(pwned)
    output = tmp_path / f"out {bad}"
    doc = {
        "name": f"exp {bad}\ntouch {pwned}",
        "defaults": {"model": "tiny_cnn", "dataset": "synthetic", "steps": 1, "world_size": 1, "device": "cpu", "data_dir": f"/data/{bad}"},
    }  # fmt: skip
    options = merge(
        {"job_name": f"job {bad}", "partition": f"p {bad}", "account": bad, "qos": bad, "constraint": bad,
         "mem": bad, "gpus_per_node": bad, "extra_sbatch": [f"--comment={bad}"], "setup": ["echo setup-ran"],
         "python": sys.executable, "stop_margin_seconds": 2},
        {},
    )  # fmt: skip
    (script,) = plan(resolve_experiment(doc, {}, "evil.yaml"), options, output, tmp_path / f"wd {bad}")
    write([script])
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("srun", STUB_SRUN), ("scontrol", STUB_SCONTROL)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    return {"script": script, "output": output, "pwned": pwned, "stubs": stubs, "tmp": tmp_path, "experiment": doc["name"], "bad": bad}


def run_script(job, wait=True, **env):
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "PATH": f"{job['stubs']}:{os.environ['PATH']}", "STUB_DIR": str(job["tmp"]),
        "SLURM_JOB_ID": "77", "SLURM_CLUSTER_NAME": "test", "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_TASKS_PER_NODE": "1", **env,
    }  # fmt: skip
    command = ["bash", str(job["script"].script)]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=120)


def stub_args(job, name):
    return (job["tmp"] / f"{name}.args").read_bytes().decode().split("\0")[:-1]


def read_records(job):
    path = job["output"] / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_values_reach_the_ranks_as_plain_text_and_run_nothing(job):
    checked = subprocess.run(["bash", "-n", str(job["script"].script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    done = run_script(job)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "setup-ran" in done.stdout  # setup lines run as written
    assert not job["pwned"].exists()
    args = stub_args(job, "srun")
    worker = args[args.index("-m") - 1 :]
    assert worker[:3] == [sys.executable, "-m", "larsbench.suite.worker"]
    assert worker[worker.index("--results") + 1] == str(job["output"] / "results.jsonl")
    assert worker[worker.index("--experiment") + 1] == job["experiment"]
    assert worker[worker.index("--run-id") + 1] == "test-77"
    spec = json.loads(worker[worker.index("--spec-json") + 1])
    assert spec["data_dir"] == f"/data/{job['bad']}"


def test_header_values_are_quoted_for_sbatch(job):
    text = job["script"].text
    bad = job["bad"]
    import shlex

    for line in (f"--job-name={shlex.quote('job ' + bad)}", f"--partition={shlex.quote('p ' + bad)}",
                 f"--account={shlex.quote(bad)}", f"--comment={shlex.quote(bad)}"):  # fmt: skip
        assert f"#SBATCH {line}" in text.splitlines()
    # the experiment name's line break cannot start a command: comments are made one-line
    assert f"\ntouch {job['pwned']}\n" not in text


@pytest.mark.multiprocess  # the job's python steps: several interpreter starts
def test_failed_run_gets_a_failed_record(job):
    done = run_script(job, STUB_SRUN_EXIT="3")
    assert done.returncode == 3, done.stdout + done.stderr
    (record,) = read_records(job)
    assert record["status"] == "failed" and record["run_id"] == "test-77"
    assert record["experiment"] == job["experiment"]
    assert record["error"] == "srun exited with status 3"
    assert record["provenance"]["slurm_job_id"] == "77"
    assert not job["pwned"].exists()
    # a second finalize (e.g. the script run again by hand) adds nothing
    assert run_script(job, STUB_SRUN_EXIT="3").returncode == 3
    assert len(read_records(job)) == 1


def test_a_step_that_cannot_end_is_stopped_and_recorded(job):
    begun = time.monotonic()
    done = run_script(job, STUB_SRUN_HANG="1")
    took = time.monotonic() - begun
    assert done.returncode == 137, done.stdout + done.stderr
    assert took < 30, f"the script took {took:.0f} s to give up on the step"
    assert "srun still ran 2 s after rank1 failed, so the job stopped it" in done.stdout
    (record,) = read_records(job)
    assert record["status"] == "failed"
    assert record["error"].startswith("srun still ran 2 s after rank1 failed")
    assert record["error"].endswith("rank1: RuntimeError: Timed out waiting 10000ms for recv operation to complete")


def test_preempted_run_is_requeued(job):
    done = run_script(job, STUB_SRUN_EXIT="75")
    assert done.returncode == 0, done.stdout + done.stderr
    assert stub_args(job, "scontrol") == ["requeue", "77"]
    assert read_records(job) == []


@pytest.mark.multiprocess  # the job's python steps: several interpreter starts
def test_preempted_run_past_max_requeues_gets_a_preempted_record(job):
    done = run_script(job, STUB_SRUN_EXIT="75", SLURM_RESTART_COUNT="10")
    assert done.returncode == 75
    assert not (job["tmp"] / "scontrol.args").exists()
    (record,) = read_records(job)
    assert record["status"] == "preempted" and "after 10 requeue(s)" in record["error"]


def test_usr1_is_forwarded_to_srun_then_the_job_requeued(job):
    process = run_script(job, wait=False, STUB_SRUN_WAIT="1")
    try:
        wait_for(lambda: (job["tmp"] / "srun.started").exists(), 60, "the srun stub to start")
        process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@N does
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, out
    assert (job["tmp"] / "srun.signals").read_text() == "usr1\n"
    assert stub_args(job, "scontrol") == ["requeue", "77"]
    assert "preempted (status 75); requeueing job 77" in out
