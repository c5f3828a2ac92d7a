"""The in-job helpers: picking a run from the runs file, recording a run that failed."""

from __future__ import annotations

import json

import pytest

from larsbench.slurm.job import finalize, main, run_entry
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
    record = finalize(runs_file, 0, "r1", results, "exp", 1)
    assert record["status"] == "failed" and record["error"] == "rank1: RuntimeError: boom"
    p = record["provenance"]
    assert (p["slurm_job_id"], p["slurm_array_task_id"], p["node_list"], p["num_nodes"]) == ("5", "0", "n[1-2]", 2)
    assert p["allocation"] == {"nodes": 2} and p["slurm_restart_count"] == 0
    assert finalize(runs_file, 0, "r1", results, "exp", 1) is None
    assert [r["run_id"] for r in read_records(results)] == ["r1"]


def test_queue_seconds_from_scontrol_fields():
    from larsbench.slurm.job import queue_seconds

    fields = "JobId=53 JobName=x SubmitTime=2026-11-23T21:08:18 EligibleTime=2026-11-23T21:08:18 StartTime=2026-11-23T21:09:03 EndTime=Unknown"
    assert queue_seconds(fields) == 45.0
    assert queue_seconds("JobId=53 StartTime=Unknown SubmitTime=2026-11-23T21:08:18") is None
    assert queue_seconds("") is None
