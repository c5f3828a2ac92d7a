"""What one run measured, as plain data that survives preemption (checkpointed with the run).

Kept free of torch: the launcher builds failed records from it without loading the loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolation quantile (numpy's and torch's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class RunMetrics:
    """Identical on every rank except ``step_times`` (this rank's)."""

    status: str = "ok"
    steps: int = 0
    steps_per_epoch: int = 0
    epochs: float = 0.0
    peak_lr: float = 0.0
    loss_curve: list[list[float | None]] = field(default_factory=list)
    diverged_at_step: int | None = None
    evals: list[dict[str, float]] = field(default_factory=list)
    time_to_accuracy_sec: float | None = None
    epochs_to_accuracy: float | None = None
    window_sec: float = 0.0  # measured (timed) training time, summed over restarts
    window_steps: int = 0
    step_times: list[float] = field(default_factory=list)
    data_wait_sec: float = 0.0
    param_checksum: float | None = None
    on_clock_sec: float = 0.0  # training wall time, evaluation included, downtime excluded
    restarts: int = 0
    restart_overhead_sec: float = 0.0  # setup and checkpoint loading after each restart
    queue_sec: float | None = None  # time the job waited in a scheduler's queue, summed over starts

    @property
    def final_top1(self) -> float | None:
        return self.evals[-1]["top1"] if self.evals else None

    @property
    def final_top5(self) -> float | None:
        return self.evals[-1]["top5"] if self.evals else None

    @property
    def step_time_p50_sec(self) -> float | None:
        return quantile(self.step_times, 0.5)

    @property
    def step_time_p95_sec(self) -> float | None:
        return quantile(self.step_times, 0.95)

    @property
    def data_wait_fraction(self) -> float | None:
        total = sum(self.step_times)
        return self.data_wait_sec / total if total > 0 else None

    def throughput(self, global_batch: int) -> float | None:
        if self.status != "ok" or self.window_steps <= 0 or self.window_sec <= 0:
            return None
        return self.window_steps * global_batch / self.window_sec

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
