"""A run disturbed halfway is flagged unstable, with the shift named; an undisturbed one is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from larsbench.core.results import read_records
from tests.conftest import REPO

pytestmark = pytest.mark.multiprocess

RUN = ["--model", "resnet50", "--dataset", "synthetic", "--image-size", "32", "--world-size", "1", "--micro-batch", "8",
       "--steps", "75", "--synthetic-samples", "256", "--device", "cpu", "--log-every-steps", "5",
       "--compute-probe-steps", "0", "--timing-warmup-steps", "15"]  # fmt: skip
# 15 untimed steps: on a 2-core VM an idle ResNet-50 rank was still settling at step 13 of a
# window that began after 5 (386.8 → 271.7 ms), which the flag rightly reports.
HOG = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"


def run(out, hog_from_step: int | None) -> dict:
    launcher = subprocess.Popen(
        [sys.executable, "-m", "larsbench", "run", *RUN, "--output", str(out), "--run-id", "r"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    hogs: list[subprocess.Popen] = []
    progress = out / ".larsbench" / "progress" / "r.json"
    try:
        while launcher.poll() is None:
            if hog_from_step is not None and not hogs and progress.exists():
                try:
                    step = json.loads(progress.read_text())["step"]
                except (ValueError, KeyError):
                    step = 0
                if step >= hog_from_step:  # a job landing on the node: one busy process per core
                    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 2)]
            time.sleep(0.05)
    finally:
        for hog in hogs:
            hog.kill()
    assert launcher.returncode == 0
    (record,) = read_records(out)
    return record


def test_a_cpu_hog_started_halfway_flags_the_run_and_an_idle_run_is_not_flagged(tmp_path):
    idle = run(tmp_path / "idle", None)
    assert idle["unstable"] is False, idle["unstable_reasons"]
    disturbed = run(tmp_path / "hog", 45)  # halfway through the timed window (steps 16 to 75)
    assert disturbed["unstable"] is True
    assert any("shifted at step" in reason for reason in disturbed["unstable_reasons"]), disturbed["unstable_reasons"]
