"""The run-level detectors on real runs with a cause planted from outside (the settings stay those
of an idle run): a slowdown from the middle of the window makes the run unstable, with the shift
named where it began; one rank slowed throughout is named the straggler. Each test first checks,
in the run's own per-step data, that the planted cause really landed in the measured window, so a
failure says the detector missed it, not that the machine's scheduler did not plant it. Their
error rates over many runs are measured by benchmarks/calibration/detectors.py (docs/method.md)."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from rich.console import Console

from benchmarks.calibration.plant import CpuQuota, Planter, Throttle
from larsbench.core.layout import RunFiles
from larsbench.suite.config import load_experiment
from larsbench.suite.launch import launch_run

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

SETTINGS = {"model": "alexnet_bn_mini", "dataset": "synthetic", "image_size": 32, "micro_batch_size": 32, "device": "cpu",
            "synthetic_samples": 1024, "compute_probe_steps": 0, "log_every_steps": 2, "telemetry_every_steps": 0,
            "timing_warmup_steps": 4}  # fmt: skip
SHIFT = re.compile(r"step time shifted at step (\d+) of the window")


def planted_run(tmp_path, throttle: Throttle | CpuQuota, **settings) -> tuple[dict, list[dict]]:
    (spec,) = load_experiment(None, {**SETTINGS, **settings}).runs
    results = tmp_path / "results.jsonl"
    with Planter(RunFiles.of(results, "planted"), throttle):
        record = launch_run(spec, results, "test", Console(quiet=True), "planted")
    assert record["status"] == "ok", record["error"]
    rows = [json.loads(line) for line in (tmp_path / record["steps_file"]).read_text().splitlines()]
    return record, sorted(rows, key=lambda row: row["rank"])


def test_a_slowdown_from_mid_window_is_flagged_where_it_began(tmp_path):
    # 64 steps, 4 untimed: rank 0 reaches step 34 at window step 30; from there on the rank is
    # stopped half of every 30 ms, so every later step is about 2x slower. (A third, 1.5x,
    # landed only 1.28x in one CI run, the machine speeding up under it: the check below then
    # fails the test for the machine, not the detector. The calibration measures smaller ones.)
    record, (rank0,) = planted_run(tmp_path, Throttle(1 / 2, period_sec=0.03, start_at_step=34), world_size=1, steps=64)
    steps = rank0["step_sec"]
    before, after = statistics.median(steps[:26]), statistics.median(steps[34:])
    assert after > 1.3 * before, f"the slowdown did not plant: {before * 1e3:.1f} → {after * 1e3:.1f} ms"
    assert record["unstable"] is True, record["unstable_reasons"]
    (found,) = [m for m in map(SHIFT.search, record["unstable_reasons"]) if m]
    assert 26 <= int(found[1]) <= 36, record["unstable_reasons"]  # the progress file lags a step or two
    assert record["straggler"] is None  # one rank: nobody to wait for


def test_one_slowed_rank_of_two_is_named_the_straggler(tmp_path):
    # Held to half a CPU by the kernel (a cgroup quota), not stopped by a thread that must itself
    # be scheduled on the cores the ranks keep busy: a 30% duty cycle of SIGSTOPs left rank 1's
    # readiness within 2% of rank 0's in one CI run (its 1.4-1.55x elsewhere).
    record, ranks = planted_run(tmp_path, CpuQuota(0.5, ranks=(1,)), world_size=2, steps=40)
    ready = [statistics.fmean(r for r in row["ready_sec"] if r is not None) for row in ranks]
    assert ready[1] > 1.2 * ready[0], f"rank 1 was not slowed: ready {ready}"
    straggler = record["straggler"]
    assert straggler is not None and straggler["rank"] == 1 and straggler["host"], record["straggler"]
    assert straggler["last_share"] > 0.8 and straggler["cost_sec"] > 0
    assert record["split_rank"] == 1  # the split follows the rank the other waited for
