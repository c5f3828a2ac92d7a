"""Seeing a grid's cost before paying it: ``larsbench run --dry-run`` and ``larsbench slurm
--dry-run`` list the runs with their steps and a time from earlier runs of each setting on this
machine, and write nothing; ``larsbench --version``."""

from __future__ import annotations

import socket

import pytest

import larsbench
from larsbench.suite.plan import plan, planned_steps, run_seconds, total_text
from tests.conftest import larsbench as cli
from tests.records import make_record, make_spec, write_records


def test_the_default_run_is_listed_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    result = cli("run", "--dry-run", "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "alexnet_bn_mini" in line]
    assert len(rows) == 6
    # 10 classes × 128 images, micro-batch 32, 4 epochs: 160 steps on 1 rank, 80 on 2
    for backend in ("ddp", "deepspeed", "horovod"):
        assert any(backend in row and " 1 " in row and "32 = 1×32×1" in row and " 160 " in row for row in rows), rows
        assert any(backend in row and " 2 " in row and "64 = 2×32×1" in row and " 80 " in row for row in rows), rows
    assert "6 run(s): no estimate" in result.stdout
    assert not out.exists()


def test_steps_follow_the_trainer_count():
    assert planned_steps(make_spec(steps=30)) == 30
    # 2048 synthetic images over 2 ranks, micro 8 × accumulation 2: 64 steps an epoch
    assert planned_steps(make_spec(steps=None, epochs=1.5, world_size=2, accumulation_steps=2, synthetic_samples=2048)) == 96
    assert planned_steps(make_spec(steps=None, dataset="imagefolder", data_dir="/data")) is None  # counted when it runs


def test_a_setting_that_ran_here_before_is_estimated_from_its_runs(tmp_path):
    here = socket.gethostname()
    spec = make_spec(backend="ddp", world_size=2)
    earlier = [
        make_record(backend="ddp", world_size=2, throughput=400.0, setup_sec=setup, phases_sec={"record": 0.5}, host=here)
        for setup in (3.0, 4.0, 9.0)
    ]
    elsewhere = make_record(backend="ddp", world_size=2, throughput=400.0, setup_sec=1.0, host="another-node")
    old = make_record(backend="ddp", world_size=2, throughput=400.0, host=here)  # written before runs were timed
    write_records(tmp_path / "results.jsonl", [*earlier, elsewhere, old])
    assert run_seconds(old) is None
    (planned,) = plan([spec], tmp_path)
    expected = sorted(run_seconds(r) for r in earlier)[1]  # the median of this machine's three
    assert planned.estimate_sec == pytest.approx(expected) and planned.earlier == 3
    assert expected == pytest.approx(4.0 + earlier[1]["wall_time_sec"] + 0.5)
    other = plan([spec, make_spec(backend="horovod", world_size=2)], tmp_path)
    assert other[1].estimate_sec is None
    assert "plus 1 never run here (no estimate)" in total_text(other)
    result = cli("run", "--dry-run", "--backend", "ddp", "--model", "tiny_cnn", "--image-size", "16", "--micro-batch", "8",
                 "--world-size", "2", "--steps", "30", "--device", "cpu", "--output", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"about {expected:.0f} s" in result.stdout and "(3×)" in result.stdout


def test_slurm_dry_run_lists_the_scripts_and_writes_or_submits_nothing(tmp_path):
    out = tmp_path / "out"
    result = cli("slurm", "--dry-run", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert f"would write {out.resolve()}/slurm/cpu-default-1n1t.sbatch  (3 runs as a job array" in result.stdout
    assert f"would write {out.resolve()}/slurm/cpu-default-1n2t.sbatch  (3 runs as a job array" in result.stdout
    assert "queueing not included" in result.stdout
    assert not out.exists()
    refused = cli("slurm", "--dry-run", "--submit", "--output", str(out))
    assert refused.returncode == 2 and refused.stderr.startswith("larsbench: error: --dry-run: ")
    assert not out.exists()


def test_version():
    result = cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"larsbench {larsbench.__version__}")
