"""``larsbench comm``: each backend's collectives over a sweep of message sizes, on this
machine (ranks started by larsbench, suite.local_ranks), into ``OUTPUT/comm.jsonl``.

Read the figures next to a training run's ``allreduce_bytes_per_step``: the all-reduce bus
bandwidth at the gradient's size says what one step's reduction should cost.
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from larsbench.backends.registry import backend_names, get_backend
from larsbench.core.device import means_cpu, pick_device
from larsbench.core.errors import ConfigError
from larsbench.core.results import check_writable
from larsbench.core.files import read_lines
from larsbench.suite.local_ranks import LocalRanks
from larsbench.suite.comm_worker import OPERATIONS
from larsbench.suite.launch import rank_environment

COMM_FILE = "comm.jsonl"
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20, "G": 2**30, "GB": 2**30, "GIB": 2**30}


def parse_size(text: str, option: str) -> int:
    """``4K``, ``256M``, ``1G`` or a byte count."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ConfigError(option, f"{text!r} is not a size; write bytes or a number with K, M or G (e.g. 4K, 256M)")
    value = int(match.group(1)) * _UNITS[unit]
    if value < 4:
        raise ConfigError(option, f"{text!r} is smaller than one float32 element (4 bytes)")
    return value


def size_sweep(smallest: int, largest: int) -> list[int]:
    """Powers of two from ``smallest`` to ``largest`` (both included)."""
    sizes = []
    size = smallest
    while size < largest:
        sizes.append(size)
        size *= 2
    return sizes + [largest]


def run_comm(
    backends: list[str], world_size: int, device: str, sizes: list[int], operations: list[str],
    iterations: int, output: Path, console: Console,
) -> list[dict]:  # fmt: skip
    """Run the sweep for every backend in turn; the records written."""
    for name in backends:
        if name not in backend_names():
            raise ConfigError("--backend", f"unknown backend {name!r}; choose from {', '.join(backend_names())}")
        get_backend(name).check_available()
    for op in operations:
        if op not in OPERATIONS:
            raise ConfigError("--operations", f"unknown operation {op!r}; choose from {', '.join(OPERATIONS)}")
    if device == "cuda":  # here, not in the ranks: a machine without a GPU is bad input, not a failed measurement
        pick_device("cuda", 0, key="--device")
    check_writable(output)
    try:
        (output / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write to {output} ({exc.strerror or exc}); choose a writable folder") from None
    results = output / COMM_FILE
    written: list[dict] = []
    for name in backends:
        run_id = f"comm-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        worker = [
            sys.executable, "-m", "larsbench.suite.comm_worker", "--backend", name, "--device", device,
            "--sizes", ",".join(map(str, sizes)), "--operations", ",".join(operations),
            "--iterations", str(iterations), "--results", str(results), "--run-id", run_id,
        ]  # fmt: skip
        log = output / "logs" / f"{run_id}.log"
        console.print(f"{name}: {len(operations)} operation(s) × {len(sizes)} size(s) on {world_size} rank(s) (log: {escape(str(log))})")
        with log.open("ab") as handle:
            returncode = LocalRanks(world_size, worker, rank_environment(world_size), handle, served=means_cpu(device)).wait()
        mine = [r for r in read_lines(results) if r.get("run_id") == run_id] if results.exists() else []
        if returncode != 0 or not mine:
            console.print(f"[red]{name}: failed (status {returncode}); see {escape(str(log))}[/red]")
            continue
        written += mine
    return written


def comm_table(records: list[dict], title: str) -> Table:
    """Bus bandwidth (GB/s) by message size, one column per backend and operation, under a first
    row with each one's small-message latency (µs: one collective of one float32 per rank)."""
    columns = sorted({(r["backend"], r["operation"]) for r in records}, key=lambda c: (c[0], OPERATIONS.index(c[1])))
    table = Table(title=title, title_justify="left")
    table.add_column("size (busbw GB/s)", justify="right")
    for backend, operation in columns:
        transport = next((r.get("transport") or {}).get("collectives") for r in records if r["backend"] == backend)
        table.add_column(f"{backend} ({transport})\n{operation}", justify="right")
    latency = {(r["backend"], r["operation"]): r["latency_sec"] for r in records if r.get("latency_sec") is not None}
    table.add_row("latency µs", *(f"{latency[c] * 1e6:.0f}" if c in latency else "—" for c in columns), end_section=True)
    by_size: dict[int, dict[tuple[str, str], float]] = {}
    for r in records:
        by_size.setdefault(r["bytes"], {})[(r["backend"], r["operation"])] = r["busbw_gbps"]
    for size in sorted(by_size):
        table.add_row(human_size(size), *(f"{by_size[size][c]:.3f}" if c in by_size[size] else "—" for c in columns))
    return table


def human_size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
