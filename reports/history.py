"""Regression history: per setting and metric, the series over nights, its persistent steps, and
what changed in the runs' provenance where each step begins.

A series is one setting's metric night by night (``reports.history_store``): the mean of that
night's ``ok`` runs, with their min–max. Steps are found by ``reports.changepoints`` on the
nightly means; a step counts when it is larger than the metric's tolerance (the same
``METRIC=AMOUNT`` as ``compare``), and it is a regression when it goes the bad way (throughput
or top-1 down, time to accuracy or exposed communication up).

The gate (``--fail-on-step``). A series' *latest points* are those from its last step to its
newest night. The gate fails when, in any series whose setting ran on the history's newest
night (date), the last step is a regression: the latest points sit at a worse level than the
ones before them. A level needs ``min_nights`` nights to count, so the gate fails from the
``min_nights``-th night of a regression on, and keeps failing until a later step restores the
level or the nights before the regression are left out of the history.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from larsbench.core.spec import MEASURE_FIELDS, ROLES, SAMPLE
from larsbench.reports.changepoints import Step, find_steps, noise_sigma
from larsbench.reports.compare import METRICS as COMPARED
from larsbench.reports.compare import Metric, Sample, Tolerance, change_text, ok_values, parse_tolerances
from larsbench.reports.history_store import Night, SettingRuns, Store

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        COMPARED["throughput"],
        COMPARED["time_to_accuracy"],
        COMPARED["final_top1"],
        Metric("exposed_comm", "exposed_comm_sec", False, "s", "10%"),
        Metric("comm_fraction", "comm_fraction", False, "of step time", "10%"),
    )
}
MIN_NIGHTS = 3

# Provenance shown by name; every other ``versions`` key appears under its own name.
VERSION_NAMES = {
    "torch": "torch", "torchvision": "torchvision", "torch_cuda_build": "CUDA build", "cudnn": "cuDNN",
    "nccl": "NCCL", "deepspeed": "DeepSpeed", "horovod": "Horovod", "python": "Python",
}  # fmt: skip
MACHINE_FIELDS = (
    ("node_list", "nodes"), ("host", "host"), ("cpu_model", "CPU"), ("gpu_model", "GPU"),
    ("cpu_count", "CPUs"), ("gpu_count", "GPUs"), ("torch_threads", "torch threads"),
    ("platform", "platform"), ("launcher", "launcher"),
)  # fmt: skip
# Config keys that tell runs of one setting apart without being a difference: the seed of a
# repeat. Measure fields are equal within a setting by construction.
_SAME_SETTING = frozenset(MEASURE_FIELDS) | {n for n, role in ROLES.items() if role == SAMPLE}


@dataclass(frozen=True)
class Change:
    what: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.what} {self.before} → {self.after}"


def changes_text(changes: Iterable[Change], limit: int | None = None) -> str:
    items = [str(c) for c in changes]
    if limit is not None and len(items) > limit:
        items = items[:limit] + [f"{len(items) - limit} more"]
    return ", ".join(items) or "nothing recorded"


def provenance_fields(record: dict[str, Any]) -> dict[str, str]:
    """What a run's provenance says about where and with what it ran, flat and as text."""
    prov = record.get("provenance") or {}
    out = {"git commit": _commit(prov.get("git_commit")), "larsbench": _text(prov.get("larsbench"))}
    for key, value in (prov.get("versions") or {}).items():
        out[VERSION_NAMES.get(key, key)] = _text(value)
    for key, name in MACHINE_FIELDS:
        out[name] = _text(prov.get(key))
    for key, value in (prov.get("allocation") or {}).items():
        out[f"slurm {key}"] = _text(value)
    for key, value in (prov.get("config") or {}).items():
        if key not in _SAME_SETTING:
            out[f"config {key}"] = _text(value)
    return out


def _commit(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "unknown"
    commit, dirty, _ = value.partition("-dirty")
    return commit[:12] + ("-dirty" if dirty else "")


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def provenance_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Change]:
    """What differs between two groups of runs (two nights of one setting). A field whose
    repeats disagree within a night shows every value (``host a, b → c``)."""
    def values(runs: list[dict[str, Any]]) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for run in runs:
            for name, value in provenance_fields(run).items():
                seen.setdefault(name, set()).add(value)
        return seen

    old, new = values(before), values(after)
    changes = []
    for name in dict.fromkeys([*old, *new]):
        a, b = old.get(name, {"none"}), new.get(name, {"none"})
        if a != b:
            changes.append(Change(name, ", ".join(sorted(a)), ", ".join(sorted(b))))
    return changes


