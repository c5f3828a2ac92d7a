"""The ``report``, ``compare``, ``baseline``, ``history`` and ``predict`` sub-commands of ``larsbench``.

``add_commands(subparsers)`` adds them to the main parser; each sets ``handler(args, console)``
returning the exit code. Bad input raises ``larsbench.core.errors.ConfigError`` (exit 2 in ``main``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from larsbench.core.errors import ConfigError
from larsbench.reports import predict_cli

COMPARE_EPILOG = """\
metrics, direction and default tolerance:
  throughput          higher is better   5%   (images/s)
  time_to_accuracy    lower is better    10%  (seconds to the target top-1)
  epochs_to_accuracy  lower is better    10%
  final_top1          higher is better   1pp  (absolute percentage points)
AMOUNT is relative (5% or 5) or, for final_top1, absolute points (1pp).
Verdicts: regression (worse than the tolerance, and Welch's t-test, one-sided at 4%, tells it
from the noise of the repeats; with one run on a side, or repeats without spread, the observed change
alone decides: "no uncertainty"); inconclusive (worse than the tolerance, but the repeats
cannot tell it from noise: the verdict says about how many repeats per side would settle it);
improved; ok (within the tolerance). Runs flagged unstable (disturbed step times) are left out
of throughput and time to accuracy and listed; a side with only such runs is inconclusive
(--include-unstable pools them). Runs match when every setting that defines a measurement
agrees (workload, backend, batch decomposition, recipe, precision, channels_last, compile,
...) on the same hardware (GPU or CPU model, device, nodes); the rest is listed as unmatched.
exit status: 0 ok, 1 regression, 3 inconclusive (no regression), 2 bad input
(missing/unreadable file, no records, bad --tolerance, nothing matched)."""

HISTORY_METRICS = "throughput, time_to_accuracy, final_top1, exposed_comm, comm_fraction"
HISTORY_EPILOG = f"""\
metrics ({HISTORY_METRICS}): a metric no ok run recorded has no series.
A point is one results file on one night: nights end at --night-ends o'clock UTC and are named
by the date they end on. Series are per setting (the compare key: every measurement setting,
device, hardware and node count). Runs flagged unstable (disturbed step times) are left out of
the timed metrics (--include-unstable pools them). A step counts when the level before and
after it each hold for --min-nights nights, differ by more than 4 standard errors of the nightly
noise and by more than the metric's tolerance (--tolerance, as for compare; exposed_comm and
comm_fraction 10%).
--fail-on-step, for each setting that ran on the newest night: regression when its last step
is a regression; inconclusive when its newest nights sit beyond the tolerance on the bad side
of the level before them but are not (yet) a step, or its newest night's runs were all unstable.
exit status: 0 report written (and the gate passed), 1 regression, 3 inconclusive (no
regression), 2 bad input (missing, empty or unreadable file, bad option)."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write a scaling report (Markdown, HTML, PNG) from result records")
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results.jsonl files or folders holding one")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder for report.md, report.html and the plots")
    report.add_argument("--baseline-world-size", type=int, metavar="N",
                        help="N₀ for scaling efficiency (default: the smallest world size in each group)")  # fmt: skip
    report.add_argument("--include-unstable", action="store_true",
                        help="pool runs flagged unstable into throughput and timings (default: left out and counted)")  # fmt: skip
    report.set_defaults(handler=cmd_report)

    compare = subparsers.add_parser(
        "compare", help="compare results against a baseline; exit 1 on a regression",
        epilog=COMPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    compare.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline file (from `baseline save`) or results")
    compare.add_argument("current", type=Path, metavar="CURRENT", help="results.jsonl file or folder to check")
    compare.add_argument("--tolerance", action="append", metavar="METRIC=AMOUNT", default=[],
                         help="override a metric's tolerance, e.g. throughput=3%% or final_top1=0.5pp (repeatable)")  # fmt: skip
    compare.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    compare.add_argument("--include-unstable", action="store_true",
                         help="judge runs flagged unstable with the others (default: left out of timed metrics and listed)")  # fmt: skip
    compare.set_defaults(handler=cmd_compare)

    baseline = subparsers.add_parser("baseline", help="manage baseline files for `compare`")
    actions = baseline.add_subparsers(dest="baseline_command", required=True)
    save = actions.add_parser("save", help="store the ok records of RESULTS as a baseline file")
    save.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results.jsonl files or folders holding one")
    save.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="baseline file to write (replaced atomically)")
    save.add_argument("--experiment", help="keep only this experiment's runs")
    save.add_argument("--label", metavar="GLOB", help="keep only runs whose label matches this glob")
    save.set_defaults(handler=cmd_baseline_save)

    history = subparsers.add_parser(
        "history", help="trend report over many nights: steps, what changed, and a gate (--fail-on-step)",
        epilog=HISTORY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    history.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                         help="results.jsonl files, folders holding one, or folders of such folders (one per night)")  # fmt: skip
    history.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                         help="folder for history.md, history.html, history.json and the plots")  # fmt: skip
    history.add_argument("--metric", action="append", metavar="NAME", help=f"only these metrics (repeatable): {HISTORY_METRICS}")
    history.add_argument("--tolerance", action="append", metavar="METRIC=AMOUNT", default=[],
                         help="smallest step that counts, e.g. throughput=3%% (repeatable; defaults as for compare)")  # fmt: skip
    history.add_argument("--min-nights", type=int, default=3, metavar="N", help="nights a level must hold to count (default 3, at least 2)")
    history.add_argument("--night-ends", type=int, default=12, metavar="HOUR", help="UTC hour at which one night ends (default 12; 0: calendar days)")
    history.add_argument("--fail-on-step", action="store_true",
                         help="exit 1 when the latest points of a series form a regression step, 3 when the newest nights are "
                         "beyond the tolerance but not (yet) a step")  # fmt: skip
    history.add_argument("--include-unstable", action="store_true",
                         help="count runs flagged unstable in the timed metrics (default: left out, counted in the report)")  # fmt: skip
    history.add_argument("--no-plots", action="store_true",
                         help="write history.md, .html and .json without the plots: a gate that needs the verdict only, in a fraction of the time")  # fmt: skip
    history.set_defaults(handler=cmd_history)
    predict_cli.add_command(subparsers)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from larsbench.reports.comm import load_comm
    from larsbench.reports.load import load_records_with_folders
    from larsbench.reports.report import build_report

    if args.baseline_world_size is not None and args.baseline_world_size < 1:
        raise ConfigError("--baseline-world-size", "must be a positive number of workers")
    comm = load_comm(args.results)
    records, folders = load_records_with_folders(args.results, missing_ok=bool(comm))
    try:
        files = build_report(records, args.output, [str(p) for p in args.results], args.baseline_world_size, folders, comm,
                             args.include_unstable)  # fmt: skip
    except OSError as exc:
        raise ConfigError("--output", f"cannot write the report to {args.output} ({_why(exc)}); choose a writable folder with room for it") from None
    extra = f" and {len(comm)} collective measurement(s)" if comm else ""
    console.print(f"report of {len(records)} run(s){extra}: {files.markdown}, {files.html} and {len(files.images)} plot(s) in {args.output}")
    return 0


