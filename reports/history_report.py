"""The history report: ``history.md``, a self-contained ``history.html`` (plots inlined), the
plots as PNG, and ``history.json`` (series, steps and the gate's verdict, for other tools)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.core.files import whole_folder
from larsbench.reports import history_plots
from larsbench.reports.history import METRICS, Change, Finding, History, Series, changes_text, provenance_changes
from larsbench.reports.history_store import SettingRuns
from larsbench.reports.render import Block, Bullets, Heading, Image, Table, Text, to_html, to_markdown

STEP_HEADERS = ["setting", "metric", "first bad night", "last good night", "change", "level before → after",
                "nights at the new level", "what changed (last good → first bad)"]  # fmt: skip
CHANGE_ROWS = 30  # per setting; the newest
PLOT_NAME = re.compile(r"s\d+-(" + "|".join(METRICS) + r")\.png")


@dataclass
class HistoryFiles:
    markdown: Path
    html: Path
    json: Path
    images: list[Path]


def night_changes(runs: SettingRuns) -> dict[int, list[Change]]:
    """Night index → what changed since the setting's previous night (nights with a change)."""
    out: dict[int, list[Change]] = {}
    previous = None
    for index, night_runs in runs.by_night.items():
        if previous is not None:
            changes = provenance_changes(runs.by_night[previous], night_runs)
            if changes:
                out[index] = changes
        previous = index
    return out


def write_history(history: History, out_dir: Path, sources: list[str], plots: bool = True) -> HistoryFiles:
    """The report's files in ``out_dir``, written whole or not at all (``core.files.whole_folder``);
    ``plots=False``: the text and JSON only (drawing is most of a report's time)."""
    out_dir = Path(out_dir)
    with whole_folder(out_dir) as staging:
        files = _write(history, staging, sources, plots)
    kept = {p.name for p in files.images}
    for old in out_dir.glob("s*-*.png"):  # a nightly report folder is rewritten: no stale plots
        if PLOT_NAME.fullmatch(old.name) and old.name not in kept:
            old.unlink()
    return HistoryFiles(*(out_dir / p.name for p in (files.markdown, files.html, files.json)), [out_dir / p.name for p in files.images])


