"""What a run costs beyond its training clock, per backend and phase: ``python -m benchmarks.overhead``.

Each backend runs a tiny run (``tiny_cnn``, 16 px, synthetic data, 30 steps) on 1 and 2 ranks,
``--repeats`` times, through ``suite.launch.launch_run``: the code ``larsbench run`` executes
per run, with its ranks started as larsbench starts them. For each run:

- *overhead*: the time ``launch_run`` took minus the run's on-clock time (``wall_time_sec``):
  everything the run costs beyond its training window, as one run of a grid pays it;
- the record's phases (``phases_sec``: launcher, imports, rendezvous, data, model, probe, the
  rest of setup, the first step, the record), and *exit*: from the record's timestamp to
  ``launch_run``'s return (the ranks' teardown and exit, and their launcher's).

Each setting starts its ranks three ways (``--starts``), one after the other in every round:
*exec*, each rank a fresh interpreter (``LARSBENCH_RANK_SERVER=0``); *cold*, forked from a rank
server started for this run, which imports torch first (a grid's first run of its shape, or a
command with one run); *warm*, forked from that server again (every later run of the shape in a
grid; ``suite.rank_server``).

The table shows each figure's median over the repeats (and the overhead's min–max). Before
the runs it times the ``larsbench`` command's own start once (interpreter, imports, checking a
run's settings), which a command pays once for its whole grid.
Exit status 1 when a median overhead is above ``--target`` seconds.

``--against REVISION`` measures a change: each round runs every setting once with REVISION's code
(a detached worktree, imported first through ``PYTHONPATH``) and once with this checkout's, in
alternating order, and the table shows both medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from larsbench.core.phases import PHASES
from larsbench.suite.config import build_spec
from larsbench.suite import rank_server
from larsbench.suite.launch import launch_run

REPO = Path(__file__).resolve().parents[1]

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


STARTS = ("exec", "cold", "warm")


def measure(backend: str, ranks: int, results: Path, start: str = "warm") -> dict[str, float]:
    spec = build_spec([("benchmark", {**TINY, "backend": backend, "world_size": ranks})])
    quiet = Console(file=io.StringIO())
    if start == "cold":
        rank_server.close_all()
    switch = os.environ.pop(rank_server.SWITCH_ENV, None)
    if start == "exec":
        os.environ[rank_server.SWITCH_ENV] = "0"
    try:
        started = time.perf_counter()
        record = launch_run(spec, results, "overhead", quiet)
        total = time.perf_counter() - started
    finally:
        os.environ.pop(rank_server.SWITCH_ENV, None)
        if switch is not None:
            os.environ[rank_server.SWITCH_ENV] = switch
    returned = time.time()
    if record["status"] != "ok":
        raise SystemExit(f"{backend} on {ranks} rank(s) failed: {record.get('error')}")
    row = {name: record["phases_sec"].get(name, 0.0) for name in PHASES}
    row["exit"] = returned - record["timestamp_end"]
    row["clock"] = record["wall_time_sec"]
    row["overhead"] = total - record["wall_time_sec"]
    return row


def measure_rounds(repeats: int, backends: list[str], ranks: list[int], starts: list[str]) -> dict[tuple, list[dict[str, float]]]:
    rows: dict[tuple, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="larsbench-overhead-") as folder:
        results = Path(folder) / "results.jsonl"
        for _ in range(repeats):  # interleaved: slow drift on the machine spreads over every row
            for backend in backends:
                for count in ranks:
                    for start in starts:
                        rows.setdefault((backend, count, start), []).append(measure(backend, count, results, start))
    return rows


def code_of(revision: str, folder: Path) -> dict[str, str]:
    """The environment that makes ``larsbench`` import the code of ``revision`` of this repository:
    a detached worktree, and a package folder naming its modules the way the editable install
    maps the checkout's (``pyproject.toml``'s package-dir), first on ``PYTHONPATH``."""
    tree = folder / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), revision], cwd=REPO, check=True, capture_output=True)
    mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = folder / "package"
    shutil.copytree(tree / mapping["larsbench"], root / "larsbench")
    for name, source in mapping.items():
        if name != "larsbench":  # the subpackages, each under the root package's folder
            (root / name.replace(".", "/")).symlink_to(tree / source)
    return {**os.environ, "PYTHONPATH": str(root)}


def side_by_side(revision: str, repeats: int, backends: str, ranks: str, starts: str) -> dict[str, dict[tuple[str, int], list[dict[str, float]]]]:
    """``repeats`` rounds, each one run per setting with ``revision``'s code and one with this
    checkout's, in alternating order, so the machine's drift hits both alike."""
    found: dict[str, dict[tuple[str, int], list[dict[str, float]]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="larsbench-overhead-against-") as folder:
        try:
            before_env = code_of(revision, Path(folder))
            for round_ in range(repeats):
                order = [("before", before_env), ("after", dict(os.environ))]
                for side, env in order if round_ % 2 == 0 else order[::-1]:
                    out = Path(folder) / f"{side}-{round_}.json"
                    ours = ["--starts", starts] if side == "after" else []  # REVISION's may predate the option
                    subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--repeats", "1", "--backends", backends,
                                    "--ranks", ranks, *ours, "--json", str(out)], cwd=REPO, env=env, check=True, capture_output=True)  # fmt: skip
                    for row in json.loads(out.read_text()):  # an earlier revision's rows: no rank server, no "start"
                        found[side].setdefault((row.pop("backend"), row.pop("ranks"), row.pop("start", "exec")), []).append(row)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(Path(folder) / "tree")], cwd=REPO, capture_output=True)
    return found


def table(title: str, rows: dict[tuple[str, int], list[dict[str, float]]], before: dict | None = None) -> tuple[Table, float]:
    columns = [*PHASES[:-3], "first_step", "record", "exit"]
    out = Table(title=title)
    names = ["backend", "ranks", "start", *(c.replace("_", " ") for c in columns), "overhead", "(min–max)", "on clock"]
    if before is not None:
        names += ["before", "after / before"]
    for name in names:
        out.add_column(name, justify="left" if name == "backend" else "right")
    worst = 0.0
    for key, runs in rows.items():
        med = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
        spread = [run["overhead"] for run in runs]
        worst = max(worst, med["overhead"])
        cells = [key[0], str(key[1]), key[2], *(f"{med[c]:.2f}" for c in columns), f"{med['overhead']:.2f}",
                 f"{min(spread):.1f}–{max(spread):.1f}", f"{med['clock']:.2f}"]  # fmt: skip
        earlier = None if before is None else before.get(key) or before.get((key[0], key[1], "exec"))
        if earlier:
            was = statistics.median(run["overhead"] for run in earlier)
            cells += [f"{was:.2f}", f"{med['overhead'] / was:.2f}×"]
        out.add_row(*cells)
    return out, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each backend and rank count (default 3)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all three)")
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    parser.add_argument("--starts", default=",".join(STARTS), help="how ranks start, comma-separated, in this order each round: "
                        "exec (a fresh interpreter each), cold (a rank server's first run), warm (its later runs); default all three")  # fmt: skip
    parser.add_argument("--target", type=float, default=5.0, help="seconds of overhead per run not to exceed (default 5)")
    parser.add_argument("--against", metavar="REVISION", help="also run REVISION's code (a git revision of this repository), "
                        "round by round in alternating order, and show its overhead beside this checkout's")  # fmt: skip
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # one row per run, for --against
    args = parser.parse_args(argv)
    console = Console(width=220)
    started = time.perf_counter()
    caption = f"tiny_cnn, 16 px, synthetic, 30 steps; median of {args.repeats}"
    if args.json is not None:
        rows = measure_rounds(args.repeats, args.backends.split(","), [int(r) for r in args.ranks.split(",")], args.starts.split(","))
        args.json.write_text(json.dumps([{"backend": b, "ranks": r, "start": st, **run} for (b, r, st), runs in rows.items() for run in runs]))
        return 0
    if args.against:
        found = side_by_side(args.against, args.repeats, args.backends, args.ranks, args.starts)
        shown, _ = table(f"seconds per run beyond its training clock at {args.against} (before); {caption}", found["before"])
        console.print(shown)
        rows, before = found["after"], found["before"]
    else:
        command = command_start_sec()
        rows, before = measure_rounds(args.repeats, args.backends.split(","), [int(r) for r in args.ranks.split(",")], args.starts.split(",")), None
    shown, worst = table(f"seconds per run beyond its training clock (this checkout); {caption}", rows, before)
    console.print(shown)
    if not args.against:
        console.print(f"the larsbench command's own start (once per command): {command:.2f} s")
    met = worst <= args.target
    verdict = "met" if met else "MISSED"
    console.print(f"target: at most {args.target:g} s of overhead per run: {verdict} ({time.perf_counter() - started:.0f} s in all)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
