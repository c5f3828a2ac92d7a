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
    # Every rank's, gathered to rank 0 (lists indexed by rank):
    rank_hosts: list[str] = field(default_factory=list)
    rank_devices: list[str] = field(default_factory=list)
    rank_step_times: list[list[float]] = field(default_factory=list)  # measured window, all restarts
    rank_data_waits: list[list[float]] = field(default_factory=list)  # per timed step
    rank_compute_sec: list[list[float]] = field(default_factory=list)  # compute probe (latest start)
    flops_per_image: float | None = None  # forward + backward
    peak_key: str | None = None  # the arithmetic the run's peak is quoted for: bf16, fp16, tf32, fp32
    rank_peak_tflops: list[float] = field(default_factory=list)  # matrix-product probe per rank
    allreduce_bytes_per_step: int | None = None  # gradient bytes each rank reduces per optimizer step

    @property
    def final_top1(self) -> float | None:
        return self.evals[-1]["top1"] if self.evals else None

    @property
    def final_top5(self) -> float | None:
        return self.evals[-1]["top5"] if self.evals else None

    @property
    def data_wait_fraction(self) -> float | None:
        total = sum(self.step_times)
        return self.data_wait_sec / total if total > 0 else None

    def throughput(self, global_batch: int) -> float | None:
        if self.status != "ok" or self.window_steps <= 0 or self.window_sec <= 0:
            return None
        return self.window_steps * global_batch / self.window_sec

    @property
    def step_times_all(self) -> list[float]:
        """Rank 0's step times (the ranks step in lockstep; per-rank values are in ``rank_*``)."""
        return self.rank_step_times[0] if self.rank_step_times else self.step_times

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


STRAGGLER = 0.15  # a rank whose own time per step exceeds the others' median by this much


@dataclass(frozen=True)
class StepSplit:
    """One step, split: data wait + compute + exposed communication = step time."""

    step_sec: float
    data_wait_sec: float
    compute_sec: float
    exposed_comm_sec: float
    critical_rank: int
    note: str | None = None

    def fraction(self, part: float) -> float:
        return part / self.step_sec if self.step_sec > 0 else 0.0


def own_times(m: RunMetrics) -> list[float | None]:
    """Per rank, its compute (probe median) plus its mean data wait per step: the time it
    needs on its own, which its peers wait for at every all-reduce."""
    out: list[float | None] = []
    for rank, compute in enumerate(m.rank_compute_sec):
        waits = m.rank_data_waits[rank] if rank < len(m.rank_data_waits) else []
        data = sum(waits) / len(waits) if waits else 0.0
        out.append(sorted(compute)[len(compute) // 2] + data if compute else None)
    return out


def step_split(m: RunMetrics) -> StepSplit | None:
    """The split of the mean measured step, along the critical rank (the one whose own
    compute and data wait take longest). None without a window or a compute probe."""
    steps = m.step_times_all
    own = own_times(m)
    if not steps or not own or any(o is None for o in own):
        return None
    critical = max(range(len(own)), key=lambda r: own[r])
    waits = m.rank_data_waits[critical] if critical < len(m.rank_data_waits) else []
    data = sum(waits) / len(waits) if waits else 0.0
    compute = own[critical] - data
    step = sum(steps) / len(steps)
    exposed = step - data - compute
    note = None
    if exposed < 0:
        note = f"the compute probe took {-exposed / step:.0%} longer than the measured step; exposed communication set to 0"
        exposed = 0.0
    return StepSplit(step, data, compute, exposed, critical, note)


def straggler(m: RunMetrics) -> dict[str, Any] | None:
    """The rank the others wait for, when one is clearly slower on its own (its own time over
    the others' median by more than ``STRAGGLER``); None otherwise."""
    own = own_times(m)
    if len(own) < 2 or any(o is None for o in own):
        return None
    slowest = max(range(len(own)), key=lambda r: own[r])
    others = sorted(o for r, o in enumerate(own) if r != slowest)
    typical = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2
    if typical <= 0 or own[slowest] <= (1 + STRAGGLER) * typical:
        return None
    return {
        "rank": slowest,
        "host": m.rank_hosts[slowest] if slowest < len(m.rank_hosts) else None,
        "own_sec_per_step": own[slowest],
        "others_median_sec_per_step": typical,
        "slower_by": own[slowest] / typical - 1,
    }