VERDICT_STYLE = {"regression": "bold red", "inconclusive": "bold yellow", "improved": "green", "new": "cyan"}


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from larsbench.reports.compare import compare, parse_tolerances
    from larsbench.reports.load import load_records

    tolerances = parse_tolerances(args.tolerance)
    baseline = load_records([args.baseline], "BASELINE")
    current = load_records([args.current], "CURRENT")
    result = compare(baseline, current, tolerances, args.include_unstable)
    if not result.rows:
        raise ConfigError("CURRENT", f"no run in {args.current} matches a run in {args.baseline} "
                          f"({len(result.current_only)} current, {len(result.baseline_only)} baseline setting(s) unmatched)")  # fmt: skip
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return result.exit_code
    table = Table(title=f"{args.current} vs baseline {args.baseline}", title_justify="left")
    for name, justify in [("setting", "left"), ("metric", "left"), ("baseline", "right"), ("current", "right"),
                          ("change", "right"), ("basis", "left"), ("verdict", "left")]:  # fmt: skip
        table.add_column(name, justify=justify)
    for row in result.rows:
        style = VERDICT_STYLE.get(row.verdict, "")
        verdict = row.verdict
        if row.verdict == "inconclusive" and row.p_value is not None:
            verdict += f" (≈{row.repeats_needed} repeats/side)" if row.repeats_needed else " (> 1000 repeats/side)"
        verdict = f"[{style}]{escape(verdict)}[/]" if style else escape(verdict)
        table.add_row(escape(row.setting), row.metric, _sample_text(row.metric, row.baseline), _sample_text(row.metric, row.current),
                      row.change, escape(row.basis), verdict)  # fmt: skip
    console.print(table)
    for row in result.regressions + result.inconclusive:
        style = VERDICT_STYLE[row.verdict]
        console.print(f"[{style}]{row.verdict}[/]: {escape(row.setting)}: {escape(row.message or '')}", soft_wrap=True)
    for x in result.left_out:
        console.print(f"left out (unstable, {x.side}): {escape(x.setting)}: run {escape(x.run_id)}: {escape(x.reasons)}", soft_wrap=True)
    for side, labels in (("baseline", result.baseline_only), ("current", result.current_only)):
        for label in labels:
            console.print(f"unmatched ({side} only, not compared): {escape(label)}")
    tol = ", ".join(str(t) for t in tolerances.values())
    console.print(f"{len(result.regressions)} regression(s), {len(result.inconclusive)} inconclusive in {len(result.rows)} "
                  f"comparison(s); tolerances: {tol}" + ("; unstable runs included" if args.include_unstable else ""))  # fmt: skip
    return result.exit_code


