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
    """Identical on every rank (per-rank series are gathered to every rank)."""

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
    # Per window step, from the backend's own collectives (``backends.base.CommTimer``):
    rank_ready_times: list[list[float | None]] = field(default_factory=list)  # step start → last gradient handed to a reduction
    rank_exposed_comm: list[list[float]] = field(default_factory=list)  # waiting on reductions after compute was done
    rank_comm_times: list[list[float]] = field(default_factory=list)  # first reduction launched → last finished
    comm_messages_bytes: list[int] = field(default_factory=list)  # the reductions of one step, as the backend sent them
    rank_compute_sec: list[list[float]] = field(default_factory=list)  # compute probe (latest start)
    flops_per_image: float | None = None  # forward + backward
    peak_key: str | None = None  # the arithmetic the run's peak is quoted for: bf16, fp16, tf32, fp32
    rank_peak_tflops: list[float] = field(default_factory=list)  # matrix-product probe per rank
    allreduce_bytes_per_step: int | None = None  # gradient bytes each rank reduces per optimizer step
    # Where rank 0's latest start spent its time around the clock (``core.phases``), set at the end.
    setup_sec: float | None = None
    phases_sec: dict[str, float] = field(default_factory=dict)
    layer_telemetry: bool | None = None  # the optimizer keeps per-layer statistics (its component's trait)
    # Memory per rank (``loop.memory``), the largest over restarts:
    rank_optimizer_state_bytes: list[int] = field(default_factory=list)
    rank_peak_host_rss_bytes: list[int] = field(default_factory=list)
    rank_peak_cuda_bytes: list[int | None] = field(default_factory=list)

    @property
    def final_top1(self) -> float | None:
        return self.evals[-1]["top1"] if self.evals else None

    @property
    def final_top5(self) -> float | None:
        return self.evals[-1]["top5"] if self.evals else None

    def throughput(self, global_batch: int) -> float | None:
        if self.status != "ok" or self.window_steps <= 0 or self.window_sec <= 0:
            return None
        return self.window_steps * global_batch / self.window_sec

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class StepSplit:
    """The mean optimizer step of one rank, split into measured parts that add up to it:
    ``data_wait + compute + exposed_comm + overhead = step``.

    - data wait: the loop waiting for its next batch (timed around ``next()``);
    - exposed communication: the step waiting on the backend's own reductions after this
      rank's last gradient was ready (timestamps on the collectives, ``CommTimer``);
    - compute: forward, backward and optimizer step alone (the compute probe's median, on a
      copy of the model without the backend, inputs already on the device);
    - overhead: the rest: the loop, the backend's wrappers and hooks, host-to-device copies
      and, on a CPU, whatever competes for the rank's cores (data-loader workers).

    ``comm`` is the whole communication span (first reduction launched to last finished);
    ``comm - exposed_comm`` is the part hidden behind compute. Parts that were not measured
    (no probe, no collectives timed) are None, never a remainder. On one rank nothing is
    communication: the reduction calls' own time is overhead (``note`` says how much).
    """

    step_sec: float
    data_wait_sec: float
    compute_sec: float | None
    exposed_comm_sec: float | None
    overhead_sec: float | None
    comm_sec: float | None
    rank: int
    note: str | None = None
    # The reduction calls as measured, before the split's one-rank rule: time waited on them
    # after the last gradient was ready, and first launched to last finished.
    reduction_wait_sec: float | None = None
    reduction_span_sec: float | None = None

    @property
    def overlapped_comm_sec(self) -> float | None:
        if self.comm_sec is None or self.exposed_comm_sec is None:
            return None
        return max(0.0, self.comm_sec - self.exposed_comm_sec)

    def fraction(self, part: float | None) -> float | None:
        if part is None:
            return None
        return part / self.step_sec if self.step_sec > 0 else 0.0


def _row(rows: list[list], rank: int) -> list:
    return rows[rank] if rank < len(rows) else []


def _finite_mean(values: list[float | None]) -> float | None:
    return mean([v for v in values if v is not None])


def critical_rank(m: RunMetrics) -> int:
    """The rank the others wait for: the one whose gradients were ready last on average (its
    own data wait and compute before communication). Rank 0 without per-rank ready times."""
    means = [_finite_mean(row) for row in m.rank_ready_times]
    if len(means) < 2 or any(v is None for v in means):
        return 0
    return max(range(len(means)), key=lambda r: means[r])


def split_for(m: RunMetrics, rank: int) -> StepSplit | None:
    """The split of ``rank``'s mean measured step, or None without a measured window."""
    steps = _row(m.rank_step_times, rank)
    if not steps:
        return None
    step = mean(steps)
    data = mean(_row(m.rank_data_waits, rank)) or 0.0
    exposed = reduction_wait = mean(_row(m.rank_exposed_comm, rank))
    comm = reduction_span = mean(_row(m.rank_comm_times, rank))
    probe = _row(m.rank_compute_sec, rank)
    compute = quantile(probe, 0.5) if probe else None
    overhead = note = None
    if len(m.rank_step_times) == 1 and exposed:
        # One rank: the backend's reduction calls move nothing between ranks (DDP still divides
        # and copies its buckets, DeepSpeed flattens and unflattens its buffers). Their time is
        # the library's own overhead, not communication.
        note = f"one rank: the backend's reduction calls ({exposed * 1e3:.3g} ms per step) moved nothing and count as overhead"
        exposed, comm = 0.0, 0.0
    if compute is not None and exposed is not None:
        overhead = step - data - exposed - compute
        if overhead < 0:
            # The probe ran outside the loop (other cache state, no data workers): it may come
            # out slower than the loop's own compute. Say so rather than shrink another part.
            loop_compute = max(0.0, step - data - exposed)
            note = "; ".join(filter(None, [note, (
                f"the compute probe ({compute * 1e3:.4g} ms) took longer than the loop's compute "
                f"({loop_compute * 1e3:.4g} ms: step minus data wait and exposed communication); "
                "compute is the loop's, overhead 0")]))  # fmt: skip
            compute, overhead = loop_compute, 0.0
    return StepSplit(step, data, compute, exposed, overhead, comm, rank, note, reduction_wait, reduction_span)


def step_split(m: RunMetrics) -> StepSplit | None:
    """The split along the critical rank (``critical_rank``)."""
    return split_for(m, critical_rank(m))
