"""The large-batch study: recipes (optimizer, LR rule, warm-up) compared across global batch
sizes, and the time-to-accuracy frontier.

The frontier combines two measurements that a cluster makes separately: how many epochs a
recipe needs to reach the target at global batch B (the study runs), and how fast the cluster
processes images at B (the run at B with the most workers, i.e. the least accumulation: that
is how a cluster reaches B, and it may be a throughput sweep passed to ``report`` alongside
the study). A study on one small machine reaches a large B by accumulation, so its own
wall-clock says little about a cluster; the projection says what it would take there:

    projected TTA(B) = epochs_to_target(B) × train_images / throughput(B)

with train_images = steps_per_epoch × B of the study run (the images one epoch trains on).

Where no run reached B without accumulation and the report has ``larsbench comm`` records, the
throughput at B is ``larsbench predict``'s at the allocation that reaches B with the study's
micro-batch and no accumulation (``at_scale``), labelled as predicted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import pandas as pd

# A doubling of the batch that cuts the projected time by less than this no longer pays off:
# it buys little and costs twice the workers (or twice the accumulation).
STOP_GAIN = 0.10


def study_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The repeat groups of one workload that measured accuracy (an evaluation, or a run that
    diverged on the way), sorted by recipe and global batch. A throughput-only run (no
    evaluation) is not part of the study, though the frontier may take its throughput."""
    measured = summary["final_top1"].notna() | summary["statuses"].map(lambda s: "diverged" in s)
    rows = summary[measured]
    order = ["recipe", "global_batch_size", "backend", "base_lr", "world_size"]
    return rows.sort_values(order, kind="stable").reset_index(drop=True)


def is_study(rows: pd.DataFrame) -> bool:
    """Worth a study section: two recipes, or one recipe at two global batch sizes."""
    return rows["recipe"].nunique() >= 2 or rows["global_batch_size"].nunique() >= 2


