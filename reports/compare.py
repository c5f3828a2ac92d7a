"""Regression check: compare a run set against a baseline, like for like, direction-aware.

Runs match when their settings agree: every field the run spec declares a ``measure`` setting
(workload, backend, world size, batch decomposition, recipe, precision, memory layout,
compile, training length, target, data workers, ...) and the hardware signature (GPU or CPU
model, device, node count). The rest is listed as unmatched, never compared: an fp32 baseline
is never the yardstick of a bf16 run.

Each metric has a direction and a default tolerance (override with ``--tolerance``):

==================  ===============  =========  ===========================================
metric              record key       better     default tolerance
==================  ===============  =========  ===========================================
throughput          images/s         higher     5%   (relative)
time_to_accuracy    seconds          lower      10%  (relative)
epochs_to_accuracy  epochs           lower      10%  (relative)
final_top1          top-1            higher     1pp  (absolute percentage points)
==================  ===============  =========  ===========================================

A tolerance is written ``METRIC=AMOUNT`` (``METRIC:AMOUNT`` also works): ``5%`` or ``5`` is
relative to the baseline mean, ``1pp`` is absolute percentage points (top-1 only).

The verdict asks first whether the difference is larger than the noise, then applies the
threshold (as asv does): where both sides have repeats (n ≥ 2), Welch's t-test at the 5% level
decides whether the means differ; a difference it cannot tell from noise is *noise*, never a
regression. A real difference worse than the tolerance is a *regression*, one better by more
than the tolerance is *improved*, the rest *ok*. With a single run on either side there is no
noise estimate and the threshold alone decides. A value
the baseline has and the current run lacks (the target was not reached, the run failed) is a
regression; a current run that did not finish ``ok`` where the baseline's all did is one too.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from larsbench.core.stats import changed
from larsbench.reports.load import setting_label, settings
from larsbench.core.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    key: str
    higher_is_better: bool
    unit: str
    default: str
    accuracy: bool = False  # may use absolute percentage points


METRICS = {
    m.name: m
    for m in (
        Metric("throughput", "throughput_images_per_sec", True, "images/s", "5%"),
        Metric("time_to_accuracy", "time_to_accuracy_sec", False, "s", "10%"),
        Metric("epochs_to_accuracy", "epochs_to_accuracy", False, "epochs", "10%"),
        Metric("final_top1", "final_top1", True, "top-1", "1pp", accuracy=True),
    )
}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|pp)?\s*$")


@dataclass(frozen=True)
class Sample:
    """One metric over the repeats of one setting."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

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
class Tolerance:
    metric: Metric
    amount: float
    points: bool  # True: absolute percentage points; False: percent of the baseline mean

    @classmethod
    def parse(cls, text: str, option: str = "--tolerance", metrics: dict[str, Metric] | None = None) -> Tolerance:
        """``METRIC=AMOUNT`` for one of ``metrics`` (default: those ``compare`` checks)."""
        metrics = METRICS if metrics is None else metrics
        name, sep, amount = text.replace(":", "=", 1).partition("=")
        name = {m.key: m.name for m in metrics.values()}.get(name.strip(), name.strip())
        if not sep or name not in metrics:
            raise ConfigError(option, f"{text!r}: expected METRIC=AMOUNT with METRIC one of {', '.join(metrics)} (e.g. throughput=5%)")
        match = _AMOUNT.match(amount)
        if not match:
            raise ConfigError(option, f"{text!r}: amount must be a non-negative number with % (relative) or pp (percentage points), e.g. {name}={metrics[name].default}")
        metric = metrics[name]
        if match.group(2) == "pp" and not metric.accuracy:
            raise ConfigError(option, f"{text!r}: pp (percentage points) applies to accuracy metrics only; write {name}={match.group(1)}%")
        return cls(metric, float(match.group(1)), match.group(2) == "pp")

    def __str__(self) -> str:
        return f"{self.metric.name}={self.amount:g}{'pp' if self.points else '%'}"

    def allowed(self, baseline_mean: float) -> float:
        """The largest change (in the metric's own units) this tolerance lets through."""
        return self.amount / 100 if self.points else abs(baseline_mean) * self.amount / 100

    def verdict(self, baseline: Sample, current: Sample) -> tuple[str, str | None]:
        """(verdict, message): verdict is regression, improved, noise or ok; a message only for a regression."""
        worse_by = baseline.mean - current.mean if self.metric.higher_is_better else current.mean - baseline.mean
        if changed(baseline.values, current.values) is False:
            return ("noise" if worse_by > 0 else "ok"), None
        limit = self.allowed(baseline.mean)
        if worse_by > limit:
            return "regression", (
                f"{self.metric.name} {'fell' if self.metric.higher_is_better else 'rose'} by "
                f"{change_text(self.metric, baseline.mean, current.mean, self.points).lstrip('+-')}"
                f" ({_value(self.metric, baseline.mean)} → {_value(self.metric, current.mean)}), beyond the {self} tolerance"
            )
        if -worse_by > limit:
            return "improved", None
        return "ok", None

    def check(self, baseline: Sample, current: Sample) -> str | None:
        """A message when ``current`` regressed against ``baseline``, else None."""
        return self.verdict(baseline, current)[1]


def default_tolerances(metrics: dict[str, Metric] | None = None) -> dict[str, Tolerance]:
    metrics = METRICS if metrics is None else metrics
    return {name: Tolerance.parse(f"{name}={m.default}", metrics=metrics) for name, m in metrics.items()}


