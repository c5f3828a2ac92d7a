"""sbatch and squeue: argument lists, a clean environment, waiting on jobs and arrays."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from larsbench.slurm import submit
from larsbench.slurm.submit import Task, clean_environment, exit_status, wait
from larsbench.core.errors import ConfigError


def test_inherited_slurm_settings_are_dropped():
    env = {"SBATCH_PARTITION": "x", "SLURM_CPUS_PER_TASK": "8", "SLURM_JOB_ID": "1", "SLURM_CONF": "/c",
           "SLURM_CLUSTERS": "a", "PATH": "/bin", "MY_SLURM_THING": "k"}  # fmt: skip
    assert clean_environment(env) == {"SLURM_CONF": "/c", "SLURM_CLUSTERS": "a", "PATH": "/bin", "MY_SLURM_THING": "k"}


class Calls(list):
    fake = None


@pytest.fixture
def calls(monkeypatch):
    seen = Calls()

    def fake_run(command, **kwargs):
        seen.append((command, kwargs))
        return subprocess.CompletedProcess(command, fake_run.rc, fake_run.out, fake_run.err)

    fake_run.rc, fake_run.out, fake_run.err = 0, "123;cluster\n", ""
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("SBATCH_TIMELIMIT", "5")
    seen.fake = fake_run
    return seen


def test_sbatch_gets_an_argument_list_and_a_clean_environment(calls, tmp_path):
    script = tmp_path / "dir with space" / "a job.sbatch"
    assert submit.sbatch(script) == "123"
    ((command, kwargs),) = calls
    assert command == ["sbatch", "--parsable", str(script)]
    assert "SBATCH_TIMELIMIT" not in kwargs["env"]


def test_a_refused_script_is_a_config_error(calls, tmp_path):
    calls.fake.rc, calls.fake.out, calls.fake.err = 1, "", "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    with pytest.raises(ConfigError, match="sbatch refused it: sbatch: error: Batch job submission failed: Invalid partition"):
        submit.sbatch(tmp_path / "x.sbatch")


def test_squeue_lines_become_tasks(calls):
    calls.fake.out = "7_0|COMPLETED\n7_[1-3%2]|PENDING\n8|RUNNING\n"
    assert submit.job_states(["7", "8"]) == [Task("7_0", "COMPLETED"), Task("7_[1-3%2]", "PENDING"), Task("8", "RUNNING")]
    assert calls[0][0] == ["squeue", "--noheader", "--states=all", "--jobs=7,8", "--format=%i|%T"]


def test_wait_follows_requeues_until_every_task_is_done():
    sequence = iter([
        [Task("7_0", "PENDING"), Task("7_[1]", "PENDING")],
        [Task("7_0", "RUNNING"), Task("7_1", "RUNNING")],
        [Task("7_0", "COMPLETED"), Task("7_1", "REQUEUED")],
        [Task("7_0", "COMPLETED"), Task("7_1", "PENDING")],
        [Task("7_0", "COMPLETED"), Task("7_1", "COMPLETED")],
    ])  # fmt: skip
    changes = []
    final = wait(["7"], poll_seconds=0, on_change=changes.append, states=lambda ids: next(sequence))
    assert final == [Task("7_0", "COMPLETED"), Task("7_1", "COMPLETED")]
    assert len(changes) == 5 and exit_status(final) == 0


def test_a_job_that_ended_and_left_squeue_keeps_its_final_state_while_another_runs():
    """Slurm drops an ended job from squeue MinJobAge later; a sibling job that runs longer
    must not turn it into UNKNOWN (seen on a slow-link sweep: a failed wait with every record ok)."""
    sequence = iter([
        [Task("3_0", "RUNNING"), Task("4_0", "RUNNING")],
        [Task("3_0", "COMPLETED"), Task("4_0", "RUNNING")],
        *[[Task("4_0", "RUNNING")]] * 3,  # 3 has left squeue
        [Task("4_0", "COMPLETED")],
    ])  # fmt: skip
    final = wait(["3", "4"], poll_seconds=0, states=lambda ids: next(sequence))
    assert set(final) == {Task("3_0", "COMPLETED"), Task("4_0", "COMPLETED")} and exit_status(final) == 0


@pytest.mark.parametrize(("states", "status"), [(["COMPLETED"], 0), (["COMPLETED", "FAILED"], 1), (["TIMEOUT"], 1), ([], 1)])
def test_exit_status(states, status):
    assert exit_status([Task(str(i), s) for i, s in enumerate(states)]) == status


def test_a_task_stuck_completing_is_done_once_something_says_it_ended():
    """Slurm keeps a job COMPLETING while a node it cannot reach still holds it; the run's record
    (here: the settled callback) says the script has ended."""
    sequence = iter([[Task("9", "RUNNING")], [Task("9", "COMPLETING")], [Task("9", "COMPLETING")]])
    recorded = iter([None, "FAILED"])
    final = wait(["9"], poll_seconds=0, states=lambda ids: next(sequence), settled=lambda task: next(recorded))
    assert final == [Task("9", "FAILED")] and exit_status(final) == 1


def test_a_controller_that_never_answers_ends_the_wait_within_its_timeout(tmp_path, monkeypatch):
    """squeue retries an unreachable controller for about 20 s on its own; the wait cuts each call
    off so that --controller-timeout holds."""
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\nexec sleep 30\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    outages = []
    started = time.monotonic()
    with pytest.raises(submit.ControllerGone, match="squeue did not answer within 0.5 s"):
        wait(["5"], poll_seconds=0.1, controller_timeout=0.5, on_outage=outages.append)
    assert time.monotonic() - started < 5 and outages == ["squeue did not answer within 0.5 s"]
