"""What a run costs beyond its training clock, per backend and phase: ``python -m benchmarks.overhead``.

Each backend runs a tiny run (``tiny_cnn``, 16 px, synthetic data, 30 steps) on 1 and 2 ranks,
``--repeats`` times, through ``suite.launch.launch_run``: the code ``larsbench run`` executes
per run, with the backend's own launcher. For each run:

- *overhead*: the time ``launch_run`` took minus the run's on-clock time (``wall_time_sec``):
  everything the run costs beyond its training window, as one run of a grid pays it;
- the record's phases (``phases_sec``: launcher, imports, rendezvous, data, model, probe, the
  rest of setup, the first step, the record), and *exit*: from the record's timestamp to
  ``launch_run``'s return (the ranks' teardown and exit, and their launcher's).

The table shows each figure's median over the repeats (and the overhead's min–max). Before
the runs it times the ``larsbench`` command's own start once (interpreter, imports, checking a
run's settings), which a command pays once for its whole grid.
Exit status 1 when a median overhead is above ``--target`` seconds.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from larsbench.core.phases import PHASES
from larsbench.suite.config import build_spec
from larsbench.suite.launch import launch_run

BACKENDS = ("ddp", "deepspeed", "horovod")
TINY = {"model": "tiny_cnn", "dataset": "synthetic", "image_size": 16, "steps": 30, "device": "cpu"}


def command_start_sec() -> float:
    """What ``larsbench run`` costs before its first launch: the interpreter, the command's
    imports (the launcher's included) and checking one run's settings."""
    code = ("import larsbench.main, larsbench.suite.launch; from larsbench.suite.config import build_spec; "
            f"build_spec([('x', {{**{TINY!r}, 'backend': 'ddp'}})])")  # fmt: skip
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def measure(backend: str, ranks: int, results: Path) -> dict[str, float]:
    spec = build_spec([("benchmark", {**TINY, "backend": backend, "world_size": ranks})])
    quiet = Console(file=io.StringIO())
    started = time.perf_counter()
    record = launch_run(spec, results, "overhead", quiet)
    total = time.perf_counter() - started
    returned = time.time()
    if record["status"] != "ok":
        raise SystemExit(f"{backend} on {ranks} rank(s) failed: {record.get('error')}")
    row = {name: record["phases_sec"].get(name, 0.0) for name in PHASES}
    row["exit"] = returned - record["timestamp_end"]
    row["clock"] = record["wall_time_sec"]
    row["overhead"] = total - record["wall_time_sec"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each backend and rank count (default 3)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all three)")
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    parser.add_argument("--target", type=float, default=5.0, help="seconds of overhead per run not to exceed (default 5)")
    args = parser.parse_args(argv)
    console = Console(width=200)
    started = time.perf_counter()
    command = command_start_sec()
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="larsbench-overhead-") as folder:
        results = Path(folder) / "results.jsonl"
        for _ in range(args.repeats):  # interleaved: slow drift on the machine spreads over every row
            for backend in args.backends.split(","):
                for ranks in (int(r) for r in args.ranks.split(",")):
                    rows.setdefault((backend, ranks), []).append(measure(backend, ranks, results))
    columns = [*PHASES[:-3], "first_step", "record", "exit"]
    table = Table(title=f"seconds per run beyond its training clock (median of {args.repeats}); tiny_cnn, 16 px, synthetic, 30 steps")
    for name in ("backend", "ranks", *(c.replace("_", " ") for c in columns), "overhead", "(min–max)", "on clock"):
        table.add_column(name, justify="left" if name == "backend" else "right")
    met = True
    for (backend, ranks), runs in rows.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        spread = [run["overhead"] for run in runs]
        met &= med["overhead"] <= args.target
        table.add_row(
            backend, str(ranks), *(f"{med[c]:.2f}" for c in columns), f"{med['overhead']:.2f}",
            f"{min(spread):.1f}–{max(spread):.1f}", f"{med['clock']:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"the larsbench command's own start (once per command): {command:.2f} s")
    verdict = "met" if met else "MISSED"
    console.print(f"target: at most {args.target:g} s of overhead per run: {verdict} ({time.perf_counter() - started:.0f} s in all)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
