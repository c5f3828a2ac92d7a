"""One rank's training run: the same loop, the same data order and the same optimizer for
every backend. The backend is already set up; the trainer never asks which one it has.

``Trainer`` owns the run's parts (data, model, optimizer, schedule, precision, meters) and
registers every stateful one with its ``Checkpointer``, so a preempted run saves and resumes
in one call each. ``Trainer.advance`` is one optimizer step with all its bookkeeping, the same
code the throughput benchmark in ``benchmarks/`` times against a bare loop.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from larsbench.backends.base import Backend
from larsbench.core.errors import ConfigError
from larsbench.core.layout import RunFiles
from larsbench.core.phases import Phases
from larsbench.core.precision import Precision
from larsbench.core.preemption import PreemptionNotice
from larsbench.core.files import atomic_write
from larsbench.core.spec import RunSpec, resume_differences
from larsbench.loop import memory, telemetry
from larsbench.loop.checkpoint import Checkpointer
from larsbench.loop.eventlog import EventLog, log_run_setup
from larsbench.loop.flops import measured_peak_tflops, peak_key, training_flops_per_image
from larsbench.loop.meter import StepClock, ThroughputWindow
from larsbench.loop.metrics import RunMetrics
from larsbench.loop.probe import gather_rows, gather_texts, probe_compute
from larsbench.loop.progress import RankProgress
from larsbench.loop.provenance import cpu_model
from larsbench.workloads.data import build_rank_data
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import build_optimizer, get_optimizer
from larsbench.workloads.schedules import WarmupPolySchedule


@dataclass
class RunContext:
    """What outlives one process: the run's files (checkpoints, telemetry), the event log, the
    preemption signal. With no ``files`` nothing is checkpointed or written beside the record."""

    files: RunFiles | None = None
    checkpoint_every_steps: int | None = None
    events: EventLog = field(default_factory=lambda: EventLog(None))
    preemption: PreemptionNotice | None = None
    queue_sec: float | None = None  # how long this start waited in the scheduler's queue
    platform_nodes: int = 1  # nodes the run spans (for the event log's system description)
    process_start: float = field(default_factory=time.perf_counter)
    phases: Phases = field(default_factory=Phases)  # where this start's time went around the clock


class _SpecGuard:
    """The run's settings as a checkpointed part: a resume with other settings is refused."""

    def __init__(self, spec: RunSpec):
        self.spec = spec

    def state_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        differs = resume_differences(saved, self.spec.to_dict())
        if differs:
            raise ConfigError(
                "--run-id",
                f"its checkpoint was written with other settings ({', '.join(differs)} differ); resume with the "
                "same settings, or start a new run id",
            )


