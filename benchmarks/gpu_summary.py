"""The GPU check's summary: every stage's status, and its figures against their targets.

    python -m benchmarks.gpu_summary WORK [--dry-run] [--out DIR]

Reads what ``benchmarks/gpu_check.sh`` left in WORK: ``stages.tsv`` (stage, status, seconds,
note), ``logs/tests.log``, ``throughput.json``, ``lars_step.json``, ``harness.json`` and the
result records under ``runs/`` and ``loaders/``. Prints one table and writes it, and the same
as JSON, to ``--out`` (``summary.txt``, ``summary.json``). A figure whose file is missing is
simply absent: its stage's status says why. In a dry run (toy sizes on a CPU) no target is
judged.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from larsbench.core.results import read_records

THROUGHPUT_TARGET = 4000.0  # images/s, ResNet-50 bf16 synthetic, one H200
LARS_STEP_TARGET = 1.15  # LARS.step() / fused SGD step, GPU time, no host synchronisation
HARNESS_TARGET = 0.98  # suite step / bare loop throughput


def figure(name: str, value: float | None, unit: str, target: str = "", met: bool | None = None, note: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stages(work: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = (work / "stages.tsv").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        name, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        rows.append({"stage": name, "status": status, "seconds": int(seconds) if seconds.isdigit() else None, "note": note.rstrip("; ")})
    # stages run side by side finish in any order; setup comes first
    return sorted(rows, key=lambda row: (row["stage"] != "setup", row["stage"]))


def test_line(work: Path) -> str | None:
    """pytest's closing line ("9 passed, 1 skipped in 30.1s")."""
    try:
        text = (work / "logs" / "a.tests.log").read_text()
    except OSError:
        return None
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|error|skipped|deselected).*?)\s*=*$", text, flags=re.M)
    return found[-1] if found else None


def throughput_figures(work: Path) -> list[dict[str, Any]]:
    data = _json(work / "throughput.json") or {}
    rows = []
    for run in data.get("runs", []):
        name = f"b. {data['model']} {data['precision']}{' channels_last' if data.get('channels_last') else ''} {run['mode']} {run['optimizer']}"
        if "skipped" in run:
            rows.append(figure(name, None, "images/s", note=f"skipped: {run['skipped']}"))
            continue
        value = run["images_per_sec"]
        rows.append(figure(name, value, "images/s", f">= {THROUGHPUT_TARGET:,.0f}", value >= THROUGHPUT_TARGET,
                           f"batch {data['batch']}, {data['steps']} timed steps after {data['warmup']}"))  # fmt: skip
    return rows


def lars_step_figures(work: Path) -> list[dict[str, Any]]:
    data = _json(work / "lars_step.json") or {}
    rows = []
    variants = data.get("variants", {})
    clock = "gpu" if any(v.get("gpu_ms") is not None for v in variants.values()) else "wall"
    for name, row in variants.items():
        if name == "sgd":
            rows.append(figure(f"c. fused SGD step ({clock} time)", row[f"{clock}_ms"], "ms", note=f"{data['model']}, {data['parameters']:,} parameters"))
            continue
        ratio = row[f"{clock}_ratio"]
        sync = row.get("sync_error")
        met = ratio <= LARS_STEP_TARGET and sync is None and row.get("sync_checked", False)
        note = f"{row['wall_ratio']:.2f}x on the wall clock; " if clock == "gpu" else ""
        note += "no host sync" if row.get("sync_checked") and sync is None else (f"SYNCHRONISES: {sync}" if sync else "sync not checked")
        rows.append(figure(f"c. LARS.step {name} / fused SGD ({clock} time)", ratio, "x", f"<= {LARS_STEP_TARGET}, no sync", met, note))
    for name, why in data.get("skipped", {}).items():
        rows.append(figure(f"c. LARS.step {name}", None, "x", note=f"skipped: {why}"))
    return rows


def harness_figures(work: Path) -> list[dict[str, Any]]:
    data = _json(work / "harness.json")
    if not data:
        return []
    ratio = data["ratio_median"]
    note = (f"suite {data['suite_images_per_sec']:.0f} vs bare {data['bare_images_per_sec']:.0f} images/s, "
            f"{len(data['ratios'])} rounds, global batch {data['global_batch']}")  # fmt: skip
    return [figure(f"d. Trainer.advance / bare DDP loop ({data['device']})", ratio, "ratio", f">= {HARNESS_TARGET:.0%}", ratio >= HARNESS_TARGET, note)]


def record_figures(work: Path, folder: str, stage: str, key: str) -> list[dict[str, Any]]:
    path = work / folder / "results.jsonl"
    if not path.exists():
        return []
    rows = []
    for r in read_records(path):
        wait = r.get("data_wait_fraction")
        note = f"status {r['status']}, data wait {wait:.1%} of step time" if wait is not None else f"status {r['status']}"
        if r.get("error"):
            note += f": {r['error'][:120]}"
        name = f"{stage}. larsbench run {r[key]}" + (f" ({r['backend']})" if key != "backend" else "")
        rows.append(figure(name, r.get("throughput_images_per_sec"), "images/s", note=note))
    return rows


def loader_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GPU loader's throughput against the CPU loader's, when both ran."""
    speed = {row["name"].split()[3]: row["value"] for row in rows}
    if not (speed.get("gpu") and speed.get("cpu")):
        return []
    return [figure("f. data_loader gpu / cpu throughput", speed["gpu"] / speed["cpu"], "x", note="same model, batch and steps")]


def collect(work: Path, dry_run: bool) -> dict[str, Any]:
    loaders = record_figures(work, "loaders", "f", "data_loader")
    figures = [
        *throughput_figures(work), *lars_step_figures(work), *harness_figures(work),
        *record_figures(work, "runs", "e", "backend"), *loaders, *loader_ratio(loaders),
    ]  # fmt: skip
    if dry_run:  # toy sizes on a CPU: the targets are a GPU's
        for row in figures:
            row["met"] = None
    return {"dry_run": dry_run, "tests": test_line(work), "stages": stages(work), "figures": figures}


def render(summary: dict[str, Any]) -> str:
    lines = ["GPU check summary" + (" (dry run: toy sizes on the CPU, no target judged)" if summary["dry_run"] else "")]
    lines.append(f"{'stage':<14}{'status':<28}{'time':>7}  note")
    for s in summary["stages"]:
        seconds = f"{s['seconds']} s" if s["seconds"] is not None else ""
        lines.append(f"{s['stage']:<14}{s['status']:<28}{seconds:>7}  {s['note']}")
    lines.append(f"tests: {summary['tests'] or 'no pytest summary line'}")
    lines.append(f"{'figure':<58}{'value':>12} {'unit':<9}{'target':<20}{'verdict':<8} note")
    for f in summary["figures"]:
        value = "—" if f["value"] is None else (f"{f['value']:.1%}" if f["unit"] == "ratio" else f"{f['value']:,.3g}" if f["value"] < 100 else f"{f['value']:,.0f}")
        verdict = {True: "PASS", False: "MISS", None: ""}[f["met"]]
        lines.append(f"{f['name']:<58}{value:>12} {f['unit']:<9}{f['target']:<20}{verdict:<8} {f['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the check's working folder")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on a CPU: judge no target")
    parser.add_argument("--out", type=Path, help="write summary.txt and summary.json here")
    args = parser.parse_args(argv)
    summary = collect(args.work, args.dry_run)
    text = render(summary)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.txt").write_text(text + "\n")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
