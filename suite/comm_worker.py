"""One rank of ``larsbench comm``: all-reduce, all-gather and broadcast over a sweep of message
sizes through the backend's own collective API (torch.distributed, deepspeed.comm, Horovod).

Started like a training rank (``python -m larsbench.suite.comm_worker ...`` under the
backend's launcher or ``srun``). Rank 0 appends one record per (operation, size) to the
comm results file.

Timed as nccl-tests times (its ``BenchTime``): buffers (the all-gather's output included) are
allocated before anything is timed; after warm-up collectives, each timed loop runs ``count``
collectives back to back between barriers, and the loop's time divided by ``count`` is the time
of one collective on that rank; ranks' times are averaged, as nccl-tests does. Several loops
give the median and the spread. ``count`` follows from rank 0's first collective and the time
budget, so every rank runs the same number. Each operation's smallest possible message (one
float32 element per rank) is timed the same way: its ``latency_sec``, the constant cost of one
collective. Bandwidths follow nccl-tests' doc/PERFORMANCE.md: algbw = S / t, with S the
all-reduce / broadcast message size or the all-gather output size, and busbw = algbw ×
2(n−1)/n (all-reduce), × (n−1)/n (all-gather), × 1 (broadcast), the figure comparable to a
link's bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from larsbench.backends.registry import get_backend
from larsbench.core import environment
from larsbench.core.device import pick_device, synchronize
from larsbench.core.errors import ConfigError, error_line
from larsbench.core.files import append_lines
from larsbench.loop import provenance
from larsbench.loop.probe import gather_texts

OPERATIONS = ("all_reduce", "all_gather", "broadcast")
# 2: loops of back-to-back collectives (iterations per loop, loops), the all-gather's output
#    allocated beforehand, each operation's small-message latency, ranks per node.
COMM_SCHEMA_VERSION = 2
ELEMENT_BYTES = 4  # float32


def bus_factor(operation: str, world_size: int) -> float:
    n = world_size
    return {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n, "broadcast": 1.0}[operation]


@dataclass
class Buffers:
    """One message's tensors, allocated once before any timing: ``data`` is the all-reduce and
    broadcast buffer and the all-gather's input, ``out`` the all-gather's output."""

    operation: str
    data: torch.Tensor
    out: torch.Tensor | None = None

    @classmethod
    def allocate(cls, operation: str, size: int, world_size: int, device: torch.device) -> Buffers:
        elements = max(1, size // ELEMENT_BYTES)
        if operation != "all_gather":
            return cls(operation, torch.ones(elements, dtype=torch.float32, device=device))
        per_rank = max(1, elements // world_size)  # S is the gathered output's size
        data = torch.ones(per_rank, dtype=torch.float32, device=device)
        return cls(operation, data, torch.empty(per_rank * world_size, dtype=torch.float32, device=device))

    @property
    def message_bytes(self) -> int:
        return (self.out if self.out is not None else self.data).numel() * ELEMENT_BYTES


def run_operation(backend, buffers: Buffers) -> torch.Tensor:
    if buffers.operation == "all_reduce":
        return backend.all_reduce(buffers.data, "sum")
    if buffers.operation == "all_gather":
        return backend.all_gather(buffers.data, buffers.out)
    return backend.broadcast_(buffers.data, src=0)


@dataclass(frozen=True)
class Timing:
    count: int  # collectives per timed loop
    seconds: list[float]  # this rank's time per collective, one per loop


def time_operation(backend, buffers: Buffers, device: torch.device, warmup: int, iterations: int, loops: int, budget_sec: float) -> Timing:
    """``warmup`` untimed collectives, then ``loops`` timed loops of ``count`` back-to-back
    collectives, each loop between barriers. ``count`` is at most ``iterations``, fewer when
    the loops would exceed ``budget_sec`` (at least 1)."""
    for _ in range(warmup):
        run_operation(backend, buffers)
    first = _loop(backend, buffers, device, 1)
    # Rank 0's first time sets the count for every rank: ranks that each judged the budget by
    # their own clock could disagree, and one would wait in a barrier the other never joins.
    agreed = backend.broadcast_(torch.tensor([first], dtype=torch.float64, device=device), src=0).item()
    count = int(min(iterations, max(1, budget_sec / loops // max(agreed, 1e-9))))
    return Timing(count, [_loop(backend, buffers, device, count) for _ in range(loops)])


def _loop(backend, buffers: Buffers, device: torch.device, count: int) -> float:
    synchronize(device)
    backend.barrier()
    start = time.perf_counter()
    for _ in range(count):
        run_operation(backend, buffers)
    synchronize(device)
    return (time.perf_counter() - start) / count


def rank_mean(backend, values: list[float], rank: int, world_size: int, device: torch.device) -> list[float]:
    """Each value averaged over the ranks (nccl-tests averages its ranks' times)."""
    table = torch.zeros(world_size, len(values), dtype=torch.float64, device=device)
    table[rank] = torch.tensor(values, dtype=torch.float64, device=device)
    backend.all_reduce(table, "sum")
    return (table.sum(dim=0) / world_size).tolist()


def ranks_per_node(hosts: list[str]) -> int:
    return max(Counter(hosts).values()) if hosts else 1


def comm_record(
    *, run_id: str, backend: str, operation: str, world_size: int, num_nodes: int, device: str, message_bytes: int,
    count: int, seconds: list[float], latency_sec: float, output_preallocated: bool, warmup: int,
    transport: dict[str, Any], hosts: list[str], info: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """One line of ``comm.jsonl``: ``seconds`` per collective (rank-averaged) of each timed loop."""
    median = statistics.median(seconds)
    algbw = message_bytes / median / 1e9
    return {
        "kind": "comm", "schema_version": COMM_SCHEMA_VERSION, "run_id": run_id, "timestamp_end": time.time(),
        "backend": backend, "operation": operation, "world_size": world_size, "num_nodes": num_nodes,
        "ranks_per_node": ranks_per_node(hosts), "device": device, "bytes": message_bytes, "dtype": "float32",
        "timing": "loop", "warmup": warmup, "iterations": count, "loops": len(seconds),
        "time_sec": median, "time_min_sec": min(seconds), "time_max_sec": max(seconds), "latency_sec": latency_sec,
        "algbw_gbps": algbw, "busbw_gbps": algbw * bus_factor(operation, world_size),
        "output_preallocated": output_preallocated, "transport": transport, "hosts": hosts, "provenance": info,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsbench.suite.comm_worker")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--sizes", required=True, help="message sizes in bytes, comma-separated")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--iterations", type=int, default=20, help="collectives per timed loop, at most (nccl-tests' -n)")
    parser.add_argument("--loops", type=int, default=3, help="timed loops per size (median and spread over them)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-sec", type=float, default=1.0, help="timed seconds per size and operation, at most (at least one collective per loop)")
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--timeout-sec", type=float, default=600.0)
    parser.add_argument("--network-interface", help="interface for the collectives (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME, HOROVOD_GLOO_IFACE)")
    args = parser.parse_args(argv)

    env = environment.detect()
    backend = None
    try:
        environment.check_rendezvous(env)
        if args.network_interface:
            environment.use_interface(args.network_interface)
        backend = get_backend(args.backend)(None)
        device = pick_device(args.device, env.local_rank, "--device")
        backend.setup(env, device, args.timeout_sec)
        hosts = gather_texts(backend, socket.gethostname(), env.rank, env.world_size, device)
        transport = backend.transport()
        info = provenance.collect({"backend": args.backend, "device": args.device}, env, backend.versions())
        lines = []
        for operation in args.operations.split(","):
            smallest = Buffers.allocate(operation, ELEMENT_BYTES, env.world_size, device)
            latency = statistics.median(rank_mean(backend, time_operation(
                backend, smallest, device, args.warmup, args.iterations, args.loops, args.budget_sec
            ).seconds, env.rank, env.world_size, device))  # fmt: skip
            for size in (int(s) for s in args.sizes.split(",")):
                buffers = Buffers.allocate(operation, size, env.world_size, device)
                # A library that allocates its own output (Horovod's allgather) leaves ``out`` unused.
                preallocated = buffers.out is None or run_operation(backend, buffers) is buffers.out
                timing = time_operation(backend, buffers, device, args.warmup, args.iterations, args.loops, args.budget_sec)
                seconds = rank_mean(backend, timing.seconds, env.rank, env.world_size, device)
                if env.is_main:
                    lines.append(json.dumps(comm_record(
                        run_id=args.run_id, backend=args.backend, operation=operation, world_size=env.world_size,
                        num_nodes=env.num_nodes, device=str(device), message_bytes=buffers.message_bytes,
                        count=timing.count, seconds=seconds, latency_sec=latency, output_preallocated=preallocated,
                        warmup=args.warmup, transport=transport, hosts=hosts, info=info,
                    )))  # fmt: skip
                del buffers
        if env.is_main:
            append_lines(args.results, lines)
        return 0
    except ConfigError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    finally:
        if backend is not None:
            backend.teardown()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
