"""Error rates of the run-level detectors, the unstable flag (``core.stats.stability``) and the
straggler flag (``core.stats.find_straggler``), on real runs of the default workload with causes
planted from outside (``plant.Throttle``), so the settings of planted and idle runs are the same:

- ``idle-1``, ``idle-2``: nothing planted, 1 and 2 ranks (false alarms of both flags);
- ``slowdown``: 1 rank stopped a third of every 30 ms from the middle of the window on (a 1.5×
  slower second half, spread over every step: the unstable flag must fire);
- ``stop``: one rank of two stopped once for 2 seconds in the window (the unstable flag must fire);
- ``straggler``: one rank of two stopped 30% of every 30 ms throughout (the straggler flag must
  name it);
- ``idle-2-synthetic``, ``straggler-synthetic``: the same on synthetic data, with no JPEG
  decoding beside the ranks' compute on the cores;
- ``straggler-quota``: one rank of two (with its data loader workers) held to 0.7 of a CPU by a
  cgroup CPU quota throughout (its fair share of this machine's 2 cores is 1): unlike the duty
  cycle, the held rank cannot make up on the cores its waiting peer leaves idle.

The duty cycles' period is shorter than a step (64 ms on 1 rank, about 150 ms on 2), so every step
is slowed alike, as by another job sharing the cores; with a period longer than a step, a few steps
would take the whole stop each and the rest none.

The backend rotates over DDP, DeepSpeed and Horovod from run to run, and the cases are interleaved
in a seeded order so that the machine's own drift falls on all of them alike.

    flock /tmp/larsbench-cpu.lock .venv/bin/python -m benchmarks.calibration.detectors run OUT [--runs 10]
    .venv/bin/python -m benchmarks.calibration.detectors table OUT      # the table, from the kept files
    .venv/bin/python -m benchmarks.calibration.detectors sweep OUT      # the rates under other thresholds

``run`` keeps ``OUT/results.jsonl``, ``OUT/steps/`` and ``OUT/plant.jsonl``; ``table`` judges every
kept run again with the detectors as they are now (so thresholds can be tuned offline, on the
same real runs) and prints each case's rates. A planted run counts only when its planting
landed in the measured window: in its own per-step data, the window took at least ``LANDED`` of
its time beyond the idle runs' median step (``plant.excess_share``); a mid-window slowdown, in
addition, only when the run's own second half ran at least ``SLOWDOWN_LANDED`` times slower than
its first (the check tests/suite/test_stability_integration.py makes before judging the flag):
against other runs' medians alone, the machine's drift from run to run decided whether a 1.5x
slowdown counted, and runs whose second half the machine sped up counted as planted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.calibration.plant import CpuQuota, Planter, Throttle, excess_share
from larsbench.core.files import append_lines
from larsbench.core.layout import RunFiles
from larsbench.core.results import read_records
from larsbench.core.stats import RULE, STRAGGLER_LAG, StabilityRule, find_straggler, stability
from larsbench.suite.config import bundled_experiment, load_experiment
from larsbench.suite.launch import launch_run
from larsbench.workloads.data import prepare

BACKENDS = ("ddp", "deepspeed", "horovod")
LANDED = 0.05  # a planted cause counts when it added at least this share to the window
SLOWDOWN_LANDED = 1.3  # ... and a 1.5x slowdown from mid-window when the run's own halves differ this much
# On the default workload each rank's JPEG decoding shares the cores with every rank's compute, so
# a stopped rank's peers slow down with it; the synthetic cases take decoding out, as a cluster
# whose ranks each have their own cores (or GPU) has it.
SYNTHETIC = {"dataset": "synthetic", "synthetic_samples": 1280, "target_top1": None}
CASES: dict[str, tuple[int, Throttle | CpuQuota | None, str | None, dict]] = {
    # name: (ranks, what is planted, the flag that must fire, settings over the default workload's)
    "idle-1": (1, None, None, {}),
    "idle-2": (2, None, None, {}),
    # The default workload runs 160 steps on 1 rank: from step 80 on, the second half is slower.
    "slowdown": (1, Throttle(1 / 3, period_sec=0.03, start_at_step=80), "unstable", {}),
    # 80 steps on 2 ranks: rank 1 stops for 2 s once, a third of the way into the window.
    "stop": (2, Throttle.pause(rank=1, seconds=2.0, start_at_step=30), "unstable", {}),
    "straggler": (2, Throttle(0.3, period_sec=0.03, ranks=(1,)), "straggler", {}),
    "idle-2-synthetic": (2, None, None, SYNTHETIC),
    "straggler-synthetic": (2, Throttle(0.3, period_sec=0.03, ranks=(1,)), "straggler", SYNTHETIC),
    "straggler-quota": (2, CpuQuota(0.7, ranks=(1,)), "straggler", {}),
}


def _kind(case: str) -> tuple[int, str]:
    """What a planted run's steps are measured against: idle runs of the same ranks and data."""
    ranks, _, _, settings = CASES[case]
    return ranks, settings.get("dataset", "default")


