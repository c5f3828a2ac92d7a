"""The nightly recipe without a cluster: where tonight's records go, the history job's script
(run here by bash, as Slurm would run it), and what `larsbench slurm --nightly` submits."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest

from larsbench.core.errors import ConfigError
from larsbench.slurm import nightly, submit, sweep
from tests.reports.history_records import write_history
from tests.slurm.test_cli import run

NOW = datetime.datetime(2026, 12, 1, 2, 0, 5, tzinfo=datetime.timezone.utc)
TINY = ["--model", "tiny_cnn", "--world-size", "1", "--steps", "3", "--cpus-per-task", "1"]


def test_tonights_records_go_to_a_new_folder_of_the_history(tmp_path):
    first = nightly.night_output(tmp_path, None, NOW)
    assert first == tmp_path / "runs" / "2026-12-01T020005Z"
    first.mkdir(parents=True)
    assert nightly.night_output(tmp_path, None, NOW) == tmp_path / "runs" / "2026-12-01T020005Z-2"
    assert nightly.night_output(tmp_path, tmp_path / "mine", NOW) == tmp_path / "mine"
    with pytest.raises(ConfigError, match="outside the --nightly folder"):
        nightly.night_output(tmp_path / "history", tmp_path / "elsewhere", NOW)


def test_the_history_script_places_one_task_like_the_grid_and_quotes_everything(tmp_path):
    evil = f"$(touch {tmp_path}/pwned)"
    job = nightly.plan_history(
        tmp_path / f"hist {evil}", tmp_path / f"hist {evil}" / "runs" / "n1", "nightly",
        {"partition": "gpu", "account": "proj42", "time": "00:30:00", "gpus_per_node": 4, "ntasks_per_node": 4,
         "setup": ["module load cuda"], "python": "/venv/bin/python", "extra_sbatch": ["--exclusive"]},
        tmp_path,
    )  # fmt: skip
    lines = job.text.splitlines()
    assert "#SBATCH --partition=gpu" in lines and "#SBATCH --account=proj42" in lines
    assert "#SBATCH --time=00:30:00" in lines and "#SBATCH --ntasks=1" in lines and "#SBATCH --exclusive" in lines
    assert not any("gpus" in line or "ntasks-per-node" in line for line in lines)  # the grid's, not this job's
    assert "#SBATCH --job-name=nightly-history" in lines and "module load cuda" in lines
    history = tmp_path / f"hist {evil}"
    assert lines[-1] == (
        f"/venv/bin/python -m larsbench history '{history}' -o '{history}/report' --fail-on-step"
    )
    assert job.script == history / "runs" / "n1" / "slurm" / "nightly-history.sbatch"
    assert f"#SBATCH --output='{history}/runs/n1/slurm/logs/nightly-history-%j.out'" in lines


@pytest.mark.parametrize(("drop_at", "status"), [(None, 0), (20, 1)])
def test_the_history_script_writes_the_report_and_its_status_is_the_gate(tmp_path, drop_at, status):
    history = tmp_path / "history"
    write_history(history / "runs", nights=24, drop_at=drop_at)
    job = nightly.plan_history(history, history / "runs" / "tonight", "nightly", {"python": sys.executable}, tmp_path)
    sweep.write([], [(job.script, job.text)])
    done = subprocess.run(["bash", str(job.script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == status, done.stdout + done.stderr
    report = json.loads((history / "report" / "history.json").read_text())
    assert len(report["nights"]) == 24 and report["gate"]["fails"] == bool(status)
    assert ("gate failed" in done.stdout) == bool(status)


def test_nightly_without_submit_writes_both_scripts(tmp_path):
    status, out = run(*TINY, "--nightly", str(tmp_path))
    assert status == 0, out
    (night,) = (tmp_path / "runs").iterdir()
    assert (night / "slurm" / "cli-1n1t.sbatch").is_file()
    assert (night / "slurm" / "cli-history.sbatch").is_file()
    assert "sbatch --dependency=afterany:<the grid's job ids>" in out
    assert f"report in {tmp_path / 'report'}" in out


def test_nightly_submits_the_history_job_after_the_grid(tmp_path, monkeypatch):
    calls = []

    def sbatch(path, after=None):
        calls.append((path.name, after))
        return str(40 + len(calls))

    monkeypatch.setattr(submit, "sbatch", sbatch)
    monkeypatch.setattr(submit, "wait", lambda ids, poll, **how: [submit.Task("41", "COMPLETED"), submit.Task("42", "FAILED")])
    monkeypatch.setattr(submit, "require", lambda *commands: None)  # no Slurm needed: sbatch and wait are stand-ins
    status, out = run(*TINY, "--nightly", str(tmp_path), "--wait")
    assert calls == [("cli-1n1t.sbatch", None), ("cli-history.sbatch", ["41"])]
    assert status == 1
    assert "submitted cli-history.sbatch: job 42 (after jobs 41 end)" in out
    assert "history gate failed or did not run" in out and "cli-history-42.out" in out


def test_dependency_is_passed_to_sbatch(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(submit, "_run", lambda command: seen.append(command) or subprocess.CompletedProcess(command, 0, "77\n", ""))
    assert submit.sbatch(tmp_path / "h.sbatch", after=["12", "13"]) == "77"
    assert seen[-1] == ["sbatch", "--parsable", "--dependency=afterany:12:13", str(tmp_path / "h.sbatch")]
    submit.sbatch(tmp_path / "g.sbatch")
    assert seen[-1] == ["sbatch", "--parsable", str(tmp_path / "g.sbatch")]
