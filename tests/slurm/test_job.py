"""The in-job helpers: picking a run from the runs file, recording a run that failed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from larsbench.core.layout import RunFiles
from larsbench.slurm.job import finalize, main, node_causes, prepare, run_entry, watch
from larsbench.slurm.sweep import load, plan, write
from larsbench.core.results import read_records


@pytest.fixture
def runs_file(tmp_path):
    experiment, _ = load(None, {"model": "tiny_cnn", "world_size": 2, "steps": 1, "device": "cpu"})
    (script,) = plan(experiment, {}, tmp_path / "out", "/w")
    write([script])
    return script.runs_file


def test_spec_prints_the_runs_worker_argument(runs_file, capsys):
    assert main(["spec", "--runs", str(runs_file), "--index", "0"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec == run_entry(runs_file, 0)["spec"] and spec["world_size"] == 2


def test_spec_of_a_missing_index_fails(runs_file):
    with pytest.raises(SystemExit, match="has 1 run"):
        run_entry(runs_file, 1)


def test_finalize_records_the_ranks_errors_once(runs_file, tmp_path, monkeypatch):
    results = tmp_path / "out" / "results.jsonl"
    errors = tmp_path / "out" / ".larsbench" / "errors"
    errors.mkdir(parents=True)
    (errors / "r1.rank1").write_text("RuntimeError: boom\n")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("LARSBENCH_ALLOCATION", '{"nodes": 2}')
    # No cluster behind it: Slurm's clients find no nodes to probe (and look nowhere else).
    (tmp_path / "empty.conf").write_text("")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "empty.conf"))
    record = finalize(runs_file, 0, "r1", results, "exp", 1)
    assert record["status"] == "failed" and record["error"] == "rank1: RuntimeError: boom"
    p = record["provenance"]
    assert (p["slurm_job_id"], p["slurm_array_task_id"], p["node_list"], p["num_nodes"]) == ("5", "0", "n[1-2]", 2)
    assert p["allocation"] == {"nodes": 2} and p["slurm_restart_count"] == 0
    assert record["unreachable_nodes"] is None  # Slurm could not say where the nodes are
    assert finalize(runs_file, 0, "r1", results, "exp", 1) is None
    assert [r["run_id"] for r in read_records(results)] == ["r1"]


def test_queue_seconds_from_scontrol_fields():
    from larsbench.slurm.job import queue_seconds

    fields = "JobId=53 JobName=x SubmitTime=2026-11-23T21:08:18 EligibleTime=2026-11-23T21:08:18 StartTime=2026-11-23T21:09:03 EndTime=Unknown"
    assert queue_seconds(fields) == 45.0
    assert queue_seconds("JobId=53 StartTime=Unknown SubmitTime=2026-11-23T21:08:18") is None
    assert queue_seconds("") is None


def started(files: RunFiles, rank: int, pid: int, host: str) -> None:
    files.pid(rank).parent.mkdir(parents=True, exist_ok=True)
    files.pid(rank).write_text(f"{pid} {host}\n")


def failed(files: RunFiles, rank: int, text: str) -> None:
    files.error(rank).parent.mkdir(parents=True, exist_ok=True)
    files.error(rank).write_text(text + "\n")


def test_prepare_forgets_an_earlier_start_and_refuses_another_shape(runs_file, tmp_path, monkeypatch):
    results = tmp_path / "out" / "results.jsonl"
    files = RunFiles.of(results, "r2")
    started(files, 0, 1, "n1")
    failed(files, 1, "stopped by its launcher (SIGTERM)")
    monkeypatch.setenv("LARSBENCH_ALLOCATION", '{"nodes": 2, "ntasks_per_node": 1}')
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "1(x2)")
    assert prepare(runs_file, 0, "r2", results, "exp") is None
    assert files.rank_pids() == {} and files.rank_errors() == {} and not results.exists()
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "6")
    assert main(["prepare", "--runs", str(runs_file), "--index", "0", "--run-id", "r2", "--results", str(results),
                 "--experiment", "exp"]) == 2  # fmt: skip
    (record,) = read_records(results)
    assert record["status"] == "failed" and record["error"].startswith("allocation: the script asks for 2 node(s) x 1 task(s)")


def test_failure_names_the_unreachable_node_its_ranks_and_silent_ranks(tmp_path):
    files = RunFiles.of(tmp_path, "r3")
    for rank, host in enumerate(["n1", "n1", "n2", "n2", "n3"]):
        started(files, rank, 100 + rank, host)
    failed(files, 0, "RuntimeError: Timed out waiting 10000ms for recv operation to complete")
    causes = node_causes(files, {"n2": "no answer from its slurmd at 10.0.0.2:6818 within 3 s"})
    here = socket.gethostname()
    assert causes == [
        f"n2 unreachable from {here} (no answer from its slurmd at 10.0.0.2:6818 within 3 s); its ranks: 2, 3",
        "rank1 on n1 ended without an error (killed?)",
        "rank4 on n3 ended without an error (killed?)",
    ]


@pytest.fixture
def srun_like():
    """A process that, like srun waiting on a node it cannot reach, never ends by itself."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_watch_stops_srun_a_margin_after_a_rank_failed(tmp_path, srun_like):
    files = RunFiles.of(tmp_path, "r4")
    failed(files, 1, "RuntimeError: Timed out waiting 10000ms for send operation to complete")
    begun = time.monotonic()
    note = watch(files, srun_like.pid, margin=0.5, poll=0.05)
    assert 0.5 <= time.monotonic() - begun < 5
    assert srun_like.wait(timeout=5) == -signal.SIGKILL
    assert note.startswith("srun still ran 0.5 s after rank1 failed, so the job stopped it")
    assert files.stopped.read_text().strip() == note


def test_watch_stops_srun_once_every_rank_on_this_node_ended(tmp_path, srun_like):
    files = RunFiles.of(tmp_path, "r5")
    gone = subprocess.Popen(["true"])
    gone.wait()
    started(files, 0, gone.pid, socket.gethostname())
    started(files, 1, os.getpid(), "elsewhere")  # a remote rank's pid says nothing here
    note = watch(files, srun_like.pid, margin=0.2, poll=0.05)
    assert note is not None and f"after every rank on {socket.gethostname()} ended" in note


def test_watch_leaves_an_srun_that_ends_by_itself(tmp_path):
    files = RunFiles.of(tmp_path, "r6")
    failed(files, 0, "ValueError: a rank's own error; srun ends the step at once")
    quick = subprocess.Popen(["sleep", "0.3"])
    assert watch(files, quick.pid, margin=30, poll=0.05) is None
    assert quick.wait(timeout=5) == 0 and not files.stopped.exists()
