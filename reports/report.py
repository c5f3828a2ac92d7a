"""Assemble the scaling report: tables and plots per workload, written as report.md,
a self-contained report.html and PNG files in one folder."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from larsbench.core.files import whole_folder
from larsbench.reports import plots
from larsbench.reports.attribution import PARTS, attribute
from larsbench.reports.comm import comm_blocks
from larsbench.reports.mlperf import mlperf_blocks
from larsbench.reports.load import distinguishing_settings, records_frame, summarize_repeats
from larsbench.reports.memory import memory_blocks
from larsbench.reports.predict import throughput_at_scale
from larsbench.reports.predict_comm import networks as comm_networks
from larsbench.reports.predict_rcp import rcp_blocks
from larsbench.reports.render import Block, Bullets, Heading, PlotSpec, Table, Text, draw_plots, to_html, to_markdown
from larsbench.reports.roofline import roofline_blocks, rooflines
from larsbench.reports.scaling import KINDS, Series, efficiency_index, scaling_series
from larsbench.reports.study_report import study_blocks, telemetry_blocks

MAIN_HEADERS = [
    "backend", "recipe", "N", "global batch (N×micro×acc)", "runs ok/all", "images/s mean [95% CI]",
    "CV", "olympic mean", "weak eff.", "strong eff.", "final top-1", "time to target (s)",
    "epochs to target", "status",
]  # fmt: skip
MAIN_RIGHT = (2, 4, 5, 6, 7, 8, 9, 10, 11, 12)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    images: list[Path]


def _num(value: Any, pattern: str = ".1f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value * scale, pattern)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _eff_cell(index: dict[str, tuple[float | None, Series]], key: str, world_size: int) -> str:
    if key not in index:
        return "—"
    value, series = index[key]
    if series.note:
        return "no baseline"
    if value is None:
        return "—"
    return f"{value:.2f}" + (" (N₀)" if world_size == series.baseline_world_size else "")


def _tta_cell(row: pd.Series) -> str:
    if pd.isna(row["target_top1"]):
        return "no target"
    if row["ok_runs"] == 0:
        return "—"
    if pd.isna(row["final_top1"]):
        return "no evaluation"  # e.g. synthetic data has no validation set
    if row["tta_reached"] == 0:
        return f"not reached ({row['target_top1'] * 100:g}%)"
    text = _num(row["time_to_accuracy_sec"])
    return text if row["tta_reached"] == row["ok_runs"] else f"{text} ({row['tta_reached']}/{row['ok_runs']} reached)"


def _status_cell(row: pd.Series) -> str:
    text = row["status"]
    if row["diverged_at"]:
        text += f" (diverged at step {row['diverged_at']})"
    if row["errors"]:
        text += f": {row['errors']}"
    if row["unstable_runs"]:
        text += f"; unstable ×{row['unstable_runs']}" + (" (left out of timings)" if row["unstable_left_out"] else "")
    if row["stragglers"]:
        text += "; straggler"
    return text


def _throughput_cell(row: pd.Series) -> str:
    text = _num(row["throughput_mean"])
    if row["throughput_n"] > 1:
        text += f" [{_num(row['throughput_ci_low'])}–{_num(row['throughput_ci_high'])}]"
    if row["timed_disturbed_only"] and row["throughput_n"]:
        text += " (every run disturbed)"
    return text


def main_table(summary: pd.DataFrame, weak: list[Series], strong: list[Series]) -> Table:
    """Backend × world size × global batch: throughput over repeats, efficiency, accuracy, status."""
    weak_index, strong_index = efficiency_index(weak), efficiency_index(strong)
    others = distinguishing_settings(summary)
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            str(r["backend"]), str(r["recipe"]) + others.get(r["settings_key"], ""), str(r["world_size"]),
            f"{r['global_batch_size']} = {r['world_size']}×{r['micro_batch_size']}×{r['accumulation_steps']}",
            f"{r['ok_runs']}/{r['runs']}", _throughput_cell(r), _num(r["throughput_cv"], ".1%"),
            _num(r["throughput_olympic"]),
            _eff_cell(weak_index, r["settings_key"], r["world_size"]),
            _eff_cell(strong_index, r["settings_key"], r["world_size"]),
            _num(r["final_top1"], ".1f", 100) + ("%" if not pd.isna(r["final_top1"]) else ""),
            _tta_cell(r), _num(r["epochs_to_accuracy"], ".2g"), _status_cell(r),
        ])  # fmt: skip
    return Table(MAIN_HEADERS, rows, MAIN_RIGHT)


def flagged_notes(summary: pd.DataFrame) -> list[str]:
    """Why a setting's runs were flagged unstable, which rank the others waited for, and
    whether the backends compared here moved their gradients over different transports."""
    notes = []
    transports = {
        backend: sorted({t for t in part["transport"] if isinstance(t, str)})
        for backend, part in summary.groupby("backend", sort=True)
    }
    if len({tuple(v) for v in transports.values() if v}) > 1:
        listed = "; ".join(f"{b}: {', '.join(t)}" for b, t in transports.items() if t)
        notes.append(f"Not like for like: the backends here used different transports ({listed}).")
    for _, r in summary.iterrows():
        where = f"{r['backend']} · {r['recipe']} · N={r['world_size']} · B={r['global_batch_size']}"
        if r["unstable_runs"]:
            policy = (
                "left out of throughput and the other timings" if r["unstable_left_out"]
                else "every ok run was, so the timings shown are theirs" if r["timed_disturbed_only"]
                else "included (--include-unstable)"
            )  # fmt: skip
            notes.append(f"Unstable ({r['unstable_runs']} of {r['runs']} run(s); {policy}), {where}: {r['unstable_reasons']}.")
        if r["stragglers"]:
            notes.append(f"Straggler, {where}: {r['stragglers']}.")
    return notes


def efficiency_blocks(series: list[Series]) -> list[Block]:
    blocks: list[Block] = []
    for kind, spec in KINDS.items():
        mine = [s for s in series if s.kind == kind]
        scaling = [s for s in mine if s.scales]
        single = len(mine) - len(scaling)
        blocks.append(Heading(spec.title[0].upper() + spec.title[1:], 4))
        if not scaling:
            blocks.append(Text(f"Not computed: no {spec.fixed_label} was run at more than one world size."))
            continue
        rows = []
        for s in scaling:
            for p in s.points:
                rows.append([s.label, str(s.baseline_world_size), str(p.world_size), _num(p.throughput_mean),
                             _num(p.ideal), _num(p.efficiency, ".2f")])  # fmt: skip
        blocks.append(Table(["series", "N₀", "N", "images/s", "ideal images/s", "efficiency"], rows, (1, 2, 3, 4, 5)))
        notes = [f"{s.label}: {s.note}" for s in scaling if s.note]
        if single:
            notes.append(f"{single} other setting(s) ran at a single world size for their {spec.fixed_label}: no {kind} scaling to show.")
        if notes:
            blocks.append(Bullets(notes))
    return blocks


def attribution_blocks(series: list[Series], summary: pd.DataFrame, workload: str, prefix: Path, images: list[Path]) -> list[Block]:
    """Where the efficiency lost from N₀ to N goes: data wait, compute, exposed communication."""
    found = attribute([s for s in series if s.scales], summary)
    blocks: list[Block] = [Heading("Where scaling efficiency goes", 4)]
    if not found:
        blocks.append(Text("Not computed: no scaling group has the step-time split (compute probe) at N₀ and at a larger N."))
        return blocks
    rows = []
    for a in found:
        cells = [f"{a.lost_sec[key] * 1e3:+.1f} ({_num(a.share(key), '.0%')})" for key, _, _ in PARTS]
        rows.append([a.series.label, str(a.world_size), _num(a.efficiency, ".2f"), _num(a.step_sec * 1e3),
                     _num(a.ideal_sec * 1e3), *cells])  # fmt: skip
    headers = ["series", "N", "efficiency", "step ms", "ideal ms", *(f"{name} ms (share)" for _, _, name in PARTS)]
    blocks.append(Table(headers, rows, (1, 2, 3, 4, 5, 6, 7)))
    blocks.append(Bullets([a.sentence() for a in found]))
    drawn, _ = draw_plots(prefix, [("attribution", "where scaling efficiency goes",
                                    lambda p: plots.plot_attribution(found, workload, p), "")], images)  # fmt: skip
    blocks.extend(drawn.values())
    return blocks


def non_ok_table(frame: pd.DataFrame) -> Table | None:
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return None
    rows = [
        [str(r["run_id"]), str(r["label"]), str(r["status"]),
         "—" if pd.isna(r["diverged_at_step"]) else str(int(r["diverged_at_step"])),
         r["error"] if isinstance(r["error"], str) and r["error"] else "—"]
        for _, r in bad.iterrows()
    ]  # fmt: skip
    return Table(["run id", "label", "status", "diverged at step", "error"], rows)


def _overview(records: list[dict[str, Any]], frame: pd.DataFrame, sources: list[str], n0: int | None) -> list[Block]:
    counts = frame["status"].value_counts()
    stamps = sorted(t for t in frame["timestamp_utc"] if isinstance(t, str))
    provs = [r.get("provenance") or {} for r in records]
    commits = sorted({p.get("git_commit") or "unknown" for p in provs})
    versions = sorted({str(p.get("larsbench")) for p in provs if p.get("larsbench")})
    items = [
        f"Sources: {', '.join(f'`{s}`' for s in sources)}",
        f"Runs: {len(frame)} ({', '.join(f'{s} {n}' for s, n in counts.items())}) in {frame['workload_key'].nunique()} workload(s)",
        f"larsbench {', '.join(versions) or 'unknown'}; git commit(s): {', '.join(c[:12] for c in commits)}",
    ]
    if stamps:
        items.append(f"Recorded {stamps[0]} to {stamps[-1]}")
    items.append(f"Efficiency baseline N₀: {f'{n0} (--baseline-world-size)' if n0 else 'the smallest world size in each scaling group'}")
    return [
        Heading("Scaling report", 1),
        Bullets(items),
        Text(
            "Repeats are runs whose settings match except seed, repeat index and run id; throughput shows "
            "the mean over a setting's `ok` repeats with its 95% confidence interval (Student's t), the "
            "coefficient of variation and, from 5 repeats on, MLPerf's olympic mean (without the fastest "
            "and the slowest run). A run is *unstable* when its own step times say so (spread, stalls, a "
            "shift mid-window, an unsettled warm-up): its timings (throughput, step times and split, time to "
            "accuracy) are left out of its setting's figures and counted in the status column, unless every ok "
            "run of the setting was unstable (then the figures are theirs, marked) or the report was asked to "
            "`--include-unstable`; accuracy keeps every run. A *straggler* is a rank the others waited for. "
            "Accuracy intervals say what their spread is: seed-to-seed when every repeat ran its own seed, "
            "run-to-run when all ran one seed (nondeterminism only). Efficiency(N) = T(N) / (N/N₀ · T(N₀)) "
            "against the baseline world size N₀ of its group: weak scaling holds the per-worker batch "
            "(micro × accumulation) fixed, strong scaling the global batch. Workloads (model, data, image "
            "size, device and hardware) are never mixed in one table or scaling group."
        ),
    ]


def build_report(
    records: list[dict[str, Any]],
    out_dir: Path,
    sources: list[str],
    baseline_world_size: int | None = None,
    folders: dict[str, Path] | None = None,
    comm: list[dict[str, Any]] | None = None,
    include_unstable: bool = False,
    draw_workers: int | None = None,
) -> ReportFiles:
    """``folders``: run id → folder of its results file, against which a record's relative
    ``telemetry`` path resolves (see ``load_records_with_folders``); else the working directory.
    ``include_unstable``: pool runs flagged unstable into the timings (see ``summarize_repeats``).
    ``draw_workers``: plots drawn at a time (``plots.rendering_in_parallel``; default one per core).
    The folder is written whole or not at all (``core.files.whole_folder``)."""
    out_dir = Path(out_dir)
    with whole_folder(out_dir) as staging:
        images: list[Path] = []
        with plots.rendering_in_parallel(draw_workers):  # every plot is written when this ends
            blocks = _blocks(records, staging, sources, baseline_world_size, folders, comm, include_unstable, images)
        files = _write(blocks, staging, images)
    return ReportFiles(
        out_dir / files.markdown.name, out_dir / files.html.name, [out_dir / p.relative_to(staging) for p in files.images]
    )


def _blocks(
    records: list[dict[str, Any]],
    out_dir: Path,
    sources: list[str],
    baseline_world_size: int | None,
    folders: dict[str, Path] | None,
    comm: list[dict[str, Any]] | None,
    include_unstable: bool,
    images: list[Path],
) -> list[Block]:
    if not records:
        blocks = [Heading("Scaling report", 1), Bullets([f"Sources: {', '.join(f'`{s}`' for s in sources)}", "No training runs."])]
        return blocks + comm_blocks(comm or [], [], out_dir / "comm", images)
    frame = records_frame(records)
    summary = summarize_repeats(frame, include_unstable)
    blocks = _overview(records, frame, sources, baseline_world_size)
    networks = comm_networks(comm or [])
    for number, (_, part) in enumerate(summary.groupby("workload", sort=True), start=1):
        part = part.reset_index(drop=True)
        workload = part.iloc[0]["workload"]
        prefix = out_dir / f"w{number}-{_slug(str(part.iloc[0]['model']))}"
        weak = scaling_series(part, "weak", baseline_world_size)
        strong = scaling_series(part, "strong", baseline_world_size)
        blocks += [Heading(f"Workload {number}: {workload}"), main_table(part, weak, strong)]
        flagged = flagged_notes(part)
        if flagged:
            blocks.append(Bullets(flagged))
        blocks += memory_blocks(part)
        blocks += [Heading("Scaling efficiency", 3), *efficiency_blocks(weak + strong)]
        blocks += attribution_blocks(weak + strong, part, workload, prefix, images)
        runs = frame[frame["workload_key"] == part.iloc[0]["workload_key"]]
        ids = set(runs["run_id"])
        mine = [r for r in records if r.get("run_id") in ids]
        blocks += roofline_blocks(rooflines(mine, networks), workload, prefix, images)
        at_scale = throughput_at_scale(mine, networks) if networks else None
        study: list[Block] = study_blocks(part, workload, prefix, images, at_scale)
        blocks += _plot_blocks(part, weak + strong, workload, prefix, images, in_study=bool(study))
        blocks += study
        blocks += rcp_blocks(mine)
        blocks += telemetry_blocks(runs, folders or {}, workload, prefix, images)
        blocks += mlperf_blocks(mine, folders or {})
    blocks += comm_blocks(comm or [], records, out_dir / "comm", images)
    bad = non_ok_table(frame)
    blocks += [Heading("Runs that did not finish ok")]
    blocks += [bad] if bad is not None else [Text("None: every run finished with status `ok`.")]
    return blocks


def _write(blocks: list[Block], out_dir: Path, images: list[Path]) -> ReportFiles:
    md = out_dir / "report.md"
    html = out_dir / "report.html"
    md.write_text(to_markdown(blocks, out_dir), encoding="utf-8")
    html.write_text(to_html(blocks, "larsbench scaling report"), encoding="utf-8")
    return ReportFiles(md, html, images)


def _plot_blocks(
    summary: pd.DataFrame, series: list[Series], workload: str, prefix: Path, images: list[Path], in_study: bool = False
) -> list[Block]:
    """The scaling plots; with a study section, its per-recipe accuracy and frontier plots stand
    in for the accuracy and time-to-accuracy plots here (they would show the same runs twice)."""
    blocks: list[Block] = [Heading("Plots", 3)]
    study_owned = {"top1", "tta"} if in_study else set()
    wanted: list[PlotSpec] = [
        ("throughput", "throughput vs workers", lambda p: plots.plot_throughput(series, workload, p),
         "no setting with a measured throughput ran at more than one world size"),
        ("efficiency", "scaling efficiency vs workers", lambda p: plots.plot_efficiency(series, workload, p),
         "no scaling group has its baseline run"),
        ("top1", "final top-1 vs global batch", lambda p: plots.plot_accuracy(summary, workload, p),
         "no run recorded a final top-1"),
        ("tta", "time to accuracy vs global batch", lambda p: plots.plot_time_to_accuracy(summary, workload, p),
         "no run reached its target top-1 (or none set one)"),
        ("step-split", "step-time split", lambda p: plots.plot_step_split(summary, workload, p),
         "no run recorded its data-wait fraction"),
    ]  # fmt: skip
    drawn, missing = draw_plots(prefix, [spec for spec in wanted if spec[0] not in study_owned], images)
    for name, image in drawn.items():
        blocks.append(image)
        if name == "step-split":
            separated = summary["compute_fraction"].notna().any() or summary["comm_fraction"].notna().any()
            blocks.append(Text(
                "Data wait, compute (timed on a copy of the model with no gradient synchronisation) and exposed "
                "communication (the rest of the step) along the critical rank."
                if separated
                else "These records hold only `data_wait_fraction`: the bar splits data wait from the rest of "
                "the step (compute and communication together, not separated)."
            ))  # fmt: skip
    if in_study:
        missing.append("Accuracy and time to accuracy vs global batch: per recipe, in the large-batch study below.")
    if missing:
        blocks.append(Bullets(missing))
    return blocks
