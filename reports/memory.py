"""Memory per rank beside what it costs: for every setting of a workload that recorded it, the
optimizer state and memory peaks of its largest rank, next to throughput and exposed
communication, so sharding's saving and its price read off one table."""

from __future__ import annotations

import json
import math

import pandas as pd

from larsbench.reports.load import SHOWN, telling_apart
from larsbench.reports.render import Block, Heading, Table, Text

HEADERS = ["backend", "recipe", "sharding", "N", "images/s", "exposed comm ms/step", "optimizer state MiB/rank",
           "peak host RSS MiB/rank", "peak CUDA MiB/rank"]  # fmt: skip
MIB = 2**20


def _mib(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value / MIB:.1f}"


def _ms(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 1e3:.1f}"


def memory_blocks(summary: pd.DataFrame) -> list[Block]:
    """The memory table of one workload's settings (``summarize_repeats`` rows); nothing when
    none of its runs recorded memory (records written before schema 5)."""
    if "optimizer_state_bytes" not in summary or summary["optimizer_state_bytes"].isna().all():
        return []
    others = telling_apart({key: json.loads(key) for key in summary["settings_key"]}, (*SHOWN, "optimizer_sharding"))
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            str(r["backend"]), str(r["recipe"]) + others[r["settings_key"]], str(r["optimizer_sharding"]), str(r["world_size"]),
            "—" if math.isnan(r["throughput_mean"]) else f"{r['throughput_mean']:.1f}",
            _ms(r["exposed_comm_sec_per_step"]), _mib(r["optimizer_state_bytes"]),
            _mib(r["peak_host_rss_bytes"]), _mib(r["peak_cuda_bytes"]),
        ])  # fmt: skip
    return [
        Heading("Memory per rank", 3),
        Table(HEADERS, rows, (3, 4, 5, 6, 7, 8)),
        Text(
            "Of the rank holding the most, mean over a setting's ok runs: the optimizer's state (momentum, Adam "
            "moments; under sharding the rank's own shard), the peak resident memory of its process and the peak "
            "CUDA memory torch allocated. Sharding trades memory for the collectives that exposed communication "
            "counts (the parameter all-gather or broadcast after each step, the layer-norm reduction)."
        ),
    ]
