"""Layer-wise telemetry side files (LARS, LAMB) → DataFrames, their per-step spread over layers, and which runs a
report plots.

A record's ``telemetry`` is a path relative to the folder of its results file (or null: the
run logged none). The file holds one JSON object per (step, layer); see ``larsbench.loop.telemetry``.
A run restarted after a crash may log a (step, layer) pair twice: the last row wins, as it
describes the step that the run's final state went through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from larsbench.core.files import scan_lines

REQUIRED = ("step", "layer", "layer_index", "trust_ratio", "lr", "effective_lr")
NUMERIC = ("step", "layer_index", "w_norm", "g_norm", "trust_ratio", "lr", "effective_lr")
# Above this many runs with telemetry, a workload plots three batch sizes per recipe.
MAX_RUNS = 8


@dataclass
class RunTelemetry:
    run_id: str
    label: str
    recipe: str
    global_batch: int
    seed: Any
    steps_per_epoch: float | None
    rows: pd.DataFrame  # one row per (step, layer), sorted by step then layer_index

    @property
    def layers(self) -> list[str]:
        """Layer names in ``layer_index`` order (0 = the first LARS-adapted tensor)."""
        return list(self.rows.groupby("layer_index", sort=True)["layer"].last())

    @property
    def layer_indices(self) -> list[int]:
        return sorted(int(i) for i in self.rows["layer_index"].unique())

    @property
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.rows["step"].unique())


def telemetry_file(value: Any, folder: Path | None) -> Path | None:
    """The side file a record names: relative paths are relative to its results folder."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    return path if path.is_absolute() or folder is None else folder / path


def load_telemetry(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(rows, warning). Rows are None when the file is missing or unusable; a warning also
    reports skipped torn lines (a crash mid-write) in an otherwise usable file."""
    # Line by line (core.files.scan_lines) rather than pandas.read_json(lines=True): one torn line
    # from a crashed writer would make pandas reject the whole file, and the rest is still good.
    try:
        parsed, torn = scan_lines(path)
    except OSError as exc:
        return None, f"{path}: cannot read ({exc.strerror or exc})"
    if not parsed:
        return None, f"{path}: holds no telemetry rows" + (f" ({torn} unreadable line(s))" if torn else "")
    rows = pd.DataFrame(parsed)
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        return None, f"{path}: lacks column(s) {', '.join(missing)}"
    for column in NUMERIC:
        if column in rows.columns:
            rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    rows = rows.dropna(subset=["step", "layer_index"])
    rows = rows.drop_duplicates(subset=["step", "layer"], keep="last")
    rows = rows.sort_values(["step", "layer_index"], kind="stable").reset_index(drop=True)
    rows["layer"] = rows["layer"].astype(str)
    warning = f"{path}: skipped {torn} unreadable line(s) (a torn write?)" if torn else None
    return rows, warning


def spread_over_layers(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per logged step: min, 10th percentile, median, 90th percentile and max over layers."""
    grouped = rows.dropna(subset=[column]).groupby("step")[column]
    out = pd.DataFrame({
        "min": grouped.min(), "p10": grouped.quantile(0.1), "median": grouped.median(),
        "p90": grouped.quantile(0.9), "max": grouped.max(),
    })  # fmt: skip
    return out.reset_index()


def step_summary(rows: pd.DataFrame, step: int, column: str = "trust_ratio") -> tuple[float, float, float] | None:
    """(min, median, max) of ``column`` over the layers at ``step``; None if none is finite."""
    values = rows.loc[rows["step"] == step, column].dropna()
    if values.empty:
        return None
    return float(values.min()), float(values.median()), float(values.max())


def collect(frame: pd.DataFrame, folders: dict[str, Path]) -> tuple[list[RunTelemetry], list[str], int]:
    """Telemetry of the runs in ``frame`` (one row per run) whose optimizer keeps per-layer
    statistics (``layer_telemetry``): (loaded runs, warnings, number of such runs that recorded
    none)."""
    layerwise = frame[frame["layer_telemetry"]]
    runs, warnings, without = [], [], 0
    for _, r in layerwise.iterrows():
        run_id = str(r["run_id"])
        path = telemetry_file(r.get("telemetry"), folders.get(run_id))
        if path is None:
            without += 1
            continue
        rows, warning = load_telemetry(path)
        if warning:
            warnings.append(f"run `{run_id}`: {warning}")
        if rows is None:
            continue
        spe = r.get("steps_per_epoch")
        runs.append(RunTelemetry(
            run_id, str(r["label"]), str(r["recipe"]), int(r["global_batch_size"]), r.get("seed"),
            float(spe) if spe is not None and not math.isnan(spe) and spe > 0 else None, rows,
        ))  # fmt: skip
    runs.sort(key=lambda t: (t.recipe, t.global_batch, str(t.seed), t.run_id))
    return runs, warnings, without


def select(runs: list[RunTelemetry], limit: int = MAX_RUNS) -> tuple[list[RunTelemetry], str | None]:
    """All runs when there are at most ``limit``; else, per recipe, one run each at the
    smallest, a middle and the largest global batch (and a note saying so)."""
    if len(runs) <= limit:
        return runs, None
    chosen = []
    for recipe in sorted({t.recipe for t in runs}):
        mine = [t for t in runs if t.recipe == recipe]
        batches = sorted({t.global_batch for t in mine})
        for batch in sorted({batches[0], batches[len(batches) // 2], batches[-1]}):
            chosen.append(next(t for t in mine if t.global_batch == batch))
    note = (f"{len(runs)} layer-wise runs recorded telemetry; to keep the figures readable, plotted one run each at "
            f"the smallest, a middle and the largest global batch of each recipe ({len(chosen)} runs).")  # fmt: skip
    return chosen, note
