"""The report's large-batch study and layer-wise telemetry sections, as render blocks, for one workload."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from larsbench.reports import study_plots, telemetry_plots
from larsbench.reports.load import seeds_text
from larsbench.reports.render import Block, Bullets, Heading, Image, Table, Text, draw_plots
from larsbench.reports.study import STOP_GAIN, AtScale, Frontier, frontiers, is_study, study_rows, study_series
from larsbench.reports.telemetry import collect, select, step_summary

STUDY_HEADERS = [
    "recipe", "global batch (B = N×micro×acc)", "peak LR", "final top-1", "best top-1", "epochs to target",
    "time to accuracy (s, measured)", "images/s", "status",
]  # fmt: skip
FRONTIER_HEADERS = [
    "recipe", "B", "epochs to target", "throughput source", "images/s", "projected TTA (s)", "measured TTA (s)",
]  # fmt: skip
TELEMETRY_HEADERS = [
    "run", "recipe", "B", "layers", "logged steps", "trust ratio at first step (min / median / max)",
    "trust ratio at last step (min / median / max)",
]  # fmt: skip


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, pattern: str, scale: float = 1.0, unit: str = "") -> str:
    return "—" if _missing(value) else format(value * scale, pattern) + unit


def _with_range(row: pd.Series, metric: str, pattern: str, scale: float = 1.0, unit: str = "") -> str:
    """Mean over the ok repeats; where there are several, the 95% confidence interval of the
    mean (when the metric has one), then n and the min–max."""
    text = _fmt(row[metric], pattern, scale, unit)
    n = row.get(metric + "_n", 0)
    if n <= 1:
        return text
    if not _missing(row.get(metric + "_ci_low")):
        text += f" [{_fmt(row[metric + '_ci_low'], pattern, scale)}, {_fmt(row[metric + '_ci_high'], pattern, scale)}]"
    low, high = _fmt(row[metric + "_min"], pattern, scale), _fmt(row[metric + "_max"], pattern, scale)
    spread = seeds_text(n, row.get(metric + "_seeds", n))
    count = f"n={n}" + (f", {spread}" if spread else "")
    return text + (f" ({count})" if low == high else f" ({count}; {low}–{high})")


def _throughput(row: pd.Series) -> str:
    text = _fmt(row["throughput_mean"], ".1f")
    return text + (f" ± {_fmt(row['throughput_std'], '.1f')}" if row["throughput_n"] > 1 else "")


def status_cell(row: pd.Series) -> str:
    """What became of the group's runs: ok (target reached), not reached, diverged at step N..."""
    statuses = list(row["statuses"])
    ok = statuses.count("ok")
    mixed = len(set(statuses)) > 1
    parts = []
    if ok:
        if _missing(row["target_top1"]):
            text = "ok (no target)"
        elif _missing(row["final_top1"]):
            text = "ok (no evaluation)"
        elif row["tta_reached"] == 0:
            text = "not reached"
        elif row["tta_reached"] < ok:
            text = f"reached {row['tta_reached']}/{ok}"
        else:
            text = "ok"
        parts.append(text + (f" ×{ok}" if mixed and ok > 1 else ""))
    diverged = statuses.count("diverged")
    if diverged:
        steps = row["diverged_at"]
        where = f" at step{'s' if ',' in steps else ''} {steps}" if steps else ""
        parts.append(f"diverged{where}" + (f" ×{diverged}" if diverged > 1 and not steps else ""))
    for status in sorted(set(statuses) - {"ok", "diverged"}):
        n = statuses.count(status)
        parts.append(status + (f" ×{n}" if n > 1 else ""))
    return "; ".join(parts)


def study_table(series: list[tuple[str, pd.DataFrame]]) -> Table:
    rows = []
    for label, part in series:
        for _, r in part.iterrows():
            batch = f"{r['global_batch_size']} = {r['world_size']}×{r['micro_batch_size']}×{r['accumulation_steps']}"
            rows.append([
                label, batch, _fmt(r["peak_lr"], ".4g"), _with_range(r, "final_top1", ".1f", 100, "%"),
                _with_range(r, "best_top1", ".1f", 100, "%"), _with_range(r, "epochs_to_accuracy", ".3g"),
                _with_range(r, "time_to_accuracy_sec", ".1f"), _throughput(r), status_cell(r),
            ])  # fmt: skip
    return Table(STUDY_HEADERS, rows, (2, 3, 4, 5, 6, 7))


def frontier_table(fronts: list[Frontier]) -> Table:
    rows = []
    for f in fronts:
        for p in f.points:
            epochs = _fmt(p.epochs, ".3g") if p.epochs is not None else p.reached
            if p.epochs is not None and p.reached != "all":
                epochs += f" ({p.reached} reached)"
            rows.append([f.label, str(p.global_batch), epochs, p.source, _fmt(p.throughput, ".1f"),
                         _fmt(p.projected_sec, ".1f"), _fmt(p.measured_sec, ".1f")])  # fmt: skip
    return Table(FRONTIER_HEADERS, rows, (1, 2, 4, 5, 6))


def frontier_notes(fronts: list[Frontier]) -> list[str]:
    return [
        f"{f.label}: stops paying off at B={f.stop_batch}: {f.note}." if f.stop_batch is not None else f"{f.label}: {f.note}."
        for f in fronts
    ]


