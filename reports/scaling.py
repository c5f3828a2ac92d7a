"""Scaling efficiency: weak (fixed per-worker batch) and strong (fixed global batch).

    efficiency(N) = throughput(N) / (N / N₀ · throughput(N₀))

against a declared baseline world size N₀: the smallest world size present in the scaling
group, or the one ``--baseline-world-size`` names. Where the group has no run at N₀, or that
run has no throughput (it failed), efficiency is not computed and the series carries a note
saying so: a baseline is never guessed from another world size.

A scaling group is a set of repeat groups (see ``reports.load``) whose settings agree on
everything except the scaling axis (world size, micro-batch, accumulation, global batch,
node count) and hold fixed the batch of their kind. If one world size appears twice in a group
(say micro 8 × accumulation 1 and micro 4 × accumulation 2 for the same per-worker batch of
8), the group is split by accumulation steps and node count, so one point is one setting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from larsbench.reports.load import key_of, telling_apart

AXIS = ("world_size", "micro_batch_size", "accumulation_steps", "global_batch_size", "num_nodes")


@dataclass(frozen=True)
class ScalingKind:
    name: str
    fixed: str  # the summary column held fixed
    title: str
    fixed_label: str


KINDS = {
    "weak": ScalingKind("weak", "per_worker_batch", "weak scaling (fixed per-worker batch)", "per-worker batch"),
    "strong": ScalingKind("strong", "global_batch_size", "strong scaling (fixed global batch)", "global batch"),
}


def efficiency(throughput: float, world_size: int, base_throughput: float, base_world_size: int) -> float:
    """``throughput / (world_size / base_world_size · base_throughput)``; 1.0 is perfect scaling."""
    if base_throughput <= 0 or world_size <= 0 or base_world_size <= 0:
        raise ValueError("throughputs and world sizes must be positive")
    return throughput / (world_size / base_world_size * base_throughput)


@dataclass
class Point:
    world_size: int
    settings_key: str
    throughput_mean: float
    throughput_std: float
    throughput_min: float
    throughput_max: float
    ideal: float | None = None  # N/N₀ · throughput(N₀)
    efficiency: float | None = None


@dataclass
class Series:
    kind: str
    workload: str
    backend: str
    recipe: str
    fixed_batch: int | None
    baseline_world_size: int
    split: str = ""  # "acc 2, 1 node" when a group was split to keep one point per world size
    distinct: str = ""  # " (link_rate=1gbit)": what sets it apart from series that would read alike
    note: str | None = None  # why efficiency is not computed
    points: list[Point] = field(default_factory=list)

    @property
    def scales(self) -> bool:
        return len({p.world_size for p in self.points}) > 1

    @property
    def label(self) -> str:
        fixed = KINDS[self.kind].fixed_label
        split = f", {self.split}" if self.split else ""
        return f"{self.backend} · {self.recipe} · {fixed} {self.fixed_batch}{split}{self.distinct}"


def scaling_series(summary: pd.DataFrame, kind: str, baseline_world_size: int | None = None) -> list[Series]:
    """Every scaling group of ``kind`` in the repeat-group ``summary`` (one row per setting)."""
    spec = KINDS[kind]
    if summary.empty:
        return []
    groups: dict[str, list[pd.Series]] = {}
    for _, row in summary.iterrows():
        group = key_of({**json.loads(row["settings_key"]), "__fixed": row[spec.fixed]}, exclude=AXIS)
        groups.setdefault(group, []).append(row)
    series = []
    for rows in groups.values():
        for split, part in _split_collisions(rows):
            series.append(_build(spec, part, split, baseline_world_size))
    alike: dict[str, list[Series]] = {}
    for s in series:
        alike.setdefault(s.label, []).append(s)
    for group in alike.values():
        apart = telling_apart({str(i): json.loads(s.points[0].settings_key) for i, s in enumerate(group)}, AXIS)
        for i, s in enumerate(group):
            s.distinct = apart[str(i)]
    return series


def _split_collisions(rows: list[pd.Series]) -> list[tuple[str, list[pd.Series]]]:
    sizes = [int(r["world_size"]) for r in rows]
    if len(sizes) == len(set(sizes)):
        return [("", rows)]
    parts: dict[tuple, list[pd.Series]] = {}
    for r in rows:
        parts.setdefault((r["accumulation_steps"], r["num_nodes"]), []).append(r)
    return [
        (f"acc {acc}, {nodes} node{'s' if nodes != 1 else ''}", part)
        for (acc, nodes), part in sorted(parts.items(), key=lambda item: str(item[0]))
    ]


def _build(spec: ScalingKind, rows: list[pd.Series], split: str, baseline_world_size: int | None) -> Series:
    rows = sorted(rows, key=lambda r: int(r["world_size"]))
    first = rows[0]
    n0 = baseline_world_size or int(first["world_size"])
    series = Series(
        kind=spec.name,
        workload=first["workload"],
        backend=first["backend"],
        recipe=first["recipe"],
        fixed_batch=None if pd.isna(first[spec.fixed]) else int(first[spec.fixed]),
        baseline_world_size=n0,
        split=split,
        points=[
            Point(int(r["world_size"]), r["settings_key"], r["throughput_mean"], r["throughput_std"],
                  r["throughput_min"], r["throughput_max"])  # fmt: skip
            for r in rows
        ],
    )
    base = next((p for p in series.points if p.world_size == n0), None)
    present = ", ".join(str(p.world_size) for p in series.points)
    if base is None:
        series.note = f"no run at the baseline world size N₀={n0} (present: N={present}); efficiency not computed"
    elif not _finite(base.throughput_mean):
        status = next(r["status"] for r in rows if int(r["world_size"]) == n0)
        series.note = f"the baseline run at N₀={n0} has no throughput (status: {status}); efficiency not computed"
    else:
        for p in series.points:
            p.ideal = p.world_size / n0 * base.throughput_mean
            if _finite(p.throughput_mean):
                p.efficiency = efficiency(p.throughput_mean, p.world_size, base.throughput_mean, n0)
    return series


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def efficiency_index(series: list[Series]) -> dict[str, tuple[float | None, Series]]:
    """``settings_key`` → (efficiency or None, its series), for series that scale."""
    return {p.settings_key: (p.efficiency, s) for s in series if s.scales for p in s.points}
