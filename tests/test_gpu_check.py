"""benchmarks/gpu_check.sh in its dry run: every stage of the GPU check runs on the CPU at toy
sizes, or is skipped for its stated reason, and the summary comes out, so the script cannot
rot between the rare sessions on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import REPO

# It starts launchers, ranks and benchmark scripts: about a minute on 2 cores.
pytestmark = pytest.mark.multiprocess

STAGES = {
    "setup": ("skipped", "dry run: uses this environment, installs nothing"),
    "a.tests": ("skipped", "needs CUDA: every test it selects is marked gpu and skips without a device"),
    "b.train": ("ok", "compiled mode left out of the dry run: torch.compile takes minutes on a CPU"),
    "c.lars": ("ok", ""),
    "d.harness": ("ok", ""),
    "e.runs": ("ok", ""),
    "f.loaders": ("ok", "data_loader gpu left out of the dry run: it decodes with nvjpeg on a CUDA device"),
}


def test_the_dry_run_runs_every_stage_and_prints_the_summary(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_WORK": str(work), "PYTHON": sys.executable, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {s["stage"]: (s["status"], s["note"]) for s in summary["stages"]} == STAGES, done.stdout[-6000:]
    assert summary["dry_run"] is True and all(f["met"] is None for f in summary["figures"])

    figures = {f["name"]: f for f in summary["figures"]}
    measured = [
        "b. tiny_cnn bf16 channels_last eager sgd", "b. tiny_cnn bf16 channels_last eager lars",
        "c. fused SGD step (wall time)", "c. LARS.step lars / fused SGD (wall time)",
        "d. Trainer.advance / bare DDP loop (cpu)", "e. larsbench run ddp", "e. larsbench run deepspeed",
        "f. larsbench run cpu (ddp)",
    ]  # fmt: skip
    for name in measured:
        assert figures[name]["value"] > 0, name
    assert figures["b. tiny_cnn bf16 channels_last eager lars-triton"]["note"] == "skipped: needs CUDA (the Triton kernels)"
    assert figures["c. LARS.step lars-triton"]["note"] == "skipped: needs CUDA (the Triton kernels)"
    assert figures["e. larsbench run ddp"]["note"].startswith("status ok, data wait")

    # the summary table reached the console and the log, and at most 8 files come back
    assert "GPU check summary (dry run" in done.stdout and "f. larsbench run cpu (ddp)" in done.stdout
    assert "GPU check summary (dry run" in (out / "gpu_check.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "gpu_check.tar.gz", "summary.json", "summary.txt"]
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = tar.getnames()
    for expected in ("./runs/results.jsonl", "./loaders/results.jsonl", "./report/report.md", "./logs/e.runs.log", "./lars_step.json"):
        assert expected in names, expected
    assert any(n.startswith("./runs/mllog/") for n in names)  # the event logs
    assert not any(n.startswith("./jpegs") for n in names)  # the generated images stay behind
