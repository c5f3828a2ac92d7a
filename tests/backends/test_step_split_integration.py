"""The step-time split measures what it claims: a slower all-reduce grows exposed
communication, not compute, and the four parts add up to the measured step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from larsbench.core.results import read_records
from tests.conftest import REPO

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

RUN = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--world-size", "2", "--micro-batch", "8",
       "--steps", "30", "--synthetic-samples", "512", "--device", "cpu", "--log-every-steps", "10", "--no-report"]  # fmt: skip


def run(out, *extra: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}  # the ranks import tests.backends.slow_hooks
    done = subprocess.run(
        [sys.executable, "-m", "larsbench", "run", *RUN, "--output", str(out), *extra],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record,) = read_records(out)
    return record


def test_a_slow_allreduce_shows_up_as_exposed_communication(tmp_path):
    plain = run(tmp_path / "plain")
    slow = run(tmp_path / "slow", "--backend-config", json.dumps({"comm_hook": "tests.backends.slow_hooks:sleepy_allreduce"}))
    for record in (plain, slow):
        parts = sum(record[f"{part}_sec_per_step"] for part in ("data_wait", "compute", "exposed_comm", "overhead"))
        assert parts == pytest.approx(record["step_time_mean_sec"], rel=1e-9)
        assert record["allreduce_bytes_per_step"] == sum(4 * n for n in (16 * 3 * 9 + 16, 32 * 16 * 9 + 32, 10 * 32 + 10))
        assert record["flops_per_image"] > 0 and record["mfu_measured"] > 0
        assert [r["rank"] for r in record["ranks"]] == [0, 1] and all(r["host"] for r in record["ranks"])
        steps = [json.loads(line) for line in (tmp_path / ("plain" if record is plain else "slow") / record["steps_file"]).read_text().splitlines()]
        assert [s["rank"] for s in steps] == [0, 1] and all(len(s["step_sec"]) == 28 for s in steps)  # 30 - 2 warm-up
        assert all(len(s["ready_sec"]) == len(s["exposed_comm_sec"]) == 28 and None not in s["ready_sec"] for s in steps)
        assert record["comm_messages_bytes"] == [record["allreduce_bytes_per_step"]]  # one bucket
    # tiny_cnn's gradients fit one bucket: one 50 ms sleep per step, all of it exposed
    grown = slow["exposed_comm_sec_per_step"] - plain["exposed_comm_sec_per_step"]
    assert grown > 0.035, (plain["exposed_comm_sec_per_step"], slow["exposed_comm_sec_per_step"])
    assert slow["compute_sec_per_step"] < plain["compute_sec_per_step"] + 0.01  # compute did not take the blame
    assert slow["comm_fraction"] > plain["comm_fraction"]
