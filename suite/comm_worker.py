"""One rank of ``larsbench comm``: all-reduce, all-gather and broadcast over a sweep of message
sizes through the backend's own collective API (torch.distributed, deepspeed.comm, Horovod).

Started like a training rank (``python -m larsbench.suite.comm_worker ...`` under the
backend's launcher or ``srun``). Rank 0 appends one record per (operation, size) to the
comm results file. Times are per collective, each timed between barriers after warm-up
iterations, as nccl-tests does; bandwidths follow nccl-tests' definitions
(doc/PERFORMANCE.md): algbw = S / t, with S the all-reduce / broadcast message size or the
all-gather output size, and busbw = algbw × 2(n−1)/n (all-reduce), × (n−1)/n (all-gather),
× 1 (broadcast), the figure comparable to a link's bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

from larsbench.backends.registry import get_backend
from larsbench.core import environment
from larsbench.core.device import pick_device, synchronize
from larsbench.core.errors import ConfigError, error_line
from larsbench.core.files import append_lines
from larsbench.loop import provenance
from larsbench.loop.probe import gather_texts

OPERATIONS = ("all_reduce", "all_gather", "broadcast")
COMM_SCHEMA_VERSION = 1


def bus_factor(operation: str, world_size: int) -> float:
    n = world_size
    return {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n, "broadcast": 1.0}[operation]


def run_operation(backend, operation: str, buffer: torch.Tensor) -> None:
    if operation == "all_reduce":
        backend.all_reduce(buffer, "sum")
    elif operation == "all_gather":
        backend.all_gather(buffer)
    else:
        backend.broadcast_(buffer, src=0)


def time_operation(backend, operation: str, buffer: torch.Tensor, device: torch.device, warmup: int, iterations: int, budget_sec: float) -> list[float]:
    """Seconds per collective: ``warmup`` untimed, then at least 3 and at most ``iterations``
    timed ones (fewer when they would exceed ``budget_sec``), each between barriers."""
    for _ in range(warmup):
        run_operation(backend, operation, buffer)
    first = _timed(backend, operation, buffer, device)
    # Rank 0's first time sets the count for every rank: ranks that each judged the budget by
    # their own clock could disagree, and one would wait in a barrier the other never joins.
    agreed = backend.broadcast_(torch.tensor([first], dtype=torch.float64, device=device), src=0).item()
    count = int(min(iterations, max(3, budget_sec // max(agreed, 1e-9))))
    # Every rank saw its own clock; the collective is as slow as its slowest rank.
    return [first] + [_timed(backend, operation, buffer, device) for _ in range(count - 1)]


def _timed(backend, operation: str, buffer: torch.Tensor, device: torch.device) -> float:
    synchronize(device)
    backend.barrier()
    start = time.perf_counter()
    run_operation(backend, operation, buffer)
    synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsbench.suite.comm_worker")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--sizes", required=True, help="message sizes in bytes, comma-separated")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-sec", type=float, default=1.0, help="timed seconds per size and operation, at most")
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
            for size in (int(s) for s in args.sizes.split(",")):
                elements = max(1, size // 4)
                if operation == "all_gather":
                    elements = max(1, elements // env.world_size)  # S is the gathered output's size
                buffer = torch.ones(elements, dtype=torch.float32, device=device)
                times = time_operation(backend, operation, buffer, device, args.warmup, args.iterations, args.budget_sec)
                # The slowest rank's time per iteration is the collective's time.
                slowest = torch.tensor(times, dtype=torch.float64, device=device)
                per_rank = torch.zeros(env.world_size, len(times), dtype=torch.float64, device=device)
                per_rank[env.rank] = slowest
                backend.all_reduce(per_rank, "sum")
                worst = per_rank.max(dim=0).values.tolist()
                message = elements * 4 * (env.world_size if operation == "all_gather" else 1)
                seconds = statistics.median(worst)
                algbw = message / seconds / 1e9
                if env.is_main:
                    lines.append(json.dumps({
                        "kind": "comm", "schema_version": COMM_SCHEMA_VERSION, "run_id": args.run_id,
                        "timestamp_end": time.time(), "backend": args.backend, "operation": operation,
                        "world_size": env.world_size, "num_nodes": env.num_nodes, "device": str(device),
                        "bytes": message, "dtype": "float32", "iterations": len(worst),
                        "time_sec": seconds, "time_min_sec": min(worst), "time_max_sec": max(worst),
                        "algbw_gbps": algbw, "busbw_gbps": algbw * bus_factor(operation, env.world_size),
                        "transport": transport, "hosts": hosts, "provenance": info,
                    }))  # fmt: skip
                del buffer
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
