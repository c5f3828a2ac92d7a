"""Adaptive repeats on the real local Slurm: the grid runs each setting's first repeat, a
dependent job submits the next ones while the records say continue, and --wait follows the chain."""

from __future__ import annotations

import pytest

from tests.slurm.conftest import larsbench_slurm, logs, records

pytestmark = pytest.mark.multiprocess

GRID = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--micro-batch", "4", "--steps", "8",
        "--synthetic-samples", "64", "--device", "cpu", "--world-size", "1", "--cpus-per-task", "1", "--compute-probe-steps", "0",
        "--poll-seconds", "0.3", "--job-name", "auto"]  # fmt: skip


def test_a_dependent_job_submits_each_next_repeat_until_the_series_stops(slurm_cluster, tmp_path):
    out = tmp_path / "out"
    done = larsbench_slurm(*GRID, "--repeats", "auto", "--repeats-target", "0.001", "--repeats-max", "3", "--output", str(out),
                           "--submit", "--wait", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + logs(out)
    found = sorted(records(out), key=lambda r: r["repeat"])
    assert [r["repeat"] for r in found] == [0, 1, 2] and all(r["provenance"]["launcher"] == "slurm" for r in found)
    assert [r["repeats_decision"]["decision"] for r in found] == ["continue", "continue", "stop"]
    assert found[-1]["repeats_decision"]["reason"].startswith("cap reached: 3 runs")
    assert len({r["seed"] for r in found}) == 3 and len({r["provenance"]["slurm_job_id"] for r in found}) == 3
    assert sorted(p.name for p in (out / "slurm").glob("*.sbatch")) == [
        "auto-1n1t.sbatch", "auto-repeat2-1n1t.sbatch", "auto-repeat3-1n1t.sbatch", "auto-repeats.sbatch"]  # fmt: skip
    repeats_logs = logs(out)
    assert "every series has stopped" in repeats_logs and "submitted auto-repeat3-1n1t.sbatch" in repeats_logs
