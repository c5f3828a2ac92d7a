"""What a step costs without its communication, measured the same way for every backend.

Before the measured window, each rank times ``K`` steps of its own compute on a private copy of
the model: forward, backward and optimizer step over the run's micro-batches, on fixed random
inputs already on the device. The copy carries none of the backend's hooks, so nothing is
reduced: DDP's reducer, Horovod's gradient hooks and DeepSpeed's engine all stay out of it.
It runs before the run's clocks start. The run's mean step then splits into data wait and
exposed communication (both measured in the loop), compute (this) and overhead, the rest
(``loop.metrics.StepSplit``).

The probe draws from its own generator inside ``fork_rng``: the run's random streams (dropout,
augmentation) are exactly what they would have been without it.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from larsbench.core.device import synchronize
from larsbench.core.precision import Precision


@dataclass(frozen=True)
class ProbeResult:
    compute_sec: list[float]  # seconds per optimizer step, one per timed probe step

    @property
    def median(self) -> float:
        return statistics.median(self.compute_sec)


def probe_compute(
    model: nn.Module,
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    precision: Precision,
    micro_batch: int,
    accumulation: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    steps: int,
    compile_model: bool = False,
    warmup: int = 2,
) -> ProbeResult:
    """Time ``steps`` compute-only optimizer steps on a copy of ``model`` (the plain module)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        twin = copy.deepcopy(model)
        twin.train()
        optimizer = build_optimizer(twin)
        forward = torch.compile(twin) if compile_model else twin
        generator = torch.Generator(device=device).manual_seed(0x5EED)
        images = precision.convert_input(torch.randn((micro_batch, *input_shape), generator=generator, device=device))
        labels = torch.randint(0, num_classes, (micro_batch,), generator=generator, device=device)
        criterion = nn.CrossEntropyLoss()

        def step() -> None:
            for _ in range(accumulation):
                with precision.autocast():
                    loss = criterion(forward(images).float(), labels)
                precision.scale(loss / accumulation).backward()
            precision.optimizer_step(optimizer)
            optimizer.zero_grad(set_to_none=True)

        timings = []
        for index in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if index >= warmup:
                timings.append(time.perf_counter() - start)
        del forward, twin, optimizer
    return ProbeResult(timings)


def gather_rows(backend, row: list[float], rank: int, world_size: int, device: torch.device) -> list[list[float]]:
    """Every rank's ``row`` (of any length), on every rank: a gather built from the one
    collective every backend has, a sum in which each rank fills only its own row."""
    lengths = torch.zeros(world_size, dtype=torch.float64, device=device)
    lengths[rank] = len(row)
    backend.all_reduce(lengths, "sum")
    counts = [int(n) for n in lengths.tolist()]
    table = torch.zeros(world_size, max(counts + [1]), dtype=torch.float64, device=device)
    if row:
        table[rank, : len(row)] = torch.tensor(row, dtype=torch.float64, device=device)
    backend.all_reduce(table, "sum")
    values = table.tolist()
    return [values[r][: counts[r]] for r in range(world_size)]


def gather_texts(backend, text: str, rank: int, world_size: int, device: torch.device) -> list[str]:
    """Every rank's ``text`` (host names, device names), through ``gather_rows``."""
    rows = gather_rows(backend, list(text.encode()), rank, world_size, device)
    return [bytes(int(b) for b in row).decode(errors="replace") for row in rows]
