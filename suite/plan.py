"""What an experiment would run, and about how long it would take, before anything runs
(``larsbench run --dry-run``, ``larsbench slurm --dry-run``).

Nothing here writes, generates data or imports torch. A run's time is estimated only from
earlier runs of the same setting (equal labels) on this machine, read from the results
folder the run would append to: their time from the launch stamp to the record
(``setup_sec`` + ``wall_time_sec`` + the ``record`` phase), the median when there are several.
A setting that never ran here has no estimate; none is made up.
"""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from larsbench.core.layout import RESULTS_FILE
from larsbench.core.results import read_records
from larsbench.core.spec import RunSpec, recipe_label


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    steps: int | None  # optimizer steps, when the data set's size is known before the run starts
    estimate_sec: float | None  # from earlier runs of this setting here; None: never ran here
    earlier: int  # how many earlier runs the estimate is from


def train_samples(spec: RunSpec) -> int | None:
    """Images in the whole train set, where the settings alone say (an ImageFolder tree is
    only counted when the run lists it)."""
    if spec.dataset == "synthetic":
        return spec.synthetic_samples
    if spec.dataset == "generated":
        return spec.num_classes * spec.train_images_per_class
    return None


def planned_steps(spec: RunSpec) -> int | None:
    """The optimizer steps the run will take, as ``loop.trainer`` counts them: each rank's
    shard (drop-last) in whole micro-batches, then whole accumulations, times the epochs."""
    if spec.steps is not None:
        return spec.steps
    samples = train_samples(spec)
    if samples is None:
        return None
    per_epoch = samples // spec.world_size // spec.micro_batch_size // spec.accumulation_steps
    return max(1, round(spec.epochs * per_epoch)) if per_epoch >= 1 else None


def run_seconds(record: dict[str, Any]) -> float | None:
    """A finished run's time from its launch stamp to its record, or None where the record
    does not say (older records, failed runs)."""
    if record.get("status") != "ok" or record.get("setup_sec") is None or record.get("wall_time_sec") is None:
        return None
    return record["setup_sec"] + record["wall_time_sec"] + ((record.get("phases_sec") or {}).get("record") or 0.0)


def earlier_times(output: Path, host: str | None = None) -> dict[str, list[float]]:
    """Earlier runs' times on ``host`` (default: this machine) by label, from ``output``'s
    results file; nothing when it does not exist or cannot be read."""
    host = host or socket.gethostname()
    results = output / RESULTS_FILE
    try:
        records = read_records(results) if results.is_file() else []
    except (OSError, ValueError):  # a results file this larsbench cannot read gives no estimate
        return {}
    times: dict[str, list[float]] = {}
    for record in records:
        seconds = run_seconds(record)
        if seconds is not None and (record.get("provenance") or {}).get("host") == host:
            times.setdefault(record["label"], []).append(seconds)
    return times


def plan(runs: tuple[RunSpec, ...] | list[RunSpec], output: Path) -> list[PlannedRun]:
    times = earlier_times(output)
    planned = []
    for spec in runs:
        seen = times.get(spec.label, [])
        planned.append(PlannedRun(spec, planned_steps(spec), statistics.median(seen) if seen else None, len(seen)))
    return planned


def total_text(planned: list[PlannedRun]) -> str:
    """``6 runs, about 95 s (from earlier runs here)``, saying how many runs have no estimate."""
    known = [p.estimate_sec for p in planned if p.estimate_sec is not None]
    text = f"{len(planned)} run(s)"
    if not known:
        return text + ": no estimate (none of these settings ran here before, with this results folder)"
    text += f", about {_duration(sum(known))}"
    missing = len(planned) - len(known)
    if missing:
        text += f" for the {len(known)} that ran here before, plus {missing} never run here (no estimate)"
    else:
        text += " (from earlier runs of each setting here)"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def plan_table(planned: list[PlannedRun], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("#", "right"), ("backend", "left"), ("model", "left"), ("px", "right"), ("data", "left"), ("ranks", "right"),
        ("global batch", "right"), ("recipe", "left"), ("precision", "left"), ("steps", "right"), ("about", "right"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)
    for index, p in enumerate(planned):
        s = p.spec
        steps = str(p.steps) if p.steps is not None else f"{s.epochs:g} epochs"
        about = "—" if p.estimate_sec is None else f"{_duration(p.estimate_sec)}" + (f" ({p.earlier}×)" if p.earlier > 1 else "")
        table.add_row(
            str(index), s.backend, s.model, str(s.image_size), s.dataset, str(s.world_size),
            f"{s.global_batch_size} = {s.world_size}×{s.micro_batch_size}×{s.accumulation_steps}",
            recipe_label(s.optimizer, s.scaling_rule, s.warmup_epochs) + ("" if s.repeat == 0 else f" (repeat {s.repeat + 1})"),
            s.precision, steps, about,
        )  # fmt: skip
    return table