def _write(history: History, out_dir: Path, sources: list[str], plots: bool) -> HistoryFiles:
    blocks = _overview(history, sources) + _steps(history)
    images: list[Path] = []
    by_setting: dict[str, list[Series]] = {}
    for series in history.series:
        by_setting.setdefault(series.runs.key, []).append(series)
    for number, runs in enumerate(history.store.settings, start=1):
        prefix = out_dir / f"s{number}" if plots else None
        blocks += _setting_blocks(history, runs, by_setting.get(runs.key, []), prefix, images, number)
    md, html, js = out_dir / "history.md", out_dir / "history.html", out_dir / "history.json"
    md.write_text(to_markdown(blocks, out_dir), encoding="utf-8")
    html.write_text(to_html(blocks, "larsbench regression history"), encoding="utf-8")
    js.write_text(json.dumps(history_json(history), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return HistoryFiles(md, html, js, images)


def _listing(items: list[str], head: int = 3, tail: int = 2) -> str:
    if len(items) <= head + tail + 1:
        return ", ".join(items)
    return ", ".join(items[:head]) + f", … ({len(items) - head - tail} more), " + ", ".join(items[-tail:])


def _overview(history: History, sources: list[str]) -> list[Block]:
    store = history.store
    statuses = ", ".join(f"{status} {n}" for status, n in store.statuses.most_common())
    nights = store.nights
    hardware = Counter(str(s.settings.get("hardware")) for s in store.settings)
    recorded = sorted({s.metric.name for s in history.series}, key=list(METRICS).index)
    absent = [name for name in METRICS if name not in recorded]
    findings = history.findings
    regressions = sum(f.regression for f in findings)
    gate = history.gate()
    regressions_held = sum(item.verdict == "regression" for item in gate)
    verdict = {"regression": f"regression: {regressions_held} series end in a regression step",
               "inconclusive": f"inconclusive: {len(gate)} series' newest nights are beyond the tolerance but not yet a step",
               "ok": "ok"}[history.gate_result()]  # fmt: skip
    disturbed = sum(p.left_out for s in history.series for p in s.points)
    items = [
        f"Sources: {_listing([f'`{s}`' for s in sources])} ({len(store.sources)} results file(s))",
        f"Records: {store.records} ({statuses}) on {len(nights)} night(s)"
        + (f", {nights[0].label} to {nights[-1].label}" if nights else ""),
        f"Settings: {len(store.settings)} on {len(hardware)} hardware signature(s) ({', '.join(sorted(hardware))})",
        f"Series: {len(history.series)} ({', '.join(recorded) or 'none'})"
        + (f"; no run recorded {', '.join(absent)}" if absent else ""),
        f"Steps: {regressions} regression(s), {len(findings) - regressions} improvement(s)",
        f"Gate (`--fail-on-step`): {verdict}",
        "Unstable runs: " + ("included (`--include-unstable`)" if history.include_unstable else
                             f"left out of the timed metrics' nightly means ({disturbed} value(s) left out)"),
    ]  # fmt: skip
    for path, count in store.unreadable.items():
        items.append(f"{count} unreadable line(s) skipped in `{path}`")
    if store.undated:
        items.append(f"{store.undated} record(s) without a timestamp left out")
    tol = ", ".join(str(t) for t in history.tolerances.values())
    blocks: list[Block] = [
        Heading("Regression history", 1),
        Bullets(items),
        Text(
            "Each point is one results file on one night (nights end at the `--night-ends` hour UTC and "
            "are named by the date they end on): the mean of that night's `ok` runs of the setting, with "
            "the min–max of its repeats as a band. Settings are the like-for-like key of `larsbench "
            "compare` (every measurement setting, device, hardware and node count), so runs of different "
            "clusters never share a series. A step is a persistent change of level found by PELT "
            "(ruptures) with a penalty scaled by the series' noise (from the median absolute deviation of "
            "successive nights); it counts when both levels hold for at least "
            f"{history.min_nights} nights, their medians differ by more than 4 standard errors and by "
            f"more than the metric's tolerance ({tol}). A single odd night is not a step. Runs flagged "
            "unstable (disturbed step times) are left out of throughput, time to accuracy and communication. "
            "The gate says *regression* when a setting that ran on the newest night has a regression as its "
            "last step, and *inconclusive* when its newest nights sit beyond the tolerance on the bad side "
            "of the level before them without being a step yet (too few nights, or too much noise)."
        ),
    ]
    if gate:
        blocks.append(Heading("Gate"))
        blocks.append(Table(["setting", "metric", "verdict", "why"], [[i.setting, i.series.metric.name, i.verdict, i.message] for i in gate]))
    return blocks


def _steps(history: History) -> list[Block]:
    findings = history.findings
    if not findings:
        return [Heading("Steps"), Text("No persistent step in any series.")]
    rows = [_finding_row(f) for f in findings]
    return [Heading("Steps"), Table(STEP_HEADERS, rows, (4, 6))]


def _finding_row(f: Finding) -> list[str]:
    kind = "regression" if f.regression else "improvement"
    return [f.setting, f.metric.name, f.first_bad.label, f.last_good.label, f"{f.size} ({kind})", f.levels(),
            str(f.step.nights_after), changes_text(f.changes)]  # fmt: skip


def _setting_blocks(
    history: History, runs: SettingRuns, series: list[Series], prefix: Path | None, images: list[Path], number: int
) -> list[Block]:
    """The setting's section; its plots drawn to ``prefix``-METRIC.png, none where ``prefix`` is None."""
    nights = [history.store.nights[i] for i in runs.by_night]
    statuses = Counter(str(r.get("status")) for night in runs.by_night.values() for r in night)
    blocks: list[Block] = [
        Heading(f"Setting {number}: {runs.label}"),
        Bullets([
            f"Ran on {len(nights)} night(s), {nights[0].label} to {nights[-1].label}; "
            f"runs: {', '.join(f'{s} {n}' for s, n in statuses.most_common())}",
            *(f"{s.metric.name}: {s.note}" for s in series if s.note),
            *(f"{s.metric.name}: {len(s.findings)} step(s); {s.noise_text()}" for s in series if s.noise is not None),
            *(f"{s.metric.name}: {len(s.disturbed)} night(s) whose runs were all disturbed (unstable), left out"
              for s in series if s.disturbed),
        ]),
    ]  # fmt: skip
    if not series:
        return blocks + [Text("No `ok` run recorded any of the chosen metrics.")]
    changed = night_changes(runs)
    marked = {i: c for i, c in changed.items() if any(x.what != "git commit" for x in c)}
    for s in series if prefix is not None else ():
        path = history_plots.plot_series(s, marked, Path(f"{prefix}-{s.metric.name}.png"))
        images.append(path)
        blocks.append(Image(path, f"{s.metric.name} per night: {runs.label}"))
    if changed:
        newest = list(changed.items())[-CHANGE_ROWS:]
        rows = [[history.store.nights[i].label, changes_text(c)] for i, c in newest]
        left = len(changed) - len(newest)
        blocks += [
            Heading("What changed between nights", 4),
            Text("Provenance differences from the setting's previous night" + (f" (the newest {len(newest)}; {left} earlier not shown)." if left else ".")),
            Table(["night", "changed since the previous night"], rows),
        ]  # fmt: skip
    return blocks


def history_json(history: History) -> dict[str, Any]:
    def finding(f: Finding) -> dict[str, Any]:
        return {
            "setting": f.setting, "metric": f.metric.name, "regression": f.regression, "size": f.size,
            "before": f.step.before, "after": f.step.after, "z": round(f.step.z, 2),
            "first_bad": f.first_bad.label, "last_good": f.last_good.label,
            "nights_before": f.step.nights_before, "nights_after": f.step.nights_after,
            "changes": [{"what": c.what, "before": c.before, "after": c.after} for c in f.changes],
        }  # fmt: skip

    gate = history.gate()
    return {
        "gate": {
            "result": history.gate_result(),
            "fails": any(i.verdict == "regression" for i in gate),
            "regressions": [finding(i.finding) for i in gate if i.finding is not None],
            "inconclusive": [{"setting": i.setting, "metric": i.series.metric.name, "message": i.message}
                             for i in gate if i.verdict == "inconclusive"],
        },  # fmt: skip
        "unstable_runs": "included" if history.include_unstable else "left out of timed metrics",
        "nights": [
            {"index": n.index, "label": n.label, "date": n.date, "source": str(n.source), "first_utc": n.first_utc}
            for n in history.store.nights
        ],
        "series": [
            {
                "setting": s.runs.label, "settings": s.runs.settings, "metric": s.metric.name,
                "points": [{"night": p.night.label, "mean": p.mean, "min": p.low, "max": p.high, "n": len(p.values),
                            "left_out_unstable": p.left_out}
                           for p in s.points],
                "missing": [n.label for n in s.missing], "disturbed": [n.label for n in s.disturbed],
                "note": s.note, "noise": s.noise,
                "steps": [finding(f) for f in s.findings],
            }
            for s in history.series
        ],  # fmt: skip
        "unreadable_lines": {str(p): n for p, n in history.store.unreadable.items()},
        "undated_records": history.store.undated,
    }
