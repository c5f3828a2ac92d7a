"""Timing that holds up on a cluster: synchronised windows, per-step distributions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from larsbench.backends.comm_timing import CommMarks
from larsbench.core.clock import Mark, mark, seconds
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


@dataclass(frozen=True)
class StepTimes:
    """One measured optimizer step on this rank, in seconds."""

    step: float
    data_wait: float
    ready: float | None  # step start → last gradient handed to a reduction (None: no reduction)
    exposed_comm: float  # waiting on reductions after compute was done
    comm: float  # first reduction launched → last finished


class StepClock:
    """Per-step timings on this rank: the step, how much of it was spent waiting for data,
    and the backend's reduction marks (``backends.comm_timing``).

    Marks are ``core.clock`` marks (CUDA events on a GPU), read once in ``finish``: timing adds
    no host synchronisation to the training loop.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.steps: list[StepTimes] = []
        self._pending: list[tuple[Mark, Mark, float, CommMarks]] = []
        self._waited = 0.0
        self._started: Mark | None = None
        self.messages: list[int] | None = None  # the reductions of the first timed step

    def start(self) -> None:
        self._waited = 0.0
        self._started = mark(self.cuda)

    def stop(self, comm: CommMarks) -> None:
        self._pending.append((self._started, mark(self.cuda), self._waited, comm))
        if self.messages is None:
            self.messages = list(comm.messages)

    def add_data_wait(self, seconds_waited: float) -> None:
        self._waited += seconds_waited

    @property
    def count(self) -> int:
        return len(self.steps) + len(self._pending)

    def reset(self) -> None:
        self.steps, self._pending = [], []

    def finish(self) -> list[StepTimes]:
        for start, end, waited, comm in self._pending:
            extra = sum(seconds(a, b) for a, b in comm.waited)
            measured = comm.ready is not None and comm.done is not None
            self.steps.append(StepTimes(
                step=seconds(start, end),
                data_wait=waited,
                ready=seconds(start, comm.ready) if comm.ready is not None else None,
                exposed_comm=(max(0.0, seconds(comm.ready, comm.done)) if measured else 0.0) + extra,
                comm=(max(0.0, seconds(comm.first, comm.done)) if measured else 0.0) + extra,
            ))  # fmt: skip
        self._pending.clear()
        return self.steps
