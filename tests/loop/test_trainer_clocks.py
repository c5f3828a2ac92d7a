"""The compute probe is setup, not training: it runs before MLPerf's run_start and before the
clock that time to accuracy reads, so a longer probe never makes a run look slower to train.
The loop's own work between steps is inside the steps' times: the window holds nothing else."""

from __future__ import annotations

import time

import pytest
import torch

from larsbench.backends.base import free_port
from larsbench.backends.ddp import DDPBackend
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.layout import RunFiles
from larsbench.loop.eventlog import EventLog
from larsbench.loop.trainer import RunContext, Trainer
from tests.records import make_spec


@pytest.fixture
def one_rank_ddp(monkeypatch):
    port = free_port()
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "1")):  # fmt: skip
        monkeypatch.setenv(key, value)
    backend = DDPBackend()
    backend.setup(ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", port), torch.device("cpu"), 60.0)
    yield backend
    backend.teardown()


def test_the_probe_ends_before_run_start_and_before_the_training_clock(one_rank_ddp, tmp_path, monkeypatch):
    spec = make_spec(steps=6, compute_probe_steps=3, timing_warmup_steps=1, synthetic_samples=64)
    files = RunFiles.of(tmp_path / "results.jsonl", "r")
    trainer = Trainer(spec, one_rank_ddp, torch.device("cpu"), 0, 1, RunContext(files=files, events=EventLog(files.event_log)))
    probed: list[tuple[float, float]] = []
    real_probe = trainer.probe

    def timed_probe() -> None:
        started = time.time(), time.perf_counter()
        real_probe()
        probed.append((started, (time.time(), time.perf_counter())))

    monkeypatch.setattr(trainer, "probe", timed_probe)
    metrics = trainer.run()
    ((_, (probe_end_wall, probe_end)),) = probed
    assert metrics.status == "ok" and metrics.rank_compute_sec and len(metrics.rank_compute_sec[0]) == 3
    # The clock time to accuracy and on-clock time read starts after the probe ...
    assert trainer.run_start >= probe_end
    # ... and so does MLPerf's run clock: run_start is logged after the probe ended.
    events = {line.split('"key": "')[1].split('"')[0]: line for line in files.event_log.read_text().splitlines() if ":::MLLOG" in line}
    run_start_ms = int(events["run_start"].split('"time_ms": ')[1].split(",")[0])
    assert run_start_ms >= int(probe_end_wall * 1000)


def test_a_wait_in_the_loops_work_between_steps_lands_in_that_steps_time(one_rank_ddp, tmp_path, monkeypatch):
    # The preemption check after each logged step is a collective: a peer stopped just then holds
    # this rank there for as long. Plant that wait after step 8 and find it in step 8's time.
    spec = make_spec(steps=16, compute_probe_steps=0, timing_warmup_steps=2, log_every_steps=1, synthetic_samples=128)
    trainer = Trainer(spec, one_rank_ddp, torch.device("cpu"), 0, 1, RunContext())
    real_check = trainer._preemption_agreed

    def held_once() -> bool:
        if trainer.step == 8:
            time.sleep(0.5)
        return real_check()

    monkeypatch.setattr(trainer, "_preemption_agreed", held_once)
    metrics = trainer.run()
    (times,) = metrics.rank_step_times
    assert metrics.status == "ok" and len(times) == 14  # steps 3..16
    assert times[8 - 3] >= 0.5 and max(times[:5] + times[6:]) < 0.5, times
    # Every second of the window is in some step (the window's barriers aside).
    assert sum(times) == pytest.approx(metrics.window_sec, rel=0.05)
