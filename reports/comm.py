"""The communication benchmark's records (``larsbench comm``, ``comm.jsonl``) in a report: bus
bandwidth against message size per backend and operation, with the training runs' gradient
size marked, so a reader sees what one step's all-reduce should cost."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from larsbench.core.errors import ConfigError
from larsbench.core.files import read_lines
from larsbench.reports.plots import COLORS, figure, legend_below, save
from larsbench.reports.render import Block, Bullets, Heading, Image, Table, Text

COMM_FILE = "comm.jsonl"
OPERATIONS = ("all_reduce", "all_gather", "broadcast")


def comm_files(paths: Iterable[str | Path]) -> list[Path]:
    """The comm results among report inputs: ``comm.jsonl`` in a folder, or such a file."""
    found = []
    for path in map(Path, paths):
        candidate = path / COMM_FILE if path.is_dir() else path
        if candidate.name == COMM_FILE and candidate.is_file():
            found.append(candidate)
    return found


def load_comm(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    records = []
    for path in comm_files(paths):
        try:
            records += [r for r in read_lines(path) if r.get("kind") == "comm"]
        except OSError as exc:
            raise ConfigError("RESULTS", f"{path}: {exc.strerror or exc}") from None
    return records


def _human(size: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def gradient_sizes(runs: list[dict[str, Any]]) -> dict[str, int]:
    """model → bytes each rank all-reduces per optimizer step (from the training records)."""
    sizes: dict[str, int] = {}
    for r in runs:
        if isinstance(r.get("allreduce_bytes_per_step"), int):
            sizes[str(r.get("model"))] = r["allreduce_bytes_per_step"]
    return sizes


def plot_bus_bandwidth(records: list[dict[str, Any]], gradients: dict[str, int], path: Path) -> Path | None:
    operations = [op for op in OPERATIONS if any(r["operation"] == op for r in records)]
    if not operations:
        return None
    hosts = sorted({f"{r['world_size']} ranks on {r.get('num_nodes', 1)} node(s), {r['device']}" for r in records})
    fig, axes = figure(len(operations), "; ".join(hosts))
    backends = sorted({r["backend"] for r in records})
    for ax, op in zip(axes, operations):
        for i, backend in enumerate(backends):
            mine = sorted((r for r in records if r["operation"] == op and r["backend"] == backend), key=lambda r: r["bytes"])
            if mine:
                transport = (mine[0].get("transport") or {}).get("collectives")
                ax.plot([r["bytes"] for r in mine], [r["busbw_gbps"] for r in mine], marker="o", markersize=3,
                        color=COLORS[i % len(COLORS)], label=f"{backend} ({transport})")  # fmt: skip
        if op == "all_reduce":
            for model, size in sorted(gradients.items()):
                ax.axvline(size, color="0.4", linestyle="--", linewidth=0.9)
                ax.annotate(f"{model} gradient\n{_human(size)}", (size, 1), xycoords=("data", "axes fraction"),
                            xytext=(3, -3), textcoords="offset points", fontsize=7, va="top")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.set_title(op.replace("_", "-"), fontsize=10)
        legend_below(ax)
    return save(fig, path)


def comm_blocks(records: list[dict[str, Any]], runs: list[dict[str, Any]], prefix: Path, images: list[Path]) -> list[Block]:
    if not records:
        return []
    gradients = gradient_sizes(runs)
    blocks: list[Block] = [
        Heading("Collectives (larsbench comm)"),
        Text(
            "Each backend's collectives through its own API, float32, timed as nccl-tests times them: loops of "
            "back-to-back collectives between barriers, buffers allocated beforehand, the median loop's time per "
            "collective averaged over the ranks; latency is one collective of one float32 per rank. "
            "Bandwidths as nccl-tests defines them: algbw = S / t (S the message, or the all-gather's "
            "output), busbw = algbw × 2(n−1)/n for all-reduce, × (n−1)/n for all-gather, × 1 for broadcast: the "
            "figure comparable to a link's bandwidth."
        ),
    ]
    rows = []
    def where(r: dict[str, Any]) -> tuple[str, str, int, int]:
        return r["backend"], r["operation"], r["world_size"], int(r.get("num_nodes") or 1)

    for key in sorted({where(r) for r in records}):
        mine = sorted((r for r in records if where(r) == key), key=lambda r: r["bytes"])
        best = max(mine, key=lambda r: r["busbw_gbps"])
        small = mine[0]
        at_gradient = [
            f"{model}: {_interpolate(mine, size):.3g} GB/s → {size / (_interpolate(mine, size) * 1e9) * 1e3 * _bus(key[1], key[2]) :.1f} ms"
            for model, size in sorted(gradients.items()) if key[1] == "all_reduce" and _interpolate(mine, size)
        ]  # fmt: skip
        latency = (f"{small['latency_sec'] * 1e6:.0f} µs at 4 B per rank" if small.get("latency_sec") is not None
                   else f"{small['time_sec'] * 1e6:.0f} µs at {_human(small['bytes'])}")  # comm schema 1: the smallest size
        rows.append([key[0], str((small.get("transport") or {}).get("collectives")), key[1], f"{key[2]} on {key[3]} node(s)", latency,
                     f"{best['busbw_gbps']:.3g} at {_human(best['bytes'])}", "; ".join(at_gradient) or "—"])  # fmt: skip
    blocks.append(Table(["backend", "transport", "operation", "ranks", "latency", "peak busbw GB/s",
                         "at the gradient size"], rows))  # fmt: skip
    path = plot_bus_bandwidth(records, gradients, Path(f"{prefix}-busbw.png"))
    if path is not None:
        images.append(path)
        blocks.append(Image(path, "bus bandwidth vs message size"))
    if not gradients:
        blocks.append(Bullets(["No training records in this report: no gradient size to mark."]))
    return blocks


def _bus(operation: str, n: int) -> float:
    return {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n}.get(operation, 1.0)


def _interpolate(records: list[dict[str, Any]], size: int) -> float | None:
    """Bus bandwidth at ``size`` bytes, log-linear between the measured sizes around it."""
    points = [(r["bytes"], r["busbw_gbps"]) for r in records]
    if not points or size < points[0][0] or size > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= size <= x1:
            t = (math.log(size) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
            return y0 + t * (y1 - y0)
    return points[-1][1]
