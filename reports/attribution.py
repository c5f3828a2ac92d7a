"""Where scaling efficiency goes: the time a step gains from N₀ to N workers, split into data
wait, compute and exposed communication (the records' step-time split).

With per-step times T = data + compute + comm (mean over a setting's repeats), the ideal step at
N workers is T(N₀) for weak scaling (each worker's batch is unchanged) and T(N₀)·N₀/N for strong
scaling (each worker's share of the fixed global batch shrinks). The step time lost is
ΔT = T(N) − ideal, and each part's share of it is Δpart / ΔT with Δpart = part(N) − part(N₀)
(weak) or part(N) − part(N₀)·N₀/N (strong). A part can give time back (a negative share) and
the three shares sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from larsbench.reports.scaling import Series

PARTS = (
    ("data", "data_wait_sec_per_step", "data wait"),
    ("compute", "compute_sec_per_step", "compute"),
    ("comm", "exposed_comm_sec_per_step", "exposed communication"),
)


@dataclass(frozen=True)
class Attribution:
    series: Series
    world_size: int
    efficiency: float | None
    step_sec: float
    ideal_sec: float
    lost_sec: dict[str, float]  # part → step time it lost (negative: gave back)

    @property
    def total_lost(self) -> float:
        return sum(self.lost_sec.values())

    def share(self, part: str) -> float | None:
        total = self.total_lost
        return self.lost_sec[part] / total if total > 0 else None

    def sentence(self) -> str:
        where = f"at {self.world_size} ranks (N₀ = {self.series.baseline_world_size})"
        if self.total_lost <= 0:
            return f"{self.series.label}: {where}, no step time is lost to scaling."
        shares = sorted(((self.share(key) or 0.0, name) for key, _, name in PARTS), reverse=True)
        (top, top_name), rest = shares[0], shares[1:]
        efficiency = f" (efficiency {self.efficiency:.2f})" if self.efficiency is not None else ""
        others = ", ".join(f"{share:.0%} {name}" for share, name in rest)
        return f"{self.series.label}: {where}{efficiency}, {top:.0%} of the lost step time is {top_name}; {others}."


def attribute(series: list[Series], summary: pd.DataFrame) -> list[Attribution]:
    """One attribution per point beyond N₀ of every scaling series whose points carry a split."""
    rows = {r["settings_key"]: r for _, r in summary.iterrows()}
    out = []
    for s in series:
        base = next((p for p in s.points if p.world_size == s.baseline_world_size), None)
        if base is None or not _has_split(rows.get(base.settings_key)):
            continue
        base_row = rows[base.settings_key]
        for point in s.points:
            row = rows.get(point.settings_key)
            if point.world_size == s.baseline_world_size or not _has_split(row):
                continue
            scale = 1.0 if s.kind == "weak" else s.baseline_world_size / point.world_size
            lost = {key: float(row[col]) - float(base_row[col]) * scale for key, col, _ in PARTS}
            base_step = sum(float(base_row[col]) for _, col, _ in PARTS)
            step = sum(float(row[col]) for _, col, _ in PARTS)
            out.append(Attribution(s, point.world_size, point.efficiency, step, base_step * scale, lost))
    return out


def _has_split(row: pd.Series | None) -> bool:
    return row is not None and all(_finite(row.get(col)) for _, col, _ in PARTS)


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)
