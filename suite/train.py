"""One rank's training run: the same loop, the same data order and the same optimizer for
every backend. The backend is already set up; this function never asks which one it has."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from backends.base import Backend
from suite import checkpoint, telemetry
from suite.checkpoint import set_rng_state
from suite.config import RunSpec
from suite.errors import ConfigError
from suite.eventlog import EventLog
from suite.meter import StepClock, ThroughputWindow, quantile
from suite.precision import Precision
from suite.preemption import PreemptionNotice
from suite.progress import RankProgress
from workloads.data import build_rank_data
from workloads.models import build_model
from workloads.optimizers import build_optimizer
from workloads.schedules import WarmupPolySchedule


@dataclass
class RunMetrics:
    """What one run measured; identical on every rank except ``step_times`` (per rank).
    Survives preemption: it is checkpointed and restored with the run."""

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


@dataclass
class RunContext:
    """Where a run keeps what outlives one process: checkpoints, the event log, the signal."""

    checkpoints: Path | None = None
    checkpoint_every_steps: int | None = None
    telemetry: Path | None = None  # the LARS telemetry file (written by the main rank only)
    events: EventLog = field(default_factory=lambda: EventLog(None))
    preemption: PreemptionNotice | None = None
    queue_sec: float | None = None  # how long this start waited in the scheduler's queue
    process_start: float = field(default_factory=time.perf_counter)


def train(
    spec: RunSpec, backend: Backend, device: torch.device, rank: int, world_size: int, ctx: RunContext | None = None
) -> RunMetrics:
    ctx = ctx or RunContext()
    events = ctx.events
    events.start("init_start")
    metrics = RunMetrics()
    torch.manual_seed(spec.seed)  # same initial weights everywhere; wrap() also syncs them
    data = build_rank_data(spec, rank, world_size, device)
    metrics.steps_per_epoch = data.steps_per_epoch(spec.accumulation_steps)
    if metrics.steps_per_epoch < 1:
        raise ConfigError(
            "micro_batch_size",
            f"each rank's share of the train set ({data.train_samples} images / {world_size} ranks)"
            f" is smaller than micro_batch_size × accumulation_steps; lower the batch",
        )
    total_steps = spec.steps or max(1, round(spec.epochs * metrics.steps_per_epoch))
    warmup_steps = round(spec.warmup_epochs * metrics.steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ConfigError(
            "warmup_epochs", f"warm-up ({warmup_steps} steps) must be shorter than the run ({total_steps} steps)"
        )

    precision = Precision(spec.precision, device.type, channels_last=spec.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    model = precision.convert_model(build_model(spec.model, spec.num_classes).to(device))
    optimizer, metrics.peak_lr = build_optimizer(
        spec.optimizer,
        model,
        base_lr=spec.lr,
        scaling_rule=spec.scaling_rule,
        global_batch=spec.global_batch_size,
        reference_batch=spec.reference_batch_size,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        trust_coefficient=spec.trust_coefficient,
        lars_eps=spec.lars_eps,
    )
    schedule = WarmupPolySchedule(metrics.peak_lr, total_steps, warmup_steps, spec.end_lr, spec.poly_power)
    resumed = _find_checkpoint(ctx, rank, world_size)
    if resumed is not None:
        _check_same_run(resumed["main"].get("spec", {}), spec.to_dict())
        model.load_state_dict(resumed["main"]["model"])
    if spec.compile:  # after loading: checkpoints hold the plain module's keys (backend.unwrap)
        model = torch.compile(model)
    model, optimizer = backend.wrap(
        model,
        optimizer,
        micro_batch_size=spec.micro_batch_size,
        accumulation_steps=spec.accumulation_steps,
        precision=precision,
    )
    step = 0
    if resumed is not None:
        # After wrap: Horovod rebuilds the optimizer, which would drop a state loaded before.
        optimizer.load_state_dict(resumed["main"]["optimizer"])
        if backend.precision.scaler is not None and resumed["main"].get("grad_scaler"):
            backend.precision.scaler.load_state_dict(resumed["main"]["grad_scaler"])  # fp16: resume at the same loss scale
        metrics = RunMetrics(**resumed["main"]["metrics"])
        metrics.status = "ok"  # it was saved as "preempted"
        metrics.restarts += 1
        step = resumed["main"]["step"]
        set_rng_state(resumed["rng"])
    if ctx.queue_sec is not None:
        metrics.queue_sec = (metrics.queue_sec or 0.0) + ctx.queue_sec
    criterion = nn.CrossEntropyLoss()
    events.event("global_batch_size", spec.global_batch_size)
    events.event("opt_name", spec.optimizer)
    events.event("opt_base_learning_rate", metrics.peak_lr)
    events.event("opt_learning_rate_warmup_steps", warmup_steps)
    events.event("train_samples", data.train_samples)

    losses = LossLog(backend)
    clock = StepClock(device)
    window = ThroughputWindow(backend, device)
    window_first_step = min(step + spec.timing_warmup_steps, total_steps - 1)
    progress = RankProgress(spec.label, total_steps, enabled=rank == 0)
    every = telemetry.interval(spec.telemetry_every_steps, total_steps)
    lars_telemetry = telemetry.LarsTelemetry(optimizer, backend.unwrap(model), ctx.telemetry if rank == 0 else None, every)

    backend.barrier()
    events.end("init_stop")
    if resumed is not None:
        metrics.restart_overhead_sec += time.perf_counter() - ctx.process_start
        progress.note(f"resumed at step {step} (restart {metrics.restarts})")
    else:
        events.start("run_start")
    # Elapsed time continues across restarts: time-to-accuracy counts on-clock time only.
    run_start = time.perf_counter() - metrics.on_clock_sec
    epoch, skip = divmod(step, metrics.steps_per_epoch)
    while step < total_steps and metrics.status == "ok":
        data.train.set_epoch(epoch, skip=skip * spec.accumulation_steps)
        batches = iter(data.train)
        events.start("epoch_start", epoch_num=epoch + 1)
        for _ in range(min(metrics.steps_per_epoch - skip, total_steps - step)):
            if step >= window_first_step and not window.running:
                window.start()  # also restarts it after a periodic checkpoint
            schedule.apply(optimizer, step)
            if lars_telemetry.due(step + 1):
                lars_telemetry.arm()
            timed = window.running
            if timed:
                clock.start()
            loss = train_step(model, optimizer, batches, backend, criterion, spec.accumulation_steps, device, clock if timed else None)
            if timed:
                clock.stop()
            step += 1
            losses.add(step, loss)
            if lars_telemetry.due(step):
                lars_telemetry.collect(step)
            if step % spec.log_every_steps == 0 or step == total_steps:
                if losses.flush():
                    metrics.status, metrics.diverged_at_step = "diverged", losses.diverged_at
                    break
                progress.update(step, losses.last)
                if _preemption_agreed(ctx, backend, device):
                    metrics.status = "preempted"
                    break
            if ctx.checkpoint_every_steps and step % ctx.checkpoint_every_steps == 0 and step < total_steps:
                _save(spec, ctx, step, rank, world_size, backend, model, optimizer, metrics, losses, clock, window, run_start)
        skip = 0
        if metrics.status != "ok":
            break
        epoch += 1
        events.end("epoch_stop", epoch_num=epoch)
        last_step = step == total_steps
        if data.val is not None and (epoch % spec.eval_every_epochs == 0 or last_step):
            window.pause()
            events.start("eval_start", epoch_num=epoch)
            sync_buffers(backend.unwrap(model), backend)
            top1, top5 = evaluate(backend.unwrap(model), data.val, backend, device, spec.num_classes)
            window.resume()
            elapsed = time.perf_counter() - run_start
            epochs_done = step / metrics.steps_per_epoch
            metrics.evals.append({"step": step, "epoch": epochs_done, "top1": top1, "top5": top5, "elapsed_sec": elapsed})
            events.event("eval_accuracy", top1, epoch_num=epochs_done)
            events.end("eval_stop", epoch_num=epoch)
            progress.note(f"step {step} (epoch {epochs_done:.2f}): top-1 {top1:.3f}, top-5 {top5:.3f}")
            if spec.target_top1 is not None and metrics.time_to_accuracy_sec is None and top1 >= spec.target_top1:
                metrics.time_to_accuracy_sec, metrics.epochs_to_accuracy = elapsed, epochs_done
    if metrics.status == "preempted":
        _save(spec, ctx, step, rank, world_size, backend, model, optimizer, metrics, losses, clock, window, run_start)
    else:
        _absorb(metrics, losses, clock, window, run_start)
    progress.close()
    metrics.steps = step
    metrics.epochs = step / metrics.steps_per_epoch
    metrics.param_checksum = param_checksum(backend.unwrap(model))
    if metrics.status != "preempted":
        reached = metrics.time_to_accuracy_sec is not None
        events.end("run_stop", status="success" if reached else "aborted", larsbench_status=metrics.status)
    return metrics


def _absorb(metrics: RunMetrics, losses: "LossLog", clock: StepClock, window: ThroughputWindow, run_start: float) -> None:
    """Fold this process's measurements into the run's (which may span restarts)."""
    window.stop()
    losses.flush()
    metrics.loss_curve += losses.curve
    losses.curve = []
    if window.elapsed:
        metrics.window_sec += window.elapsed
        metrics.window_steps += clock.count
    metrics.step_times += clock.finish()
    metrics.data_wait_sec += clock.data_wait
    metrics.on_clock_sec = time.perf_counter() - run_start


# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = {
    "collective_timeout_sec", "data_workers", "checkpoint_every_steps", "log_every_steps", "telemetry_every_steps",
}  # fmt: skip


def _check_same_run(saved: dict, current: dict) -> None:
    differs = sorted(k for k in current.keys() | saved.keys() if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))
    if differs:
        raise ConfigError(
            "--run-id",
            f"its checkpoint was written with other settings ({', '.join(differs)} differ); resume with the "
            "same settings, or start a new run id",
        )


def _save(spec: RunSpec, ctx: RunContext, step: int, rank: int, world_size: int, backend: Backend, model, optimizer,
          metrics: RunMetrics, losses: "LossLog", clock: StepClock, window: ThroughputWindow, run_start: float) -> None:  # fmt: skip
    if ctx.checkpoints is None:
        return
    _absorb(metrics, losses, clock, window, run_start)
    state = None
    if rank == 0:
        state = {
            "spec": spec.to_dict(),
            "step": step,
            "model": backend.unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "grad_scaler": backend.precision.scaler.state_dict() if backend.precision.scaler is not None else None,
            "metrics": dataclasses.asdict(metrics),
        }
    checkpoint.save(ctx.checkpoints, step, rank, world_size, state, backend.barrier)
    # The window restarts after a checkpoint: saving is not training time.
    clock.reset()
    window.reset()


def _find_checkpoint(ctx: RunContext, rank: int, world_size: int) -> dict | None:
    if ctx.checkpoints is None:
        return None
    folder = checkpoint.latest_valid(ctx.checkpoints, world_size)
    if folder is None:
        return None
    main, rng = checkpoint.load(folder, rank)
    return {"main": main, "rng": rng}


def _preemption_agreed(ctx: RunContext, backend: Backend, device: torch.device) -> bool:
    """True on every rank once any rank has been told the job will stop."""
    if ctx.preemption is None:
        return False
    flag = torch.tensor([1.0 if ctx.preemption.requested else 0.0], device=device)
    return bool(backend.all_reduce(flag, "sum").item() > 0)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    backend: Backend,
    criterion: nn.Module,
    accumulation_steps: int,
    device: torch.device,
    clock: StepClock | None,
) -> torch.Tensor:
    """One optimizer step over ``accumulation_steps`` micro-batches; returns the mean loss
    (a device tensor: reading it here would stall a GPU every step)."""
    precision = backend.precision  # autocast dtype, loss scaler, memory layout (suite.precision)
    total = torch.zeros((), device=device)
    for micro in range(accumulation_steps):
        waited = time.perf_counter()
        images, labels = next(batches)
        if clock is not None:
            clock.add_data_wait(time.perf_counter() - waited)
        images = precision.convert_input(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True)
        with backend.accumulate(model, sync=micro == accumulation_steps - 1):
            with precision.autocast():
                loss = criterion(model(images).float(), labels)  # the loss in fp32 whatever the logits'
            backend.backward(loss)  # scales the loss under fp16
        total += loss.detach()
    backend.step(optimizer)  # unscales the reduced gradients before the optimizer under fp16
    return total / accumulation_steps


class LossLog:
    """Per-step losses kept on the device and averaged across ranks in batches, so the loop
    pays one small collective every ``log_every_steps`` instead of one per step."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.curve: list[list[float | None]] = []
        self.diverged_at: int | None = None
        self.last: float | None = None

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss))

    def flush(self) -> bool:
        """Reduce what is pending; True when a loss was NaN or infinite (on every rank alike)."""
        if not self.pending:
            return self.diverged_at is not None
        values = self.backend.all_reduce(torch.stack([loss for _, loss in self.pending]).double(), "mean")
        for (step, _), value in zip(self.pending, values.tolist()):
            finite = math.isfinite(value)
            if not finite and self.diverged_at is None:
                self.diverged_at = step
            self.curve.append([step, value if finite else None])
            self.last = value
        self.pending.clear()
        return self.diverged_at is not None


@torch.no_grad()
def sync_buffers(model: nn.Module, backend: Backend) -> None:
    """Give every rank rank 0's BatchNorm statistics before evaluating. DDP does this on every
    forward; DeepSpeed and Horovod do not, and each rank would evaluate different models."""
    for buffer in model.buffers():
        backend.broadcast_(buffer, src=0)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, backend: Backend, device: torch.device, num_classes: int
) -> tuple[float, float]:
    """Top-1 and top-5 over the whole validation set, counts summed across ranks."""
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-k hits, images
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        hits = model(images).topk(k, dim=1).indices.eq(labels.unsqueeze(1))
        counts[0] += hits[:, 0].sum()
        counts[1] += hits.any(dim=1).sum()
        counts[2] += labels.numel()
    backend.all_reduce(counts, "sum")
    model.train(was_training)
    top1, top5, total = counts.tolist()
    return top1 / total, top5 / total


def param_checksum(model: nn.Module) -> float | None:
    """Sum of every parameter in float64: equal runs give equal sums up to reduction order.
    None when the weights hold NaN or infinity (a diverged run): JSON has no such numbers."""
    with torch.no_grad():
        total = float(sum(p.detach().double().sum() for p in model.parameters()))
    return total if math.isfinite(total) else None
