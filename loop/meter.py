"""Timing that holds up on a cluster: synchronised windows, per-step distributions."""

from __future__ import annotations

import time

import torch

from larsbench.core.device import synchronize


class ThroughputWindow:
    """Wall time of the measured part of a run, identical on every rank.

    Both ends sit behind a barrier, so the window covers the slowest rank; evaluation inside
    the window is paused out (it is not training throughput).
    """

    def __init__(self, backend, device: torch.device):
        self.backend, self.device = backend, device
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.paused = 0.0
        self._pause_started: float | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.ended_at is None

    def reset(self) -> None:
        self.started_at = self.ended_at = self._pause_started = None
        self.paused = 0.0

    def _sync_now(self) -> float:
        synchronize(self.device)
        self.backend.barrier()
        return time.perf_counter()

    def start(self) -> None:
        self.started_at = self._sync_now()

    def pause(self) -> None:
        if self.running:
            self._pause_started = self._sync_now()

    def resume(self) -> None:
        if self._pause_started is not None:
            self.paused += self._sync_now() - self._pause_started
            self._pause_started = None

    def stop(self) -> None:
        if self.running:
            self.ended_at = self._sync_now()

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at - self.paused


class StepClock:
    """Per-step durations on this rank, and how much of each was spent waiting for data.

    On CUDA the step boundaries are recorded as events and read once at the end, so timing
    adds no host synchronisation to the training loop.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.durations: list[float] = []
        self.data_waits: list[float] = []  # per timed step, in step order
        self._waited = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._started: float | torch.cuda.Event | None = None

    def start(self) -> None:
        self._waited = 0.0
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started = event
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._started, end))
        else:
            self.durations.append(time.perf_counter() - self._started)
        self.data_waits.append(self._waited)

    def add_data_wait(self, seconds: float) -> None:
        self._waited += seconds

    @property
    def data_wait(self) -> float:
        return sum(self.data_waits)

    @property
    def count(self) -> int:
        return len(self.durations) + len(self._events)

    def reset(self) -> None:
        self.durations, self.data_waits, self._events = [], [], []

    def finish(self) -> list[float]:
        if self.cuda and self._events:
            torch.cuda.synchronize()
            self.durations += [start.elapsed_time(end) / 1000.0 for start, end in self._events]
            self._events.clear()
        return self.durations