@dataclass(frozen=True)
class Point(Sample):
    """One night of a series: the values of its ``ok`` repeats."""

    night: Night


@dataclass(frozen=True)
class Finding:
    """One persistent step of one series."""

    setting: str
    metric: Metric
    step: Step
    last_good: Night
    first_bad: Night
    changes: tuple[Change, ...]

    @property
    def regression(self) -> bool:
        return (self.step.change < 0) == self.metric.higher_is_better

    @property
    def size(self) -> str:
        """``-10.2%`` (``-1.30 pp`` for top-1)."""
        return change_text(self.metric, self.step.before, self.step.after)

    def levels(self) -> str:
        return f"{value_text(self.metric, self.step.before)} → {value_text(self.metric, self.step.after)}"

    def message(self) -> str:
        verb = ("fell" if self.step.change < 0 else "rose") + f" {self.size.lstrip('+-')}"
        return (
            f"{self.metric.name} {verb} ({self.levels()}) from night {self.first_bad.label} on "
            f"(last good {self.last_good.label}): {changes_text(self.changes, 8)}"
        )


def value_text(metric: Metric, value: float) -> str:
    if metric.accuracy:
        return f"{value * 100:.2f}%"
    if metric.name == "comm_fraction":
        return f"{value * 100:.1f}%"
    return f"{value:.4g} {metric.unit}"


@dataclass
class Series:
    runs: SettingRuns
    metric: Metric
    points: list[Point]
    missing: list[Night]  # nights the setting ran without an ok value of this metric
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None  # why no step could be looked for
    noise: float | None = None  # night-to-night σ the steps were judged against

    def noise_text(self) -> str:
        """``night-to-night noise σ 34.9 images/s (15.2% of its level)``: why a change that looks
        large may not count as a step."""
        if self.noise is None:
            return ""
        level = statistics.median(p.mean for p in self.points)
        share = f" ({self.noise / abs(level):.1%} of its level)" if level else ""
        sigma = f"{self.noise * 100:.2f} pp" if self.metric.accuracy else value_text(self.metric, self.noise)
        return f"night-to-night noise σ {sigma}{share}"

    @property
    def latest_regression(self) -> Finding | None:
        """The last step, when it is a regression (see the module docstring)."""
        return self.findings[-1] if self.findings and self.findings[-1].regression else None


@dataclass
class History:
    store: Store
    series: list[Series]
    tolerances: dict[str, Tolerance]
    min_nights: int

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.series for f in s.findings]

    @property
    def newest_date(self) -> str | None:
        return self.store.nights[-1].date if self.store.nights else None

    def gate(self) -> list[Finding]:
        """The regressions ``--fail-on-step`` fails on (module docstring)."""
        newest = {n.index for n in self.store.nights if n.date == self.newest_date}
        return [
            s.latest_regression for s in self.series
            if s.latest_regression is not None and newest & set(s.runs.by_night)
        ]  # fmt: skip


def build_history(
    store: Store,
    metrics: Iterable[str] | None = None,
    tolerances: list[str] | None = None,
    min_nights: int = MIN_NIGHTS,
) -> History:
    """Every series of ``store`` with its steps. ``metrics``: names from ``METRICS`` (default
    all); a metric no run recorded has no series. ``tolerances``: ``METRIC=AMOUNT`` texts."""
    chosen = [METRICS[name] for name in dict.fromkeys(metrics or METRICS)]
    limits = parse_tolerances(tolerances, METRICS)
    series = []
    for runs in store.settings:
        for metric in chosen:
            one = _series(store, runs, metric, limits[metric.name], min_nights)
            if one is not None:
                series.append(one)
    return History(store, series, limits, min_nights)


def _series(store: Store, runs: SettingRuns, metric: Metric, tolerance: Tolerance, min_nights: int) -> Series | None:
    points, missing = [], []
    for index, night_runs in runs.by_night.items():
        values = ok_values(night_runs, metric.key)
        if values:
            points.append(Point(values, store.nights[index]))
        else:
            missing.append(store.nights[index])
    if not points:
        return None
    series = Series(runs, metric, points, missing)
    if len(points) < 2 * min_nights:
        series.note = f"{len(points)} night(s) with a value; steps are looked for from {2 * min_nights} on"
        return series
    series.noise = noise_sigma([p.mean for p in points])
    steps = find_steps([p.mean for p in points], min_nights, tolerance.allowed)
    for step in steps:
        good, bad = points[step.index - 1].night, points[step.index].night
        changes = provenance_changes(runs.by_night[good.index], runs.by_night[bad.index])
        series.findings.append(Finding(runs.label, metric, step, good, bad, tuple(changes)))
    return series