def _sample_text(metric: str, sample) -> str:
    if sample is None:
        return "—"
    dropped = f" (+{len(sample.left_out)} unstable left out)" if sample.left_out else ""
    if not sample.n:
        return "none clean" + dropped
    scale, fmt = (100, ".2f") if metric == "final_top1" else (1, ".4g")
    text = format(sample.mean * scale, fmt) + ("%" if metric == "final_top1" else "")
    if sample.n > 1:
        text += f" (n={sample.n}, {format(sample.low * scale, fmt)}–{format(sample.high * scale, fmt)})"
    return text + dropped


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from larsbench.reports.history import METRICS, build_history
    from larsbench.reports.history_report import write_history
    from larsbench.reports.history_store import load_store

    unknown = [m for m in args.metric or [] if m not in METRICS]
    if unknown:
        raise ConfigError("--metric", f"{unknown[0]!r} is not a metric; choose from {', '.join(METRICS)}")
    if args.min_nights < 2:
        raise ConfigError("--min-nights", "must be at least 2: one night is an outlier, not a level")
    if not 0 <= args.night_ends <= 23:
        raise ConfigError("--night-ends", "must be an hour from 0 to 23 (UTC)")
    store = load_store(args.results, args.night_ends)  # unreadable lines: one notice per file
    if not store.nights:
        raise ConfigError("RESULTS", f"none of the {store.undated} record(s) has a provenance.timestamp_utc; a history needs to know when each run ran")
    history = build_history(store, args.metric, args.tolerance, args.min_nights, args.include_unstable)
    try:
        files = write_history(history, args.output, [str(p) for p in args.results], plots=not args.no_plots)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write the report to {args.output} ({_why(exc)}); choose a writable folder with room for it") from None
    findings = history.findings
    console.print(
        f"history of {store.records} run(s) on {len(store.nights)} night(s), {len(store.settings)} setting(s): "
        f"{len(findings)} step(s), {sum(f.regression for f in findings)} regression(s); "
        f"{files.markdown}, {files.html}, {files.json} and {len(files.images)} plot(s)"
    )
    for finding in findings:
        kind = "[bold red]regression[/]" if finding.regression else "[green]improvement[/]"
        console.print(f"{kind}: {escape(finding.setting)}: {escape(finding.message())}")
    if store.undated:
        console.print(f"{store.undated} record(s) without a timestamp left out")
    if not args.fail_on_step:
        return 0
    gate = history.gate()
    newest = escape(str(history.newest_date))
    for item in gate:
        style = "bold red" if item.verdict == "regression" else "bold yellow"
        console.print(f"[{style}]gate {item.verdict}[/]: {escape(item.setting)}: {escape(item.message)}", soft_wrap=True)
    result = history.gate_result()
    if result == "regression":
        count = sum(item.verdict == "regression" for item in gate)
        console.print(f"[bold red]gate failed[/]: {count} series end in a regression step (newest night {newest})")
        return 1
    if result == "inconclusive":
        console.print(f"[bold yellow]gate inconclusive[/]: {len(gate)} series' newest nights are beyond the tolerance but not "
                      f"(yet) a step (newest night {newest})")  # fmt: skip
        return 3
    console.print(f"gate passed: no series ends in a regression step or beyond its tolerance (newest night {newest})")
    return 0


def cmd_baseline_save(args: argparse.Namespace, console: Console) -> int:
    from larsbench.reports.baseline import save_baseline, select
    from larsbench.reports.load import load_records

    records = load_records(args.results)
    chosen = select(records, args.experiment, args.label)
    if not chosen:
        raise ConfigError("RESULTS", f"none of the {len(records)} record(s) is an ok run matching the selection; nothing to save")
    try:
        path = save_baseline(chosen, args.output)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write {args.output} ({_why(exc)}); choose a writable file name in a folder with room for it") from None
    skipped = len(records) - len(chosen)
    console.print(f"saved {len(chosen)} ok run(s) to {path}" + (f" ({skipped} not ok or not selected, left out)" if skipped else ""))
    return 0


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def report_after_run(output: Path, console: Console) -> None:
    """The scaling report of a run's results folder, into ``OUTPUT/report`` (every run that
    folder holds, earlier ones included)."""
    from larsbench.reports.comm import load_comm
    from larsbench.reports.load import load_records_with_folders
    from larsbench.reports.report import build_report

    target = output / "report"
    try:
        records, folders = load_records_with_folders([output])
        files = build_report(records, target, [str(output)], None, folders, load_comm([output]))
    except (ConfigError, OSError) as exc:
        console.print(f"no report written: {escape(str(exc))}")
        return
    console.print(f"report of {len(records)} run(s): {files.html} ({len(files.images)} plot(s) beside it)")
