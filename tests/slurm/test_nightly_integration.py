"""The nightly recipe end to end on the real local Slurm: two nights of a tiny grid, each
followed by its dependent history job, the second one failing the gate on a planted regression.
"""

from __future__ import annotations

import datetime
import json

import pytest

from larsbench.core.files import append_lines
from tests.slurm.conftest import larsbench_slurm, logs, records

# timed: the planted nights are set against the first night's measured throughput, so a second
# night measured beside another test (or without one) can move by the planted 2x itself.
pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

GRID = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "32", "--micro-batch", "4", "--steps", "3",
        "--synthetic-samples", "64", "--device", "cpu", "--world-size", "1", "--cpus-per-task", "1",
        "--poll-seconds", "0.3", "--job-name", "nightly"]  # fmt: skip


def plant_history(history, template: dict) -> None:
    """Earlier nights of the same setting: seven at twice tonight's throughput, then two at it,
    so the newest nights form a 50% regression step."""
    now = datetime.datetime.fromisoformat(template["provenance"]["timestamp_utc"])
    for day in range(10, 1, -1):
        record = json.loads(json.dumps(template))
        record["run_id"] = f"planted-{day}"
        record["throughput_images_per_sec"] *= 2 if day > 3 else 1
        record["provenance"]["timestamp_utc"] = (now - datetime.timedelta(days=day)).isoformat()
        record["provenance"]["versions"]["nccl"] = "2.27.3" if day > 3 else "2.28.1"
        append_lines(history / "runs" / f"planted-{day:02d}" / "results.jsonl", [json.dumps(record)])


def test_two_nights_and_a_gate_on_the_real_slurm(slurm_cluster, tmp_path):
    history = tmp_path / "history"
    first = larsbench_slurm(*GRID, "--nightly", str(history), "--submit", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "submitted nightly-history.sbatch" in first.stdout and "history gate passed" in first.stdout
    (night1,) = (history / "runs").iterdir()
    (record,) = records(night1)
    assert record["status"] == "ok" and record["provenance"]["launcher"] == "slurm"
    report = json.loads((history / "report" / "history.json").read_text())
    assert [n["source"] for n in report["nights"]] == [str(night1 / "results.jsonl")]  # ran after the grid

    plant_history(history, record)
    second = larsbench_slurm(*GRID, "--nightly", str(history), "--submit", "--wait")
    night2 = max((history / "runs").glob("20*"))
    assert second.returncode == 1, second.stdout + second.stderr + logs(night2)
    assert "history gate failed" in second.stdout
    report = json.loads((history / "report" / "history.json").read_text())
    assert len(report["nights"]) == 11 and report["nights"][-1]["source"] == str(night2 / "results.jsonl")
    (step,) = report["gate"]["regressions"]
    assert step["metric"] == "throughput" and step["size"].startswith("-")
    assert {"what": "NCCL", "before": "2.27.3", "after": "2.28.1"} in step["changes"]
    log = next((night2 / "slurm" / "logs").glob("nightly-history-*.out")).read_text()
    assert "gate failed" in log and "throughput fell" in log
    assert (history / "report" / "history.html").is_file()
