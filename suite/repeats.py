"""Repeats of a setting: each repeat's seed, and series run until the throughput is known well enough.

Seeds. Repeat 0 of a cell trains with the cell's ``seed``; repeat r ≥ 1 with ``repeat_seed(seed,
r)``, the first word of numpy's ``SeedSequence([seed, r])`` in 31 bits: the repeats' spread is
then seed-to-seed (weights, data order, synthetic data), and no two cells' repeats share a seed
by accident. ``hold_seed: true`` keeps ``seed`` for every repeat, for pure run-to-run noise.
Every record carries the seed it ran with, so ``--seed S`` reruns any repeat alone.

Adaptive series (``repeats: auto``, ``--repeats auto``). A cell's repeats run one after the
other; after each, the run's writer decides (``decide``) and records the decision in the run's
own record (``repeats_decision``):

- *stop*, target reached: at least ``LEAST`` clean runs (``ok``, not flagged unstable) whose
  throughput's 95% confidence interval (Student's t) has a half-width within ``target`` of their
  mean (default 2%, ``--repeats-target``);
- *stop*, cap: ``most`` runs made (default 10, ``--repeats-max``), unstable ones included;
- *stop*, the run did not finish ``ok``: a failure is not noise to average away;
- else *continue*: the next repeat is started (locally by ``run_series``; under Slurm by a
  dependent job that reads the series' records, ``slurm.repeats``).

Runs flagged unstable count towards the cap but not the interval, as ``compare`` leaves them out.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.core import schema
from larsbench.core.errors import ConfigError
from larsbench.core.results import latest_per_run, read_records
from larsbench.core.spec import RunSpec
from larsbench.core.stats import ci_half_width

TARGET = 0.02  # 95% CI half-width / mean that ends a series
MOST = 10  # runs a series makes at most
LEAST = 3  # clean runs before the interval may end a series: two close values by luck are no interval
AUTO = "auto"
DECISION = schema.key("repeats_decision")
THROUGHPUT = schema.key("throughput_images_per_sec")


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` of a cell whose seed is ``seed`` (module docstring)."""
    if repeat == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0]) & 0x7FFFFFFF


def repeat_of(spec: RunSpec, repeat: int) -> RunSpec:
    """``spec`` (repeat 0 of its cell) as repeat ``repeat``: its index, and its seed unless held."""
    return dataclasses.replace(spec, repeat=repeat, seed=spec.seed if spec.hold_seed else repeat_seed(spec.seed, repeat))


@dataclass(frozen=True)
class AutoRepeats:
    """When an adaptive series stops (module docstring)."""

    target: float = TARGET
    most: int = MOST

    def series(self, series_id: str) -> dict[str, Any]:
        """What a run of the series ``series_id`` needs to decide (``--series-json``)."""
        return {"series": series_id, "target": self.target, "max_runs": self.most}


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%?\s*$")


def parse_target(value: Any, where: str) -> float:
    """``2%`` or ``2`` (percent of the mean) as a fraction."""
    match = _PERCENT.match(str(value)) if not isinstance(value, bool) else None
    fraction = float(match.group(1)) / 100 if match else math.nan
    if not 0 < fraction < 1:
        raise ConfigError(where, f"must be a percentage of the mean between 0 and 100, e.g. 2% (got {value!r})")
    return fraction


def parse_most(value: Any, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not LEAST <= value <= limit:
        raise ConfigError(where, f"must be a whole number of runs from {LEAST} (an interval needs them) to {limit} (got {value!r})")
    return value


def parse_repeats(value: Any, where: str, limit: int, text: bool = False) -> int | None:
    """A fixed number of repeats, or None for ``auto``; ``text``: a number may come as text (a flag)."""
    if value == AUTO:
        return None
    if text and isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ConfigError(where, f"must be 'auto' or a whole number of runs per setting from 1 to {limit} (got {value!r})")
    return value


def decide(previous: list[dict[str, Any]], current: dict[str, Any], series: dict[str, Any]) -> dict[str, Any]:
    """The decision after ``current`` (a record, or ``{"status": ...}`` for a run that left none)
    given the series' ``previous`` records (module docstring)."""
    runs = [*previous, current]
    clean = [float(r[THROUGHPUT]) for r in runs if _clean(r)]
    mean = statistics.fmean(clean) if clean else None
    half = ci_half_width(clean)
    relative = half / mean if half is not None and mean else None
    target, most = float(series["target"]), int(series["max_runs"])
    interval = (
        f"95% CI ±{_percent(relative)} of the mean over {len(clean)} clean run(s)" if relative is not None
        else f"{len(clean)} clean run(s), too few for an interval"
    )  # fmt: skip
    wanted = f"target ±{_percent(target)}"
    status = current.get("status")
    if status != "ok":
        decision, reason = "stop", f"run {len(runs)} did not finish ok ({status}): the series stops"
    elif relative is not None and len(clean) >= LEAST and relative <= target:
        decision, reason = "stop", f"target reached: {interval} ({wanted})"
    elif len(runs) >= most:
        decision, reason = "stop", f"cap reached: {most} runs; {interval} ({wanted})"
    else:
        more = f"; an interval may end it from {LEAST} clean runs" if len(clean) < LEAST else ""
        decision, reason = "continue", f"{interval} ({wanted}){more}"
    return {
        "series": series["series"], "decision": decision, "reason": reason, "runs": len(runs), "clean_runs": len(clean),
        "mean": mean, "half_width": relative, "target": target, "max_runs": most,
    }  # fmt: skip


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def _clean(record: dict[str, Any]) -> bool:
    value = record.get(THROUGHPUT)
    return record.get("status") == "ok" and not record.get(schema.key("unstable")) and isinstance(value, (int, float)) and math.isfinite(value)


def series_records(results: Path, series_id: str) -> list[dict[str, Any]]:
    """The records of one series so far, in the order they were written (each run once)."""
    if not results.exists():
        return []
    found = [r for r in latest_per_run(read_records(results)) if (r.get(DECISION) or {}).get("series") == series_id]
    return sorted(found, key=lambda r: r.get("repeat", 0))


def decide_for(results: Path, current: dict[str, Any], series: dict[str, Any]) -> dict[str, Any]:
    """``decide`` with the series' earlier records read from ``results``."""
    previous = [r for r in series_records(results, series["series"]) if r.get("run_id") != current.get("run_id")]
    return decide(previous, current, series)


def decision_text(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "no decision recorded: the series stops"
    return f"{decision['decision']}: {decision['reason']}"


def run_series(
    first: RunSpec, auto: AutoRepeats, series_id: str, launch: Callable[[RunSpec, dict[str, Any]], dict[str, Any]],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """Repeats of ``first``'s cell, one after another, until a run's record says stop (or has no
    decision: its record could not be written). ``launch(spec, series)`` runs one repeat."""
    series = auto.series(series_id)
    records = []
    spec = first
    while True:
        record = launch(spec, series)
        records.append(record)
        decision = record.get(DECISION)
        say(f"repeats: {decision_text(decision)}")
        if not decision or decision.get("decision") != "continue":
            return records
        spec = repeat_of(first, spec.repeat + 1)