def plan(runs: int, seed: int, cases: tuple[str, ...]) -> list[tuple[str, str]]:
    """(case, backend) for every run: each case ``runs`` times over the backends, shuffled."""
    order = [(case, BACKENDS[i % len(BACKENDS)]) for case in cases for i in range(runs)]
    random.Random(seed).shuffle(order)
    return order


def run(output: Path, runs: int, seed: int, cases: tuple[str, ...], console: Console) -> None:
    results = output / "results.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    order = plan(runs, seed, cases)
    # Runs added to a kept folder continue its numbering, so every run id stays unique.
    plants = output / "plant.jsonl"
    first = len(plants.read_text().splitlines()) if plants.exists() else 0
    for index, (case, backend) in enumerate(order, start=first):
        ranks, throttle, _, settings = CASES[case]
        run_id = f"{case}-{index:03d}-{backend}"
        overrides = {**settings, "world_size": ranks, "backend": backend, "seed": index}
        (spec,) = load_experiment(bundled_experiment(), overrides).runs
        files = RunFiles.of(results, run_id)
        console.rule(f"{index - first + 1}/{len(order)} {run_id}")
        planter = Planter(files, throttle) if throttle else None
        if planter:
            planter.start()
        try:
            launch_run(prepare(spec), results, "detectors", console, run_id)
        finally:
            log = planter.stop() if planter else None
        append_lines(output / "plant.jsonl", [json.dumps({"run_id": run_id, "case": case, "backend": backend,
                                                          "plant": dataclasses.asdict(log) if log else None})])  # fmt: skip
    for scratch in ("logs", "mllog", ".larsbench", "checkpoints", "telemetry", "report"):
        shutil.rmtree(output / scratch, ignore_errors=True)


def series(output: Path, record: dict) -> dict[str, list]:
    """The run's per-step data as the record builder judged it: the step times of the rank the
    split follows, and every rank's ready times."""
    rows = [json.loads(line) for line in (output / record["steps_file"]).read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: row["rank"])
    return {"step": rows[record["split_rank"] or 0]["step_sec"], "ready": [row["ready_sec"] for row in rows]}


@dataclasses.dataclass
class Judged:
    case: str
    backend: str
    landed: bool | None  # None: nothing planted
    unstable: bool
    straggler: int | None
    reasons: tuple[str, ...]


def judge(output: Path, rule: StabilityRule = RULE, lag: float = STRAGGLER_LAG) -> list[Judged]:
    records = {r["run_id"]: r for r in read_records(output / "results.jsonl") if r["status"] == "ok"}
    plants = [json.loads(line) for line in (output / "plant.jsonl").read_text().splitlines() if line.strip()]
    data = {p["run_id"]: series(output, records[p["run_id"]]) for p in plants if p["run_id"] in records}
    # The idle runs' median step per backend and rank count: what a planted run is measured against.
    idle: dict[tuple[str, tuple[int, str]], list[float]] = {}
    for p in plants:
        if p["run_id"] in data and CASES[p["case"]][1] is None:
            idle.setdefault((p["backend"], _kind(p["case"])), []).extend(data[p["run_id"]]["step"])
    judged = []
    for p in plants:
        if p["run_id"] not in data:
            continue
        throttle = CASES[p["case"]][1]
        steps = data[p["run_id"]]["step"]  # the ranks step in lockstep: a stall shows on every rank's steps
        landed = None
        if throttle is not None:
            reference = statistics.median(idle[(p["backend"], _kind(p["case"]))])
            landed = excess_share(steps, reference) >= LANDED
            if p["case"] == "slowdown":
                landed = landed and halves_ratio(steps) >= SLOWDOWN_LANDED
        verdict = stability(steps, rule)
        found = find_straggler(data[p["run_id"]]["ready"], statistics.fmean(steps), min_lag=lag)
        judged.append(Judged(p["case"], p["backend"], landed, verdict.unstable, found.rank if found else None, verdict.reasons))
    return judged


def halves_ratio(steps: list[float], margin: int = 10) -> float:
    """The median step of the window's second half over its first's, ``margin`` steps either
    side of the middle left out (the slowdown starts at rank 0's step 80 of 160, as its progress
    file says it, a step or two late)."""
    middle = len(steps) // 2
    return statistics.median(steps[middle + margin:]) / statistics.median(steps[: middle - margin])


