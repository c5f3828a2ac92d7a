"""A rank killed outright mid-run: the others stop instead of hanging on a collective, the
launcher exits non-zero, and a 'failed' record says which rank died."""

import os
import signal
import subprocess
import sys
import time

import pytest

from larsbench.core.layout import RunFiles
from larsbench.core.results import read_records
from tests.conftest import REPO

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize("backend", ["ddp", "deepspeed", "horovod"])
def test_killing_a_rank_fails_the_run_promptly_and_names_it(tmp_path, backend):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "larsbench", "run", "--no-report", "--backend", backend, "--model", "tiny_cnn", "--world-size", "2",
         "--micro-batch", "4", "--steps", "100000", "--log-every-steps", "5", "--device", "cpu",
         "--collective-timeout-sec", "60", "--output", str(out), "--run-id", "doomed"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
    )  # fmt: skip
    try:
        log = out / "mllog" / "doomed.log"
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and "run_start" in log.read_text()):
            time.sleep(0.2)
        time.sleep(1.0)
        victim = RunFiles(out, "doomed").rank_pids()[1]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        output, _ = launcher.communicate(timeout=120)
        stopped_after = time.time() - killed_at
    finally:  # a failed check must not leave a 100,000-step run behind
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and the ranks it started
            launcher.communicate()
    assert launcher.returncode == 1, output[-3000:]
    assert stopped_after < 60, f"the surviving rank took {stopped_after:.0f} s to stop"
    records = read_records(out)
    assert len(records) == 1
    assert records[0]["status"] == "failed"
    assert records[0]["error"].startswith("rank1 stopped first without an error"), records[0]["error"]
    assert records[0]["throughput_images_per_sec"] is None
