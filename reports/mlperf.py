"""The runs held against MLPerf Training's own tools: MLCommons' compliance checker on each
event log, and the result summarizer's score (olympic mean of time to train).

- A ResNet-50 run's log declares ``submission_benchmark: resnet`` and is checked with the
  checker's own rules (ruleset 4.0.0, the last with ResNet: common, then the division's, then
  ResNet's). Other models have no MLPerf benchmark, so their logs are checked against the
  common rules alone: the same ruleset's ``common.yaml`` with the one step that requires a
  benchmark name removed (its division step keeps setting the allowed compile time).
- The score is the summarizer's: time to train per run, the olympic mean over the required
  number of runs (``benchmark_meta``: 5 for ResNet; ResNet's count is used for every model), a
  run that did not reach the target dropped as the worst, and no score with more than one such.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RULESET = "4.0.0"
BENCHMARKS = {"resnet50": "resnet"}
REFERENCE_BENCHMARK = "resnet"  # its run count and dropping rule stand in for models MLPerf lacks


@dataclass(frozen=True)
class Compliance:
    passed: bool
    rules: str  # what the log was checked against
    output: str  # the checker's own messages


def _package_dir() -> Path:
    from mlperf_logging import compliance_checker

    return Path(compliance_checker.__file__).parent


def _common_rules_only() -> Path:
    """The ruleset's common.yaml, minus the step that makes a benchmark name compulsory."""
    rules = yaml.safe_load((_package_dir() / f"training_{RULESET}" / "common.yaml").read_text())
    for rule in rules:
        key = rule.get("KEY") or {}
        if key.get("NAME") == "submission_division":
            key["POST"] = " s['compile_time_mins'] = 240 if v['value'] == 'open' else 30 "
    target = Path(tempfile.gettempdir()) / f"larsbench-mlperf-{RULESET}-common-only.yaml"
    target.write_text(yaml.safe_dump(rules))
    return target


def check_event_log(path: Path, model: str | None) -> Compliance:
    """Run MLCommons' compliance checker (in this process) on one event log."""
    from mlperf_logging.compliance_checker import mlp_compliance

    if model in BENCHMARKS:
        config, rules = f"training_{RULESET}/common.yaml", f"MLPerf Training {RULESET} rules ({BENCHMARKS[model]})"
    else:
        config, rules = str(_common_rules_only()), f"MLPerf Training {RULESET} common rules"
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        mlp_compliance.enqueued_configs.clear()
        checker = mlp_compliance.make_checker("training", RULESET, quiet=True, werror=False)
        with contextlib.redirect_stdout(io.StringIO()):
            passed = bool(checker.check_file(str(path), config))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    return Compliance(passed, rules, captured.getvalue())


@dataclass(frozen=True)
class Score:
    minutes: float | None  # None: too few runs, or too many that did not converge
    runs: int
    required: int
    not_converged: int
    note: str


def required_runs(model: str | None) -> int:
    from mlperf_logging.benchmark_meta import get_result_file_counts

    return get_result_file_counts("training")[BENCHMARKS.get(model or "", REFERENCE_BENCHMARK)]


def score(times_to_train_sec: list[float | None], model: str | None) -> Score:
    """The summarizer's score of one setting's runs (None entries: did not reach the target)."""
    from mlperf_logging.result_summarizer.result_summarizer import _compute_olympic_average

    required = required_runs(model)
    minutes = [t / 60 for t in times_to_train_sec if t is not None]
    dropped = len(times_to_train_sec) - len(minutes)
    if len(times_to_train_sec) < required:
        return Score(None, len(times_to_train_sec), required, dropped, f"too few runs: {len(times_to_train_sec)} of the {required} MLPerf requires")
    if dropped > 1:
        return Score(None, len(times_to_train_sec), required, dropped, f"{dropped} runs did not reach the target (MLPerf allows 1)")
    value = _compute_olympic_average(sorted(minutes), dropped, 1)
    note = "olympic mean" + (", the run that did not converge dropped as the slowest" if dropped else "")
    return Score(value, len(times_to_train_sec), required, dropped, note)


def score_rows(summary_groups: dict[str, list[dict[str, Any]]]) -> list[tuple[str, Score]]:
    """(setting label, score) for every setting with a target."""
    out = []
    for label, runs in summary_groups.items():
        if not runs or runs[0].get("target_top1") is None:
            continue
        times = [r.get("time_to_accuracy_sec") if r.get("status") == "ok" else None for r in runs]
        out.append((label, score(times, runs[0].get("model"))))
    return out


def mlperf_blocks(runs: list[dict[str, Any]], folders: dict[str, Path]) -> list:
    """The report's MLPerf section for one workload: each event log's compliance, and the
    summarizer's score per setting with a target."""
    from larsbench.reports.load import setting_label, settings
    from larsbench.reports.render import Bullets, Heading, Table, Text

    blocks: list = [Heading("MLPerf", 3)]
    checked, failures = 0, []
    for r in runs:
        log = r.get("event_log")
        folder = folders.get(str(r.get("run_id")))
        if not log or folder is None or not (folder / log).is_file():
            continue
        result = check_event_log(folder / log, r.get("model"))
        checked += 1
        if not result.passed:
            first = next((line for line in result.output.splitlines() if "Required" in line or "failed" in line.lower()), "see the log")
            failures.append(f"`{r['run_id']}` ({result.rules}): {first}")
    if checked:
        blocks.append(Text(
            f"MLCommons' compliance checker on the event logs: {checked - len(failures)} of {checked} pass "
            f"(ResNet-50 runs: the ResNet rules of ruleset {RULESET}; other models: its common rules)."
        ))  # fmt: skip
        if failures:
            blocks.append(Bullets(failures))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(setting_label(settings(r)), []).append(r)
    rows = [
        [label, f"{s.runs}/{s.required}", str(s.not_converged), "—" if s.minutes is None else f"{s.minutes:.3g}", s.note]
        for label, s in score_rows(groups)
    ]
    if rows:
        blocks.append(Table(["setting", "runs / required", "not converged", "score (min)", "how"], rows, (1, 2, 3)))
    if not checked and not rows:
        return []
    return blocks
