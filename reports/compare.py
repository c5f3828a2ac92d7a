"""Regression check: compare a run set against a baseline, like for like, direction-aware, with
three verdicts.

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

Verdicts (``judge``), per setting and metric:

- *ok*: the observed change is within the tolerance (or better than it: *improved*, when the
  data support it).
- *regression*: the observed change is worse than the tolerance, and the data support it:
  where both sides have repeats with a spread, Welch's t-test, one-sided at the 4% level, finds
  the current mean worse (the level is calibrated on real runs: docs/calibration.md). A side
  with one run (or repeats without any spread) gives no noise estimate: the observed change
  alone decides, and the verdict says "no uncertainty".
- *inconclusive*: the observed change is worse than the tolerance, but the repeats cannot
  tell it from noise. A large change is never passed as fine because it is not significant:
  the verdict says about how many repeats per side would settle it (a power calculation on
  the observed spread: the repeats with which the test finds a true change of the observed
  size four times in five).

A value the baseline has and the current run lacks (the target was not reached, the run
failed) is a regression; a current run that did not finish ``ok`` where the baseline's all did
is one too.

Disturbed runs. A run whose own step times say it was disturbed (``unstable``) measured its
timing under conditions nobody asked for: for the metrics that time something (throughput,
time to accuracy), its values are left out of both sides and listed, never averaged with
clean runs; a side left with only disturbed runs, or with one clean run where repeats were
made, makes a change beyond the tolerance *inconclusive* (leaving runs out must not turn repeats
into a single run judged without uncertainty), and so does a change the clean runs call ok but
all runs put beyond the tolerance (a slowdown that disturbs the step times gets its runs
flagged: leaving them out must not pass it as fine). Accuracy metrics keep every run (a disturbance slows a run; it does not change what it computes).
``include_unstable`` pools them all again.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from larsbench.core import schema
from larsbench.core.errors import ConfigError
from larsbench.core.stats import POWER, REGRESSION_ALPHA, Difference, difference, repeats_for
from larsbench.reports.load import setting_label, settings


@dataclass(frozen=True)
class Metric:
    name: str
    key: str
    higher_is_better: bool
    unit: str
    default: str
    accuracy: bool = False  # may use absolute percentage points
    timed: bool = True  # a disturbed run's value says little: see the module docstring


METRICS = {
    m.name: m
    for m in (
        Metric("throughput", schema.key("throughput_images_per_sec"), True, "images/s", "5%"),
        Metric("time_to_accuracy", schema.key("time_to_accuracy_sec"), False, "s", "10%"),
        Metric("epochs_to_accuracy", schema.key("epochs_to_accuracy"), False, "epochs", "10%", timed=False),
        Metric("final_top1", schema.key("final_top1"), True, "top-1", "1pp", accuracy=True, timed=False),
    )
}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|pp)?\s*$")
EXIT_REGRESSION, EXIT_INCONCLUSIVE = 1, 3


@dataclass(frozen=True)
class Sample:
    """One metric over the repeats of one setting (``left_out``: the disturbed runs' ids)."""

    values: tuple[float, ...]
    left_out: tuple[str, ...] = ()

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
class Judgement:
    """A verdict and what it rests on."""

    verdict: str
    basis: str  # "Welch one-sided p=0.003, n=5 vs 5", "no uncertainty: one run on a side, n=1 vs 3", ...
    message: str | None = None  # why, for a regression or an inconclusive verdict
    p_value: float | None = None
    repeats_needed: int | None = None  # per side, for an inconclusive verdict (None: more than stats.MOST_REPEATS)


@dataclass(frozen=True)
class Tolerance:
    metric: Metric
    amount: float
    points: bool  # True: absolute percentage points; False: percent of the baseline mean
    alpha: float = REGRESSION_ALPHA  # one-sided level of the test (benchmarks.calibration.levels tries others)

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

    def verdict(self, baseline: Sample, current: Sample) -> Judgement:
        """The verdict on ``current`` against ``baseline`` (see the module docstring)."""
        return judge(self, baseline.values, current.values, self.alpha)

    def check(self, baseline: Sample, current: Sample) -> str | None:
        """A message when ``current`` regressed against ``baseline``, else None."""
        found = self.verdict(baseline, current)
        return found.message if found.verdict == "regression" else None


def judge(tolerance: Tolerance, baseline: tuple[float, ...], current: tuple[float, ...], alpha: float = REGRESSION_ALPHA) -> Judgement:
    """Regression, inconclusive, improved or ok (module docstring)."""
    metric = tolerance.metric
    base_mean, cur_mean = statistics.fmean(baseline), statistics.fmean(current)
    worse_by = base_mean - cur_mean if metric.higher_is_better else cur_mean - base_mean
    limit = tolerance.allowed(base_mean)
    found = difference(baseline, current)
    sizes = f"n={len(baseline)} vs {len(current)}"
    if not found.measured:
        why = "one run on a side" if min(len(baseline), len(current)) < 2 else "the repeats show no spread"
        basis = f"no uncertainty: {why}, {sizes}"
    else:
        basis = f"Welch one-sided p={_p_text(found.p_one_sided)}, {sizes}"
    # One-sided in the direction observed: the only change a tolerance is asked about
    p = found.p_one_sided
    if abs(worse_by) <= limit:
        return Judgement("ok", basis, None, p)
    supported = p is None or p < alpha
    if worse_by < 0:
        return Judgement("improved" if supported else "ok", basis, None, p)
    what = (
        f"{metric.name} {'fell' if metric.higher_is_better else 'rose'} by "
        f"{change_text(metric, base_mean, cur_mean, tolerance.points).lstrip('+-')}"
        f" ({_value(metric, base_mean)} → {_value(metric, cur_mean)}), beyond the {tolerance} tolerance"
    )
    if not found.measured:
        return Judgement("regression", basis, f"{what}; {basis}: judged on the observed change alone", None)
    if supported:
        return Judgement("regression", basis, f"{what}; told from noise: {basis}", p)
    needed = _repeats_needed(found, alpha)
    return Judgement(
        "inconclusive", basis,
        f"{what}, but the repeats cannot tell it from noise ({basis}); {settle_text(needed)}",
        p, needed,
    )  # fmt: skip


def _repeats_needed(found: Difference, alpha: float) -> int | None:
    return repeats_for(found.value, found.sd_baseline or 0.0, found.sd_current or 0.0, alpha)


def settle_text(needed: int | None) -> str:
    """What would settle an inconclusive verdict, in words."""
    if needed is None:
        return "more than 1000 repeats per side would be needed to tell a change of this size from noise this large"
    return f"about {needed} repeats per side would settle it ({POWER:.0%} power)"


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


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


def has_value(record: dict[str, Any], key: str) -> bool:
    """An ``ok`` run that recorded a finite number under ``key``."""
    value = record.get(key)
    return record.get("status") == "ok" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def disturbed(record: dict[str, Any]) -> bool:
    """Whether the run's own step times say it was disturbed (``unstable``)."""
    return bool(record.get(schema.key("unstable")))


def sample_of(runs: list[dict[str, Any]], metric: Metric, include_unstable: bool = False) -> Sample | None:
    """``metric`` over the ``ok`` runs that recorded it; for a timed metric the disturbed runs
    are left out (and named) unless ``include_unstable``. None when no run recorded it."""
    valued = [r for r in runs if has_value(r, metric.key)]
    if not valued:
        return None
    dropped = [r for r in valued if metric.timed and not include_unstable and disturbed(r)]
    kept = [r for r in valued if r not in dropped]
    return Sample(tuple(float(r[metric.key]) for r in kept), tuple(str(r.get("run_id")) for r in dropped))


@dataclass
class Row:
    setting: str
    metric: str
    baseline: Sample | None
    current: Sample | None
    change: str
    verdict: str
    message: str | None = None
    basis: str = ""
    p_value: float | None = None
    repeats_needed: int | None = None


@dataclass(frozen=True)
class LeftOut:
    """A disturbed run left out of a timed metric."""

    side: str  # baseline or current
    setting: str
    run_id: str
    reasons: str


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    baseline_only: list[str] = field(default_factory=list)
    current_only: list[str] = field(default_factory=list)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    include_unstable: bool = False

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def inconclusive(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "inconclusive"]

    @property
    def result(self) -> str:
        """regression wins over inconclusive, which wins over ok."""
        return "regression" if self.regressions else "inconclusive" if self.inconclusive else "ok"

    @property
    def exit_code(self) -> int:
        return {"regression": EXIT_REGRESSION, "inconclusive": EXIT_INCONCLUSIVE}.get(self.result, 0)

    def to_json(self) -> dict[str, Any]:
        def sample(s: Sample | None) -> dict[str, Any] | None:
            if s is None:
                return None
            values = {"mean": s.mean, "min": s.low, "max": s.high} if s.n else {"mean": None, "min": None, "max": None}
            return {"n": s.n, **values, "left_out_unstable": list(s.left_out)}

        return {
            "result": self.result,
            "exit_code": self.exit_code,
            "regressions": len(self.regressions),
            "inconclusive": len(self.inconclusive),
            "tolerances": {name: str(t) for name, t in self.tolerances.items()},
            "unstable_runs": "included" if self.include_unstable else "left out of timed metrics",
            "comparisons": [
                {"setting": r.setting, "metric": r.metric, "baseline": sample(r.baseline), "current": sample(r.current),
                 "change": r.change, "verdict": r.verdict, "basis": r.basis, "p_value": r.p_value,
                 "repeats_needed_per_side": r.repeats_needed, "message": r.message}  # fmt: skip
                for r in self.rows
            ],
            "left_out": [{"side": x.side, "setting": x.setting, "run_id": x.run_id, "unstable_reasons": x.reasons} for x in self.left_out],
            "unmatched": {"baseline": self.baseline_only, "current": self.current_only},
        }


def _nearest_difference(key: dict[str, Any], others: list[dict[str, Any]]) -> str:
    if not others:
        return ""
    diffs = min(([f for f in key if key.get(f) != o.get(f)] for o in others), key=len)
    return f" (closest on the other side differs in: {', '.join(diffs)})"


def compare(
    baseline: list[dict[str, Any]],
    current: list[dict[str, Any]],
    tolerances: dict[str, Tolerance] | None = None,
    include_unstable: bool = False,
) -> Comparison:
    tolerances = tolerances or default_tolerances()
    base_groups, cur_groups = _group(baseline), _group(current)
    result = Comparison(tolerances=tolerances, include_unstable=include_unstable)
    for frozen, (key, runs) in cur_groups.items():
        if frozen not in base_groups:
            others = [k for k, _ in base_groups.values()]
            result.current_only.append(setting_label(key) + _nearest_difference(key, others))
            continue
        base_runs = base_groups[frozen][1]
        label = setting_label(key)
        result.rows += _status_row(label, base_runs, runs)
        for name, tol in tolerances.items():
            b, c = sample_of(base_runs, tol.metric, include_unstable), sample_of(runs, tol.metric, include_unstable)
            if b is None and c is None:
                continue
            row = _row(label, name, tol, b, c)
            if (b and b.left_out) or (c and c.left_out):
                row = _unless_disturbed_runs_say_otherwise(row, tol, sample_of(base_runs, tol.metric, True), sample_of(runs, tol.metric, True))
            result.rows.append(row)
        result.left_out += _left_out(label, base_runs, runs, tolerances, include_unstable)
    others = [k for k, _ in cur_groups.values()]
    result.baseline_only = [
        setting_label(key) + _nearest_difference(key, others) for frozen, (key, _) in base_groups.items() if frozen not in cur_groups
    ]
    return result


def _row(label: str, name: str, tol: Tolerance, b: Sample | None, c: Sample | None) -> Row:
    if b is None:
        return Row(label, name, None, c, "—", "new")
    if c is None:
        why = "no current run recorded it" + (" (target not reached?)" if "accuracy" in name else "")
        return Row(label, name, b, None, "—", "regression", f"{name}: {why}", "missing")
    if not b.n or not c.n:
        sides = [side for side, s in (("baseline", b), ("current", c)) if not s.n]
        message = (f"{name}: every {' and '.join(sides)} run of this setting was disturbed (unstable) and is left out; "
                   "rerun on a quiet machine, or pass --include-unstable to judge them anyway")  # fmt: skip
        return Row(label, name, b, c, "—", "inconclusive", message, "only disturbed runs")
    found = tol.verdict(b, c)
    change = change_text(tol.metric, b.mean, c.mean, tol.points)
    thinned = [side for side, s in (("baseline", b), ("current", c)) if s.n < 2 <= s.n + len(s.left_out)]
    if thinned and found.verdict == "regression":
        # Repeats were made, so there is noise to judge against; leaving disturbed runs out must
        # not turn them into a single run judged without uncertainty.
        message = (f"{found.message.split('; ')[0]}, but the {' and '.join(thinned)} side keeps one clean run once its "
                   "disturbed (unstable) runs are left out: too few to tell it from noise; rerun on a quiet machine, "
                   "or pass --include-unstable")  # fmt: skip
        return Row(label, name, b, c, change, "inconclusive", message, "one clean run left", found.p_value)
    return Row(label, name, b, c, change, found.verdict, found.message, found.basis, found.p_value, found.repeats_needed)


def _unless_disturbed_runs_say_otherwise(row: Row, tol: Tolerance, b: Sample | None, c: Sample | None) -> Row:
    """A change the clean runs call ok (or improved) but every run, disturbed ones included,
    puts beyond the tolerance (a regression, or inconclusive) is inconclusive: a slowdown that
    itself disturbs the step times (stalls, a shift mid-window) gets its runs flagged unstable,
    and leaving them out must not pass it as fine."""
    if row.verdict not in ("ok", "improved") or b is None or c is None or not b.n or not c.n:
        return row
    pooled = tol.verdict(b, c)
    if pooled.verdict not in ("regression", "inconclusive"):
        return row
    what = pooled.message.split("; ")[0].split(", but ")[0]
    message = (f"{what} when the disturbed (unstable) runs are counted ({pooled.basis}), but not without them "
               f"({row.basis}): the verdict hangs on those runs; rerun on a quiet machine")  # fmt: skip
    return dataclasses.replace(row, verdict="inconclusive", message=message, basis="hangs on disturbed runs")


def _left_out(label: str, base_runs: list[dict[str, Any]], runs: list[dict[str, Any]], tolerances: dict[str, Tolerance],
              include_unstable: bool) -> list[LeftOut]:  # fmt: skip
    if include_unstable or not any(t.metric.timed for t in tolerances.values()):
        return []
    return [
        LeftOut(side, label, str(r.get("run_id")), "; ".join(r.get(schema.key("unstable_reasons")) or []))
        for side, group in (("baseline", base_runs), ("current", runs))
        for r in group if r.get("status") == "ok" and disturbed(r)
    ]  # fmt: skip


def _status_row(label: str, base_runs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[Row]:
    bad = [r for r in runs if r.get("status") != "ok"]
    if not bad:
        return []
    base_ok = all(r.get("status") == "ok" for r in base_runs)
    what = ", ".join(sorted({str(r.get("status")) for r in bad}))
    message = f"{len(bad)} of {len(runs)} current run(s) did not finish ok ({what})"
    return [Row(label, "status", None, None, f"{len(runs) - len(bad)}/{len(runs)} ok", "regression" if base_ok else "ok",
                message if base_ok else None, "run status")]  # fmt: skip
