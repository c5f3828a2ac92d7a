"""The runs the detectors' error rates are measured on: real runs of a 1-rank and a 2-rank setting,
idle, and with a 10% slowdown planted from outside (``plant.Throttle``: ranks stopped 10% of
every half second, or of every ``--period``), in a seeded interleaved order so that drift of the
machine falls on both.

    flock /tmp/larsbench-cpu.lock .venv/bin/python -m benchmarks.calibration.campaign OUT [--idle 14 --planted 10]

A period longer than a step (the default half second against steps of 50-150 ms) stops a few
steps for 50 ms each and leaves the rest alone: a run with stalls, which the unstable flag may
rightly call disturbed. A period shorter than a step (``--period 0.03``) slows every step alike,
as a slower build of the code would: the regression the gate is for.

Writes ``OUT/results.jsonl`` (the records), ``OUT/steps/`` (every rank's per-step times) and
``OUT/plant.jsonl`` (per run: its setting, whether and how it was throttled, and how long each
rank was stopped). Logs, event logs and the runs' scratch files are removed at the end: the
rest is what ``benchmarks.calibration.rates`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path

from rich.console import Console

from benchmarks.calibration.plant import Planter, Throttle
from larsbench.core.files import append_lines
from larsbench.core.layout import RunFiles
from larsbench.suite.config import load_experiment
from larsbench.suite.launch import launch_run

SLOWDOWN = 0.10  # the share of wall time the ranks are stopped in a planted run
PERIOD_SEC = 0.5
EXPERIMENT = "calibration"


def settings(model: str, image_size: int, micro_batch: int, steps: int, threads: int | None = None) -> dict[str, dict]:
    """The two settings: the same workload on 1 and on 2 ranks (synthetic data, CPU)."""
    base = {"model": model, "dataset": "synthetic", "image_size": image_size, "micro_batch_size": micro_batch, "steps": steps,
            "device": "cpu", "backend": "ddp", "synthetic_samples": 2048, "compute_probe_steps": 0, "log_every_steps": 10,
            "timing_warmup_steps": 5, "telemetry_every_steps": 0}  # fmt: skip
    if threads is not None:
        base["threads_per_rank"] = threads
    return {"1-rank": {**base, "world_size": 1}, "2-rank": {**base, "world_size": 2}}


def plan(idle: int, planted: int, seed: int, names: tuple[str, ...] = ("1-rank", "2-rank"), alternate: bool = False) -> list[tuple[str, bool]]:
    """(setting, planted) for every run: shuffled with ``seed``, or (``alternate``) per setting
    idle and planted in turn, so that every planted run has idle neighbours in time."""
    if alternate:
        kinds = []
        for turn in range(max(idle, planted)):
            kinds += [False] * (turn < idle) + [True] * (turn < planted)
        return [(name, kind) for kind in kinds for name in names]
    runs = [(name, p) for name in names for p in [False] * idle + [True] * planted]
    random.Random(seed).shuffle(runs)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration.campaign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("output", type=Path)
    parser.add_argument("--idle", type=int, default=14, help="idle runs per setting (default 14)")
    parser.add_argument("--planted", type=int, default=10, help="runs per setting with the slowdown planted (default 10)")
    parser.add_argument("--model", default="alexnet_bn_mini")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0, help="of the run order")
    parser.add_argument("--only", action="append", choices=("1-rank", "2-rank"), help="only this setting (repeatable)")
    parser.add_argument("--threads-per-rank", type=int, help="torch threads per rank (default: the cores a rank may use)")
    parser.add_argument("--alternate", action="store_true", help="idle and planted runs in turn instead of shuffled")
    parser.add_argument("--period", type=float, default=PERIOD_SEC, help=f"seconds per stop-and-run cycle of the planted slowdown (default {PERIOD_SEC})")
    args = parser.parse_args(argv)
    if not 0 < args.period <= 10:
        parser.error(f"--period {args.period}: give the seconds per stop-and-run cycle, above 0 and at most 10 (e.g. 0.03)")

    output = args.output
    output.mkdir(parents=True, exist_ok=True)
    specs = {
        name: load_experiment(None, dict(fields)).runs[0]
        for name, fields in settings(args.model, args.image_size, args.micro_batch, args.steps, args.threads_per_rank).items()
    }
    console = Console(file=(output / "campaign.log").open("a"), width=160)
    order = plan(args.idle, args.planted, args.seed, tuple(args.only or ("1-rank", "2-rank")), args.alternate)
    started = time.monotonic()
    # Runs added to a kept folder continue its numbering, so every run id stays unique.
    plants = output / "plant.jsonl"
    first = len(plants.read_text().splitlines()) + 1 if plants.exists() else 1
    for number, (name, planted) in enumerate(order, start=first):
        spec = dataclasses.replace(specs[name], seed=number)  # each run its own seed, as repeats have by default
        run_id = f"cal-{number:03d}-{name}-{'planted' if planted else 'idle'}"
        throttle = Throttle(SLOWDOWN, args.period) if planted else None
        planter = Planter(RunFiles.of(output, run_id), throttle) if throttle else None
        if planter:
            planter.start()
        record = launch_run(spec, output / "results.jsonl", EXPERIMENT, console, run_id)
        log = planter.stop() if planter else None
        entry = {"run_id": run_id, "setting": name, "planted": planted, "throttle": dataclasses.asdict(throttle) if throttle else None,
                 "stopped_sec": log.stopped_sec if log else {}, "stops": log.stops if log else 0, "note": log.note if log else None}  # fmt: skip
        append_lines(output / "plant.jsonl", [json.dumps(entry)])
        print(f"{number - first + 1}/{len(order)} {run_id}: {record['status']} {record.get('throughput_images_per_sec') or 0:.1f} images/s"
              f"{' unstable' if record.get('unstable') else ''} ({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    for scratch in ("logs", "mllog", "telemetry", "checkpoints", ".larsbench"):
        shutil.rmtree(output / scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
