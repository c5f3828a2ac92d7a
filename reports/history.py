"""Regression history: per setting and metric, the series over nights, its persistent steps, and
what changed in the runs' provenance where each step begins.

A series is one setting's metric night by night (``reports.history_store``): the mean of that
night's ``ok`` runs, with their min–max. For the metrics that time something (throughput, time
to accuracy, exposed communication and its share), runs flagged ``unstable`` (disturbed step
times) are left out of the night's mean and counted, as ``compare`` does; a night whose runs
were all disturbed has no point and is marked. ``include_unstable`` pools them again.

Steps are found by ``reports.changepoints`` on the nightly means; a step counts when it is
larger than the metric's tolerance (the same ``METRIC=AMOUNT`` as ``compare``), and it is a
regression when it goes the bad way (throughput or top-1 down, time to accuracy or exposed
communication up).

The gate (``--fail-on-step``) has three verdicts, over the series whose setting ran on the
history's newest night (date):

- *regression*: the series' last step is a regression: its latest points (from the last step
  to the newest night) sit at a worse level than the ones before them. A level needs
  ``min_nights`` nights, so this holds from the ``min_nights``-th night of a regression on,
  until a later step restores the level or the nights before it are left out of the history.
- *inconclusive*: no regression step, but the newest nights sit beyond the tolerance on the bad
  side of the level before them (the median of the nights since the last step): too few nights
  at that level, or too noisy, to be a step yet. A large drop on the newest night is never
  passed as fine; it is a step, or not, once more nights have run. A newest night whose runs
  were all disturbed is inconclusive too, for the timed metrics.
- *ok*: neither.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from larsbench.core import schema
from larsbench.core.spec import MEASURE_FIELDS, ROLES, SAMPLE
from larsbench.reports.changepoints import Step, find_steps, noise_sigma
from larsbench.reports.compare import METRICS as COMPARED
from larsbench.reports.compare import Metric, Tolerance, change_text, parse_tolerances, sample_of
from larsbench.reports.history_store import Night, SettingRuns, Store

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        COMPARED["throughput"],
        COMPARED["time_to_accuracy"],
        COMPARED["final_top1"],
        Metric("exposed_comm", schema.key("exposed_comm_sec_per_step"), False, "s/step", "10%"),
        Metric("comm_fraction", schema.key("comm_fraction"), False, "of step time", "10%"),
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
class Point:
    """One night of a series: the values of its ``ok`` repeats (``left_out``: disturbed runs
    whose values a timed metric leaves out)."""

    values: tuple[float, ...]
    night: Night
    left_out: int = 0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


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
    disturbed: list[Night] = field(default_factory=list)  # nights whose runs with a value were all unstable (left out)
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None  # why no step could be looked for
    noise: float | None = None  # night-to-night σ the steps were judged against
    min_nights: int = MIN_NIGHTS

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


@dataclass(frozen=True)
class GateItem:
    """One series that holds the gate: ``regression`` (its last step) or ``inconclusive``."""

    series: Series
    verdict: str
    message: str
    finding: Finding | None = None  # the regression step

    @property
    def setting(self) -> str:
        return self.series.runs.label


@dataclass
class History:
    store: Store
    series: list[Series]
    tolerances: dict[str, Tolerance]
    min_nights: int
    include_unstable: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.series for f in s.findings]

    @property
    def newest_date(self) -> str | None:
        return self.store.nights[-1].date if self.store.nights else None

    def gate(self) -> list[GateItem]:
        """The series that hold ``--fail-on-step``, regressions first (module docstring)."""
        newest = {n.index for n in self.store.nights if n.date == self.newest_date}
        items = [item for s in self.series if newest & set(s.runs.by_night) for item in [_gate_item(s, newest, self.tolerances)] if item]
        return sorted(items, key=lambda item: item.verdict != "regression")

    def gate_result(self) -> str:
        """regression, inconclusive or ok (a regression anywhere wins)."""
        verdicts = {item.verdict for item in self.gate()}
        return "regression" if "regression" in verdicts else "inconclusive" if verdicts else "ok"


def _gate_item(series: Series, newest: set[int], tolerances: dict[str, Tolerance]) -> GateItem | None:
    metric = series.metric
    if series.latest_regression is not None:
        finding = series.latest_regression
        return GateItem(series, "regression", finding.message(), finding)
    if any(n.index in newest for n in series.disturbed) and not any(p.night.index in newest for p in series.points):
        return GateItem(series, "inconclusive", f"{metric.name}: every run of the newest night was disturbed (unstable) and is "
                        "left out; run it again on a quiet machine, or pass --include-unstable")  # fmt: skip
    if not series.points or series.points[-1].night.index not in newest:
        return None
    since = series.findings[-1].step.index if series.findings else 0
    level_points = series.points[since:]
    limit = tolerances[metric.name].allowed
    trailing = 0  # the newest points, each worse than the level of the ones before them by more than the tolerance
    for k in range(1, len(level_points)):
        level = statistics.median(p.mean for p in level_points[:-k])
        worse = level - level_points[-k].mean if metric.higher_is_better else level_points[-k].mean - level
        if worse <= limit(level):
            break
        trailing = k
    if not trailing:
        return None
    level = statistics.median(p.mean for p in level_points[:-trailing])
    latest = statistics.median(p.mean for p in level_points[-trailing:])
    nights = level_points[-trailing:]
    when = nights[0].night.label if trailing == 1 else f"{nights[0].night.label} to {nights[-1].night.label}"
    message = (
        f"{metric.name}: the newest {trailing} night(s) ({when}) sit {change_text(metric, level, latest).lstrip('+-')} "
        f"{'below' if metric.higher_is_better else 'above'} the level of the {len(level_points) - trailing} night(s) before them "
        f"({value_text(metric, level)} → {value_text(metric, latest)}), beyond the {tolerances[metric.name]} tolerance, but "
        f"not yet a step (it needs {series.min_nights} nights at the new level, beyond the night-to-night noise): "
        "let more nights run, or add repeats per night"
    )
    if series.noise is not None and series.noise > limit(level):
        message += (f"; the night-to-night noise (σ {series.noise / abs(level):.1%} of the level) is larger than the tolerance, "
                    "so single nights beyond it are common")  # fmt: skip
    return GateItem(series, "inconclusive", message)


def build_history(
    store: Store,
    metrics: Iterable[str] | None = None,
    tolerances: list[str] | None = None,
    min_nights: int = MIN_NIGHTS,
    include_unstable: bool = False,
) -> History:
    """Every series of ``store`` with its steps. ``metrics``: names from ``METRICS`` (default
    all); a metric no run recorded has no series. ``tolerances``: ``METRIC=AMOUNT`` texts."""
    chosen = [METRICS[name] for name in dict.fromkeys(metrics or METRICS)]
    limits = parse_tolerances(tolerances, METRICS)
    series = []
    for runs in store.settings:
        for metric in chosen:
            one = _series(store, runs, metric, limits[metric.name], min_nights, include_unstable)
            if one is not None:
                series.append(one)
    return History(store, series, limits, min_nights, include_unstable)


def _series(
    store: Store, runs: SettingRuns, metric: Metric, tolerance: Tolerance, min_nights: int, include_unstable: bool
) -> Series | None:
    points, missing, disturbed = [], [], []
    for index, night_runs in runs.by_night.items():
        sample = sample_of(night_runs, metric, include_unstable)
        if sample is not None and sample.n:
            points.append(Point(sample.values, store.nights[index], len(sample.left_out)))
        elif sample is not None:
            disturbed.append(store.nights[index])
        else:
            missing.append(store.nights[index])
    if not points and not disturbed:
        return None
    series = Series(runs, metric, points, missing, disturbed, min_nights=min_nights)
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
