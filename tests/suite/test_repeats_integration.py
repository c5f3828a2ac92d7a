"""Repeats for real (tiny_cnn, 1 rank, a few steps): each repeat its own seed, and an adaptive
series that runs until its cap with every record saying what was decided after it."""

from __future__ import annotations

import json

import pytest

from larsbench.suite.repeats import repeat_seed
from tests.conftest import run_cli

pytestmark = pytest.mark.multiprocess

RUN = ["run", "--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--micro-batch", "8", "--steps", "12",
       "--synthetic-samples", "256", "--device", "cpu", "--world-size", "1", "--compute-probe-steps", "0", "--no-report"]  # fmt: skip


def records(output) -> list[dict]:
    return [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines() if line.strip()]


def test_three_repeats_train_with_three_seeds(tmp_path):
    done = run_cli(*RUN, "--seed", "5", "--repeats", "3", "--output", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(tmp_path)
    assert [r["repeat"] for r in found] == [0, 1, 2] and all(r["status"] == "ok" for r in found)
    assert [r["seed"] for r in found] == [5, repeat_seed(5, 1), repeat_seed(5, 2)]
    assert len({r["param_checksum"] for r in found}) == 3  # different weights, different data order: different results
    assert all(r["repeats_decision"] is None for r in found)  # a fixed number of repeats decides nothing


def test_repeats_auto_runs_to_its_cap_and_each_record_says_what_was_decided(tmp_path):
    done = run_cli(*RUN, "--repeats", "auto", "--repeats-target", "0.001", "--repeats-max", "3", "--output", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(tmp_path)
    decisions = [r["repeats_decision"] for r in found]
    assert [d["decision"] for d in decisions] == ["continue", "continue", "stop"]
    assert [d["runs"] for d in decisions] == [1, 2, 3] and len({d["series"] for d in decisions}) == 1
    assert decisions[-1]["reason"].startswith("cap reached: 3 runs; ") and decisions[-1]["target"] == pytest.approx(1e-5)
    assert len({r["seed"] for r in found}) == 3
    assert "repeats: stop: cap reached: 3 runs" in done.stdout