def study_series(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One series per recipe; backend and base LR join the label only where the study varies them
    (an LR sweep of one recipe is several series, never one zig-zag line)."""
    many_backends = rows["backend"].nunique() > 1
    out = []
    for (backend, recipe, base_lr), part in rows.groupby(["backend", "recipe", "base_lr"], sort=True, dropna=False):
        label = str(recipe)
        if many_backends:
            label = f"{backend} · {label}"
        if rows.loc[rows["recipe"] == recipe, "base_lr"].nunique() > 1:
            label += f", base lr {base_lr:g}"
        out.append((label, part.sort_values("global_batch_size", kind="stable")))
    return out


@dataclass
class FrontierPoint:
    global_batch: int
    study_key: str  # settings_key of the study row
    reached: str  # "all", "2/3", or why not: "not reached", "diverged", "no target"
    epochs: float | None = None  # mean epochs to target over the ok repeats that reached it
    train_images: int | None = None
    throughput: float | None = None
    source: str = "—"  # which runs the throughput comes from
    source_world_size: int | None = None
    predicted: bool = False  # the throughput is larsbench predict's, not a run's
    projected_sec: float | None = None
    measured_sec: float | None = None


@dataclass
class Frontier:
    label: str
    points: list[FrontierPoint] = field(default_factory=list)
    stop_batch: int | None = None  # the batch beyond which doubling no longer pays off
    note: str = ""


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def throughput_source(summary: pd.DataFrame, row: pd.Series) -> tuple[float, str, int] | None:
    """Throughput at ``row``'s global batch from the same workload's run with the most workers
    (then the least accumulation; ties go to the row's own runs, then the same optimizer and
    backend): (images/s, where it comes from, its world size), or None when none measured it."""
    same = summary[
        (summary["workload_key"] == row["workload_key"])
        & (summary["global_batch_size"] == row["global_batch_size"])
        & summary["throughput_mean"].notna()
    ]
    if same.empty:
        return None
    order = same.assign(
        _n=-same["world_size"],
        _own=same["settings_key"] != row["settings_key"],
        _opt=same["optimizer"] != row["optimizer"],
        _backend=same["backend"] != row["backend"],
    ).sort_values(["_n", "accumulation_steps", "_own", "_opt", "_backend"], kind="stable")
    best = order.iloc[0]
    n = int(best["world_size"])
    batch = f"{best['global_batch_size']} = {n}×{best['micro_batch_size']}×{best['accumulation_steps']}"
    runs = f"n={best['throughput_n']}" if best["throughput_n"] > 1 else "1 run"
    if best["settings_key"] == row["settings_key"]:
        return float(best["throughput_mean"]), f"own runs (N={n}, {runs})", n
    return float(best["throughput_mean"]), f"{best['backend']} {best['recipe']} N={n} ({batch}, {runs})", n


def _reached(row: pd.Series) -> str:
    if not _finite(row["target_top1"]):
        return "no target"
    if row["ok_runs"] == 0:
        return "diverged" if "diverged" in row["statuses"] else "no ok run"
    if row["tta_reached"] == 0:
        return "not reached"
    return "all" if row["tta_reached"] == row["ok_runs"] else f"{row['tta_reached']}/{row['ok_runs']}"


# (a study row) → (images/s, where it comes from, world size) at B without accumulation, or None.
AtScale = Callable[[pd.Series], "tuple[float, str, int] | None"]


def _at_scale(summary: pd.DataFrame, row: pd.Series) -> bool:
    """Whether a run of ``row``'s workload reached its global batch without accumulation."""
    same = summary[(summary["workload_key"] == row["workload_key"]) & (summary["global_batch_size"] == row["global_batch_size"])
                   & summary["throughput_mean"].notna()]  # fmt: skip
    return bool((same["accumulation_steps"] == 1).any())


def frontier_point(summary: pd.DataFrame, row: pd.Series, at_scale: AtScale | None = None) -> FrontierPoint:
    batch = int(row["global_batch_size"])
    point = FrontierPoint(batch, row["settings_key"], _reached(row))
    if _finite(row["time_to_accuracy_sec"]):
        point.measured_sec = float(row["time_to_accuracy_sec"])
    if not _finite(row["epochs_to_accuracy"]):
        return point
    point.epochs = float(row["epochs_to_accuracy"])
    if _finite(row["steps_per_epoch"]):
        point.train_images = int(row["steps_per_epoch"]) * batch
    found = throughput_source(summary, row)
    if found is not None:
        point.throughput, point.source, point.source_world_size = found
    if at_scale is not None and not _at_scale(summary, row):
        # No run reached this batch the way a cluster would (without accumulation): predict it.
        predicted = at_scale(row)
        if predicted is not None:
            point.throughput, text, point.source_world_size = predicted
            point.source = f"predicted: {text}" + (f"; measured with accumulation: {found[0]:.1f} images/s" if found else "")
            point.predicted = True
    if point.train_images and point.throughput:
        point.projected_sec = point.epochs * point.train_images / point.throughput
    return point


def stops_paying_off(points: list[FrontierPoint]) -> tuple[int | None, str]:
    """The batch beyond which doubling no longer cuts the projected time to accuracy: the first
    projected point whose next larger batch gains less than ``STOP_GAIN`` per doubling (or is
    slower, or never reaches the target). None, with the reason, when there is no such point."""
    ordered = sorted(points, key=lambda p: p.global_batch)
    projected = [p for p in ordered if p.projected_sec is not None]
    if not projected:
        return None, "no batch size has a projection (none reached the target with a measured throughput)"
    for cur, nxt in pairwise(ordered):
        if cur.projected_sec is None:
            continue
        if nxt.projected_sec is None:
            if nxt.epochs is not None:
                why = "has no measured throughput or epoch length"
            else:
                why = {"diverged": "diverged", "no target": "has no target"}.get(nxt.reached, "did not reach the target")
            return cur.global_batch, f"B={nxt.global_batch} {why}"
        doublings = math.log2(nxt.global_batch / cur.global_batch)
        gain = 1 - (nxt.projected_sec / cur.projected_sec) ** (1 / doublings)
        if gain < STOP_GAIN:
            per = " per doubling" if abs(doublings - 1) > 1e-9 else ""
            change = f"cuts projected TTA by only {gain:.0%}{per}" if gain >= 0 else f"raises projected TTA by {-gain:.0%}{per}"
            return cur.global_batch, f"going to B={nxt.global_batch} {change}"
    if len(projected) == 1:
        return None, f"only B={projected[0].global_batch} has a projection"
    return None, f"still pays off at the largest batch measured (B={projected[-1].global_batch})"


def frontiers(summary: pd.DataFrame, rows: pd.DataFrame, at_scale: AtScale | None = None) -> list[Frontier]:
    """One frontier per study series. At a batch run in several ways (world size × accumulation),
    a row that reached the target stands for it (a short throughput run with an evaluation must
    not hide the long run that measured epochs to target), the one with the most workers first."""
    out = []
    for label, part in study_series(rows):
        part = part.assign(_missed=part["epochs_to_accuracy"].isna())
        chosen = part.sort_values(["global_batch_size", "_missed", "world_size", "accumulation_steps"],
                                  ascending=[True, True, False, True], kind="stable")  # fmt: skip
        chosen = chosen.drop_duplicates("global_batch_size", keep="first")
        frontier = Frontier(label, [frontier_point(summary, r, at_scale) for _, r in chosen.iterrows()])
        frontier.stop_batch, frontier.note = stops_paying_off(frontier.points)
        out.append(frontier)
    return out