def study_blocks(summary: pd.DataFrame, workload: str, prefix: Path, images: list[Path], at_scale: AtScale | None = None) -> list[Block]:
    """The study section of one workload's repeat groups, or no blocks when it is no study
    (fewer than two recipes and two global batch sizes with accuracy measured). ``at_scale``
    predicts the throughput at a batch no run reached without accumulation."""
    rows = study_rows(summary)
    if rows.empty or not is_study(rows):
        return []
    series = study_series(rows)
    fronts = frontiers(summary, rows, at_scale)
    blocks: list[Block] = [
        Heading("Large-batch study", 3),
        Text(
            "Recipes (optimizer, `-` LR scaling rule, `+warmupE` for E warm-up epochs) by global batch, for the "
            "runs that measured accuracy. Over repeats: the mean with its 95% confidence interval "
            "(Student's t) in brackets, then n, what the spread is (seed-to-seed: every repeat ran its own "
            "seed; run-to-run: one seed, nondeterminism only) and the min–max; "
            "best top-1 is the highest evaluation of a run. Images/s are this study's own runs."
        ),
        study_table(series),
        Heading("Time-to-accuracy frontier", 4),
        Text(
            "Projected TTA(B) = epochs to target(B) × train images / throughput(B), where train images = steps "
            "per epoch × B of the study run and throughput(B) comes from the run of this workload at B with the "
            "most workers (least accumulation: how a cluster reaches B), else from the study run itself; where no "
            "run reached B without accumulation and `larsbench comm` records are given, larsbench predict's throughput "
            "at the allocation that reaches B with the study's micro-batch, labelled *predicted*. "
            f"Doubling the batch stops paying off at the first B whose next doubling cuts the projected time by "
            f"less than {STOP_GAIN:.0%} (or is slower, or misses the target)."
        ),
        frontier_table(fronts),
        Bullets(frontier_notes(fronts)),
    ]
    drawn, missing = draw_plots(prefix, [
        ("study-top1", "final top-1 vs global batch, per recipe", lambda p: study_plots.plot_study_accuracy(series, workload, p),
         "no run recorded a final top-1"),
        ("frontier", "time-to-accuracy frontier", lambda p: study_plots.plot_frontier(fronts, workload, p),
         "no run reached its target top-1"),
    ], images)  # fmt: skip
    blocks += drawn.values()
    if missing:
        blocks.append(Bullets(missing))
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _range_text(values: tuple[float, float, float] | None) -> str:
    return "—" if values is None else " / ".join(format(v, ".3g") for v in values)


def telemetry_blocks(frame: pd.DataFrame, folders: dict[str, Path], workload: str, prefix: Path,
                     images: list[Path]) -> list[Block]:  # fmt: skip
    """The layer-wise telemetry section of one workload's runs (``frame``: one row per run); no
    blocks when no run of the workload has an optimizer that keeps per-layer statistics."""
    if not frame["layer_telemetry"].any():
        return []
    runs, warnings, without = collect(frame, folders)
    blocks: list[Block] = [Heading("Layer-wise telemetry", 3)]
    notes = [f"Warning: {w}" for w in warnings]
    if without:
        notes.append(f"{without} layer-wise run(s) recorded no telemetry (`telemetry` is null).")
    if not runs:
        blocks.append(Text("No layer-wise run of this workload has telemetry to show."))
        return blocks + ([Bullets(notes)] if notes else [])
    shown, note = select(runs)
    if note:
        notes.insert(0, note)
    rows = []
    for run in runs:
        steps = run.steps
        logged = f"{len(steps)} ({steps[0]}–{steps[-1]})" if len(steps) > 1 else f"1 ({steps[0]})"
        rows.append([run.run_id, run.recipe, str(run.global_batch), str(len(run.layers)), logged,
                     _range_text(step_summary(run.rows, steps[0])), _range_text(step_summary(run.rows, steps[-1]))])  # fmt: skip
    blocks += [
        Text(
            "Per layer and logged step, the trust ratio λ the LARS step used and the effective LR (global LR × λ). "
            "Heatmaps: layers in the optimizer's order (first layer on top), log colour scale, grey where a "
            "value is zero or missing. Spread plots: per logged step, the median over layers with the 10–90% band "
            "and min/max."
        ),
        Table(TELEMETRY_HEADERS, rows, (2, 3)),
    ]
    if notes:
        blocks.append(Bullets(notes))
    for run in shown:
        path = telemetry_plots.plot_heatmaps(run, workload, Path(f"{prefix}-telemetry-{_slug(run.run_id)}.png"))
        images.append(path)
        alt = f"LARS trust ratio and effective LR per layer, {run.recipe}, B={run.global_batch}, run {run.run_id}"
        blocks.append(Image(path, alt))
    for recipe in sorted({r.recipe for r in shown}):
        path = telemetry_plots.plot_spread([r for r in shown if r.recipe == recipe], recipe, workload,
                                           Path(f"{prefix}-telemetry-spread-{_slug(recipe)}.png"))  # fmt: skip
        if path is not None:
            images.append(path)
            blocks.append(Image(path, f"LARS trust ratio and effective LR over layers, {recipe}"))
    return blocks