class Trainer:
    def __init__(
        self, spec: RunSpec, backend: Backend, device: torch.device, rank: int, world_size: int, ctx: RunContext | None = None
    ) -> None:
        self.spec, self.backend, self.device, self.rank, self.world_size = spec, backend, device, rank, world_size
        self.ctx = ctx = ctx or RunContext()
        self.events = ctx.events
        self.events.start("init_start")
        self.metrics = RunMetrics()
        torch.manual_seed(spec.seed)  # same initial weights everywhere; wrap() also syncs them
        with ctx.phases.timed("data"):
            self.data = build_rank_data(spec, rank, world_size, device)
        self.steps_per_epoch = self.metrics.steps_per_epoch = self.data.steps_per_epoch(spec.accumulation_steps)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                "micro_batch_size",
                f"each rank's share of the train set ({self.data.train_samples} images / {world_size} ranks)"
                f" is smaller than micro_batch_size × accumulation_steps; lower the batch",
            )
        self.total_steps = spec.steps or max(1, round(spec.epochs * self.steps_per_epoch))
        self.warmup_steps = round(spec.warmup_epochs * self.steps_per_epoch)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(
                "warmup_epochs", f"warm-up ({self.warmup_steps} steps) must be shorter than the run ({self.total_steps} steps)"
            )

        model_started = time.perf_counter()
        precision = Precision(spec.precision, device.type, channels_last=spec.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = spec.cudnn_benchmark
        module = precision.convert_model(build_model(spec.model, spec.num_classes).to(device))
        self.component = get_optimizer(spec.optimizer)
        self.metrics.layer_telemetry = self.component.telemetry
        optimizer, self.metrics.peak_lr = build_optimizer(spec, module)
        self.schedule = WarmupPolySchedule(self.metrics.peak_lr, self.total_steps, self.warmup_steps, spec.end_lr, spec.poly_power)
        self.step = 0
        self.checkpoints = Checkpointer(ctx.files.checkpoints if ctx.files else None, rank, world_size, backend.barrier)
        self.checkpoints.register(spec=_SpecGuard(spec), model=module)
        resumed = self.checkpoints.find()
        if resumed:
            self.checkpoints.restore(["spec", "model"])
        model = torch.compile(module) if spec.compile else module  # after loading: the plain module's keys
        self.model, self.optimizer = backend.wrap(
            model,
            optimizer,
            micro_batch_size=spec.micro_batch_size,
            accumulation_steps=spec.accumulation_steps,
            precision=precision,
            sharding=spec.optimizer_sharding,
        )
        # Registered after wrap: Horovod rebuilds the optimizer, which would drop a state loaded
        # before. Sharded state: every rank saves and restores its own shard.
        optimizer_state, per_rank = backend.optimizer_state(self.optimizer)
        (self.checkpoints.register_rank if per_rank else self.checkpoints.register)(optimizer=optimizer_state)
        self.checkpoints.register(precision=backend.precision, metrics=self.metrics, progress=self)
        if resumed:
            self.checkpoints.restore(["optimizer", "precision", "metrics", "progress"])
            self.metrics.status = "ok"  # it was saved as "preempted"
            self.metrics.restarts += 1
            self.checkpoints.restore_rng()
        ctx.phases.add("model", time.perf_counter() - model_started)
        if ctx.queue_sec is not None:
            self.metrics.queue_sec = (self.metrics.queue_sec or 0.0) + ctx.queue_sec
        self.resumed = resumed
        self.criterion = nn.CrossEntropyLoss()
        self.metrics.rank_hosts = gather_texts(backend, socket.gethostname(), rank, world_size, device)
        self.metrics.rank_devices = gather_texts(backend, _device_name(device), rank, world_size, device)
        self.metrics.allreduce_bytes_per_step = sum(
            p.numel() * p.element_size() for p in module.parameters() if p.requires_grad
        )
        log_run_setup(
            self.events, spec, platform=_platform(device, world_size, ctx.platform_nodes), nodes=ctx.platform_nodes,
            ranks_per_node=max(1, world_size // ctx.platform_nodes), peak_lr=self.metrics.peak_lr,
            total_steps=self.total_steps, warmup_steps=self.warmup_steps, train_samples=self.data.train_samples,
            eval_samples=self.data.val_samples,
        )  # fmt: skip

        self.losses = LossLog(backend)
        self.clock = StepClock(device)
        self.window = ThroughputWindow(backend, device)
        self.window_first_step = min(self.step + spec.timing_warmup_steps, self.total_steps - 1)
        self.progress = RankProgress(
            spec.label, self.total_steps, enabled=rank == 0, status_file=ctx.files.progress if ctx.files else None
        )
        every = telemetry.interval(spec.telemetry_every_steps, self.total_steps)
        side_file = ctx.files.telemetry if ctx.files and rank == 0 and self.component.telemetry else None
        self.telemetry = telemetry.LayerTelemetry(self.optimizer, backend.unwrap(self.model), side_file, every)
        self.epoch, skip = divmod(self.step, self.steps_per_epoch)
        self._skip = skip
        self.batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())
        self.run_start = time.perf_counter()

    # -- the "progress" part of a checkpoint: where the run is -----------------------------
    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = state["step"]

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> RunMetrics:
        # Before the clocks start: the probe is setup, not training (time to accuracy and
        # MLPerf's run_start..run_stop exclude it).
        with self.ctx.phases.timed("probe"):
            self.probe()
        self.backend.barrier()
        self.events.end("init_stop")
        if self.resumed:
            self.metrics.restart_overhead_sec += time.perf_counter() - self.ctx.process_start
            self.progress.note(f"resumed at step {self.step} (restart {self.metrics.restarts})")
        else:
            self.events.start("run_start")
        self.ctx.phases.start_clock()
        # Elapsed time continues across restarts: time-to-accuracy counts on-clock time only.
        self.run_start = time.perf_counter() - self.metrics.on_clock_sec
        first_step = True
        while self.step < self.total_steps and self.metrics.status == "ok":
            self.start_epoch()
            for _ in range(min(self.steps_per_epoch - self._skip, self.total_steps - self.step)):
                if first_step:  # its own phase: data-loader workers start, caches fill
                    with self.ctx.phases.timed("first_step"):
                        self.advance()
                    first_step = False
                else:
                    self.advance()
                if self.metrics.status != "ok":
                    break
            self._skip = 0
            if self.metrics.status != "ok":
                break
            self.end_epoch()
        return self.finish()

    def start_epoch(self) -> None:
        self.data.train.set_epoch(self.epoch, skip=self._skip * self.spec.accumulation_steps)
        self.batches = iter(self.data.train)
        self.events.start("epoch_start", epoch_num=self.epoch + 1)

    def advance(self) -> None:
        """One optimizer step and its bookkeeping: schedule, timing, loss log, telemetry,
        divergence and preemption checks, periodic checkpoint."""
        spec = self.spec
        if self.step >= self.window_first_step and not self.window.running:
            self.window.start()  # also restarts it after a periodic checkpoint
        self.schedule.apply(self.optimizer, self.step)
        if self.telemetry.due(self.step + 1):
            self.telemetry.arm()
        timed = self.window.running
        if timed:
            self.clock.start()
        self.backend.comm_timer.start_step()
        loss = train_step(
            self.model, self.optimizer, self.batches, self.backend, self.criterion, spec.accumulation_steps,
            self.device, self.clock if timed else None,
        )  # fmt: skip
        comm = self.backend.comm_timer.take()
        try:
            self.step += 1
            if not self._between_steps(loss):
                return
        finally:
            # The step's clock runs through the loop's own work after it (loss log, preemption
            # check, telemetry): the loss log and the preemption check are collectives, where a
            # rank stopped just then holds its peers; timed outside every step, that wait was on
            # the window's clock and in no step's time, where no stability check could see it.
            if timed:
                self.clock.stop(comm)
        every = self.ctx.checkpoint_every_steps
        if every and self.step % every == 0 and self.step < self.total_steps:
            self.save()

    def _between_steps(self, loss) -> bool:
        """The loop's work after a step; False when the run must stop (diverged, preempted)."""
        spec, metrics = self.spec, self.metrics
        self.losses.add(self.step, loss)
        if self.telemetry.due(self.step):
            self.telemetry.collect(self.step)
        if self.step % spec.log_every_steps == 0 or self.step == self.total_steps:
            if self.losses.flush():
                metrics.status, metrics.diverged_at_step = "diverged", self.losses.diverged_at
                return False
            self.progress.update(self.step, self.losses.last)
            if self._preemption_agreed():
                metrics.status = "preempted"
                return False
        return True

    def probe(self) -> None:
        """Time this rank's compute alone and its device's matrix-product peak, once per start
        of the process, before the run's clocks start (every rank at the same point)."""
        spec, device = self.spec, self.device
        key = peak_key(spec.precision, device)
        self.metrics.peak_key = key
        ranks_on_node = max(1, self.world_size // self.ctx.platform_nodes)
        peak, _ = measured_peak_tflops(device, key, _device_name(device) if device.type == "cuda" else cpu_model(), ranks_on_node)
        peaks = gather_rows(self.backend, [peak], self.rank, self.world_size, device)
        self.metrics.rank_peak_tflops = [row[0] for row in peaks]
        self.metrics.flops_per_image = training_flops_per_image(spec.model, spec.num_classes, spec.image_size)
        if spec.compute_probe_steps == 0:
            return
        shape = self.data.input_shape

        result = probe_compute(
            self.backend.unwrap(self.model), lambda model: build_optimizer(spec, model)[0],
            Precision(spec.precision, device.type, channels_last=spec.channels_last),
            spec.micro_batch_size, spec.accumulation_steps, shape, spec.num_classes, device,
            spec.compute_probe_steps, compile_model=spec.compile,
        )  # fmt: skip
        self.metrics.rank_compute_sec = gather_rows(self.backend, result.compute_sec, self.rank, self.world_size, device)

    def end_epoch(self) -> None:
        spec, metrics = self.spec, self.metrics
        self.epoch += 1
        self.events.end("epoch_stop", epoch_num=self.epoch)
        last_step = self.step == self.total_steps
        if self.data.val is None or not (self.epoch % spec.eval_every_epochs == 0 or last_step):
            return
        self.window.pause()
        self.events.start("eval_start", epoch_num=self.epoch)
        model = self.backend.unwrap(self.model)
        with self.ctx.phases.timed("evaluation"):
            sync_buffers(model, self.backend)
            top1, top5 = evaluate(model, self.data.val, self.backend, self.device, spec.num_classes)
        self.window.resume()
        elapsed = time.perf_counter() - self.run_start
        epochs_done = self.step / self.steps_per_epoch
        metrics.evals.append({"step": self.step, "epoch": epochs_done, "top1": top1, "top5": top5, "elapsed_sec": elapsed})
        self.events.event("eval_accuracy", top1, epoch_num=epochs_done)
        self.events.end("eval_stop", epoch_num=self.epoch)
        self.progress.note(f"step {self.step} (epoch {epochs_done:.2f}): top-1 {top1:.3f}, top-5 {top5:.3f}")
        if spec.target_top1 is not None and metrics.time_to_accuracy_sec is None and top1 >= spec.target_top1:
            metrics.time_to_accuracy_sec, metrics.epochs_to_accuracy = elapsed, epochs_done

    def finish(self) -> RunMetrics:
        self.ctx.phases.end_loop()
        metrics = self.metrics
        if metrics.status == "preempted":
            self.save()
        else:
            self.fold()
        self.progress.close()
        metrics.steps = self.step
        metrics.epochs = self.step / self.steps_per_epoch
        metrics.param_checksum = param_checksum(self.backend.unwrap(self.model))
        if self.rank == 0 and self.ctx.files is not None and metrics.status != "preempted":
            self._write_steps(self.ctx.files.steps)
        if metrics.status != "preempted":
            reached = metrics.time_to_accuracy_sec is not None
            self.events.end("run_stop", status="success" if reached else "aborted", larsbench_status=metrics.status)
        return metrics

    def fold(self) -> None:
        """Fold this process's in-flight measurements into the run's (which may span restarts)."""
        metrics = self.metrics
        self.window.stop()
        self.losses.flush()
        metrics.loss_curve += self.losses.curve
        self.losses.curve = []
        if self.window.elapsed:
            metrics.window_sec += self.window.elapsed
            metrics.window_steps += self.clock.count
        steps = self.clock.finish()
        if self.clock.messages is not None and not metrics.comm_messages_bytes:
            metrics.comm_messages_bytes = self.clock.messages
        metrics.on_clock_sec = time.perf_counter() - self.run_start
        # Collective (every rank folds at the same points): the whole run's per-rank series.
        series = {
            "rank_step_times": [s.step for s in steps],
            "rank_data_waits": [s.data_wait for s in steps],
            "rank_ready_times": [math.nan if s.ready is None else s.ready for s in steps],
            "rank_exposed_comm": [s.exposed_comm for s in steps],
            "rank_comm_times": [s.comm for s in steps],
        }
        for name, row in series.items():
            gathered = gather_rows(self.backend, row, self.rank, self.world_size, self.device)
            kept = getattr(metrics, name)
            if not kept:
                kept.extend([] for _ in gathered)
            for rank, values in enumerate(gathered):
                kept[rank] += [None if math.isnan(v) else v for v in values]
        self.clock.reset()
        self._fold_memory()

    def _fold_memory(self) -> None:
        """Every rank's optimizer state and memory peaks (collective), the largest over restarts."""
        m = self.metrics
        cuda = memory.peak_cuda_bytes(self.device)
        row = [memory.optimizer_state_bytes(self.optimizer), memory.peak_host_rss_bytes(), math.nan if cuda is None else cuda]
        gathered = gather_rows(self.backend, row, self.rank, self.world_size, self.device)
        for name, column in (("rank_optimizer_state_bytes", 0), ("rank_peak_host_rss_bytes", 1), ("rank_peak_cuda_bytes", 2)):
            now = [None if math.isnan(values[column]) else int(values[column]) for values in gathered]
            before = getattr(m, name)
            setattr(m, name, [_larger(a, b) for a, b in itertools.zip_longest(before, now)])

    def _write_steps(self, path) -> None:
        """Every rank's measured steps (time, data wait, when its gradients were ready, exposed
        and total communication) and compute probe: one line per rank, so the run's statistics
        can be recomputed later."""
        m = self.metrics
        lines = []
        for rank in range(len(m.rank_step_times)):
            lines.append(json.dumps({
                "rank": rank,
                "host": m.rank_hosts[rank] if rank < len(m.rank_hosts) else None,
                "device": m.rank_devices[rank] if rank < len(m.rank_devices) else None,
                "step_sec": m.rank_step_times[rank],
                "data_wait_sec": m.rank_data_waits[rank],
                "ready_sec": m.rank_ready_times[rank],
                "exposed_comm_sec": m.rank_exposed_comm[rank],
                "comm_sec": m.rank_comm_times[rank],
                "compute_probe_sec": m.rank_compute_sec[rank] if rank < len(m.rank_compute_sec) else [],
            }))  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, "".join(line + "\n" for line in lines))

    def save(self) -> None:
        if self.checkpoints.root is None:
            return
        self.fold()
        self.checkpoints.save(self.step)
        # The window restarts after a checkpoint: saving is not training time.
        self.window.reset()

    def _preemption_agreed(self) -> bool:
        """True on every rank once any rank has been told the job will stop."""
        if self.ctx.preemption is None:
            return False
        flag = torch.tensor([1.0 if self.ctx.preemption.requested else 0.0], device=self.device)
        return bool(self.backend.all_reduce(flag, "sum").item() > 0)


def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _platform(device: torch.device, world_size: int, nodes: int) -> str:
    """The system, as MLPerf's submission_platform: ranks and what each one runs on."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU ranks ({cpu_model()})"
    return f"{nodes} node(s), {world_size} × {what}"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


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
    precision = backend.precision  # autocast dtype, loss scaler, memory layout
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