def parse_tolerances(texts: list[str] | None, metrics: dict[str, Metric] | None = None) -> dict[str, Tolerance]:
    tolerances = default_tolerances(metrics)
    for text in texts or []:
        t = Tolerance.parse(text, metrics=metrics)
        tolerances[t.metric.name] = t
    return tolerances


def _value(metric: Metric, value: float) -> str:
    return f"{value * 100:.2f}%" if metric.accuracy else f"{value:.4g} {metric.unit}"


def change_text(metric: Metric, baseline: float, current: float, points: bool | None = None) -> str:
    points = metric.accuracy if points is None else points
    if points:
        return f"{(current - baseline) * 100:+.2f} pp"
    return f"{(current - baseline) / baseline * 100:+.1f}%" if baseline else "—"


# --- matching ---------------------------------------------------------------------------------

def match_key(record: dict[str, Any]) -> dict[str, Any]:
    """Runs match when their settings do (``reports.load.settings``: every ``measure`` field of
    the run spec, device, hardware signature and node count), and only then."""
    return settings(record)


def _group(records: list[dict[str, Any]]) -> dict[tuple, tuple[dict[str, Any], list[dict[str, Any]]]]:
    groups: dict[tuple, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for r in records:
        key = match_key(r)
        frozen = tuple(sorted((k, repr(v)) for k, v in key.items()))
        groups.setdefault(frozen, (key, []))[1].append(r)
    return groups


def ok_values(runs: list[dict[str, Any]], key: str) -> tuple[float, ...]:
    """``key`` of every ``ok`` run that recorded a finite number there."""
    return tuple(
        float(r[key]) for r in runs
        if r.get("status") == "ok" and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    )  # fmt: skip


def _sample(runs: list[dict[str, Any]], key: str) -> Sample | None:
    values = ok_values(runs, key)
    return Sample(values) if values else None


@dataclass
class Row:
    setting: str
    metric: str
    baseline: Sample | None
    current: Sample | None
    change: str
    verdict: str
    message: str | None = None


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    baseline_only: list[str] = field(default_factory=list)
    current_only: list[str] = field(default_factory=list)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_json(self) -> dict[str, Any]:
        def sample(s: Sample | None) -> dict[str, Any] | None:
            return None if s is None else {"n": s.n, "mean": s.mean, "min": s.low, "max": s.high}

        return {
            "result": "regression" if self.regressions else "ok",
            "exit_code": self.exit_code,
            "regressions": len(self.regressions),
            "tolerances": {name: str(t) for name, t in self.tolerances.items()},
            "comparisons": [
                {"setting": r.setting, "metric": r.metric, "baseline": sample(r.baseline), "current": sample(r.current),
                 "change": r.change, "verdict": r.verdict, "message": r.message}  # fmt: skip
                for r in self.rows
            ],
            "unmatched": {"baseline": self.baseline_only, "current": self.current_only},
        }


def _nearest_difference(key: dict[str, Any], others: list[dict[str, Any]]) -> str:
    if not others:
        return ""
    diffs = min(([f for f in key if key.get(f) != o.get(f)] for o in others), key=len)
    return f" (closest on the other side differs in: {', '.join(diffs)})"


def compare(
    baseline: list[dict[str, Any]], current: list[dict[str, Any]], tolerances: dict[str, Tolerance] | None = None
) -> Comparison:
    tolerances = tolerances or default_tolerances()
    base_groups, cur_groups = _group(baseline), _group(current)
    result = Comparison(tolerances=tolerances)
    for frozen, (key, runs) in cur_groups.items():
        if frozen not in base_groups:
            others = [k for k, _ in base_groups.values()]
            result.current_only.append(setting_label(key) + _nearest_difference(key, others))
            continue
        base_runs = base_groups[frozen][1]
        label = setting_label(key)
        result.rows += _status_row(label, base_runs, runs)
        for name, tol in tolerances.items():
            b, c = _sample(base_runs, tol.metric.key), _sample(runs, tol.metric.key)
            if b is None and c is None:
                continue
            if b is None:
                result.rows.append(Row(label, name, None, c, "—", "new"))
            elif c is None:
                why = "no current run recorded it" + (" (target not reached?)" if "accuracy" in name else "")
                result.rows.append(Row(label, name, b, None, "—", "regression", f"{name}: {why}"))
            else:
                verdict, message = tol.verdict(b, c)
                result.rows.append(Row(label, name, b, c, change_text(tol.metric, b.mean, c.mean, tol.points), verdict, message))
    others = [k for k, _ in cur_groups.values()]
    result.baseline_only = [
        setting_label(key) + _nearest_difference(key, others) for frozen, (key, _) in base_groups.items() if frozen not in cur_groups
    ]
    return result


def _status_row(label: str, base_runs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[Row]:
    bad = [r for r in runs if r.get("status") != "ok"]
    if not bad:
        return []
    base_ok = all(r.get("status") == "ok" for r in base_runs)
    what = ", ".join(sorted({str(r.get("status")) for r in bad}))
    message = f"{len(bad)} of {len(runs)} current run(s) did not finish ok ({what})"
    return [Row(label, "status", None, None, f"{len(runs) - len(bad)}/{len(runs)} ok", "regression" if base_ok else "ok", message if base_ok else None)]