def table(output: Path, console: Console) -> None:
    judged = judge(output)
    shown = Table(title=f"detector error rates on the runs in {output}")
    for column in ("case", "runs", "landed", "flagged unstable", "straggler named", "rate"):
        shown.add_column(column, justify="right" if column != "case" else "left")
    for case, (_, throttle, must, _) in CASES.items():
        mine = [j for j in judged if j.case == case]
        if not mine:
            continue  # a campaign of some of the cases
        counted = [j for j in mine if j.landed is not False]
        unstable = sum(j.unstable for j in counted)
        named = sum(j.straggler is not None for j in counted)
        if must is None:
            rate = f"false alarms: unstable {unstable}/{len(counted)}, straggler {named}/{len(counted)}"
        elif must == "unstable":
            rate = f"detected {unstable}/{len(counted)}"
        else:
            right = sum(j.straggler == throttle.ranks[0] for j in counted)
            rate = f"detected {right}/{len(counted)} (right rank); unstable {unstable}/{len(counted)}"
        landed = "—" if throttle is None else f"{len(counted)}/{len(mine)}"
        shown.add_row(case, str(len(mine)), landed, str(unstable), str(named), rate)
    console.print(shown)
    for j in judged:
        if (j.landed is None and j.unstable) or (j.case == "stop" and j.landed and not j.unstable):
            console.print(f"[dim]{j.case} {j.backend}: {'; '.join(j.reasons) or 'not flagged'}[/dim]")


def rates(judged: list[Judged]) -> dict[str, tuple[int, int]]:
    """(hits, runs counted) per rate: each flag's false alarms on the idle runs, and its
    detections on the runs whose planting landed."""
    counted = [j for j in judged if j.landed is not False]
    idle = [j for j in counted if j.landed is None]
    several = [j for j in idle if CASES[j.case][0] > 1]  # one rank has nobody to wait for
    out = {"unstable false alarms": (sum(j.unstable for j in idle), len(idle)),
           "straggler false alarms": (sum(j.straggler is not None for j in several), len(several))}  # fmt: skip
    for case, (_, throttle, must, _) in CASES.items():
        mine = [j for j in counted if j.case == case and j.landed]
        if must == "unstable":
            out[f"{case} detected"] = (sum(j.unstable for j in mine), len(mine))
        elif must == "straggler":
            out[f"{case} detected"] = (sum(j.straggler == throttle.ranks[0] for j in mine), len(mine))
    return out


SWEEP_SHIFT = ((1.10, 0.0), (1.20, 0.0), (1.30, 0.0), (1.10, 0.03), (1.10, 0.05), (1.10, 0.08), (1.10, 0.10), (1.10, 0.15))
SWEEP_STALL = ((2.0, 0.03), (3.0, 0.05), (4.0, 0.10))
SWEEP_LAG = (0.02, 0.05, 0.10)


def sweep(output: Path, console: Console) -> None:
    """Every flag's rates on the kept runs under other settings of its thresholds: the table
    the defaults are chosen from (false alarms at most 10%, detection at least 90%)."""
    shown = Table(title=f"the unstable flag's settings on the runs in {output}")
    for column in ("shift", "shift share", "stall", "stall share", "false alarms", "slowdown detected", "stop detected"):
        shown.add_column(column, justify="right")
    for shift, shift_share in SWEEP_SHIFT:
        for stall, share in SWEEP_STALL:
            rule = StabilityRule(stall=stall, stall_share=share, shift=shift, shift_share=shift_share)
            r = rates(judge(output, rule))
            cells = [r["unstable false alarms"], r["slowdown detected"], r["stop detected"]]
            shown.add_row(f"{shift:.2f}", f"{shift_share:g}", f"{stall:g}", f"{share:g}", *(f"{a}/{b}" for a, b in cells))
    console.print(shown)
    shown = Table(title=f"the straggler flag's least lag on the runs in {output}")
    found = [case for case, (_, _, must, _) in CASES.items() if must == "straggler"]
    for column in ("least lag (share of the step)", "false alarms", *(f"{case} detected" for case in found)):
        shown.add_column(column, justify="right")
    for lag in SWEEP_LAG:
        r = rates(judge(output, lag=lag))
        cells = [r["straggler false alarms"], *(r.get(f"{case} detected", (0, 0)) for case in found)]
        shown.add_row(f"{lag:g}", *(f"{a}/{b}" for a, b in cells))
    console.print(shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration.detectors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=("run", "table", "sweep"))
    parser.add_argument("output", type=Path)
    parser.add_argument("--runs", type=int, default=10, help="runs per case (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the runs")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated cases to run (default: all: {', '.join(CASES)})")
    args = parser.parse_args(argv)
    console = Console()
    if args.command == "run":
        unknown = set(args.cases.split(",")) - set(CASES)
        if unknown:
            parser.error(f"--cases: no case {', '.join(sorted(unknown))}; the cases are {', '.join(CASES)}")
        run(args.output, args.runs, args.seed, tuple(args.cases.split(",")), console)
    if args.command == "sweep":
        sweep(args.output, console)
    else:
        table(args.output, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
