"""How long ``larsbench report`` takes with its plots drawn one at a time and drawn in parallel
(``reports.plots.rendering_in_parallel``), side by side in one process:
``python -m benchmarks.report_time [RESULTS ...] [--rounds 3]``.

RESULTS defaults to the committed CPU study (docs/studies/cpu: 56 runs, layer-wise telemetry);
``results`` after ``larsbench run`` times the default run's own report. Each round builds the
report once each way, in alternating order so the machine's drift hits both alike, into a
temporary folder; the two reports must hold the same files. Prints each round, the medians and
their ratio with the machine's CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from larsbench.reports.comm import load_comm
from larsbench.reports.load import load_records_with_folders
from larsbench.reports.report import build_report

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="*", type=Path, default=[REPO / "docs" / "studies" / "cpu"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    comm = load_comm(args.results)
    records, folders = load_records_with_folders(args.results, missing_ok=bool(comm))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sides = {"one at a time": 1, f"parallel ({cores} at a time)": None}
    took: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="larsbench-report-time-") as folder:
        for round_ in range(args.rounds):
            order = list(sides.items()) if round_ % 2 == 0 else list(sides.items())[::-1]
            names = {}
            for side, workers in order:
                out = Path(folder) / f"{round_}-{workers}"
                began = time.perf_counter()
                files = build_report(records, out, [str(p) for p in args.results], None, folders, comm, draw_workers=workers)
                took[side].append(time.perf_counter() - began)
                names[side] = sorted(p.name for p in out.iterdir())
                print(f"round {round_ + 1}: {side}: {took[side][-1]:.2f} s ({len(files.images)} plots)", flush=True)
            first, *others = names.values()
            if any(other != first for other in others):
                raise SystemExit("the two reports hold different files")
    from larsbench.loop.provenance import cpu_model  # after the rounds: it imports torch

    print(f"\n{len(records)} runs from {', '.join(map(str, args.results))}; {cpu_model()}, {cores} cores; median of {args.rounds}")
    medians = {side: statistics.median(values) for side, values in took.items()}
    for side, median in medians.items():
        print(f"  {side}: {median:.2f} s")
    serial, parallel = medians.values()
    print(f"  parallel / one at a time: {parallel / serial:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
