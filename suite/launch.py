"""Run an experiment on this machine: each run's ranks started by its backend's own launcher."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from larsbench.backends.registry import get_backend
from larsbench.core.errors import ConfigError
from larsbench.core.layout import RunFiles
from larsbench.core.preemption import PREEMPT_SIGNAL
from larsbench.core.results import check_writable, read_records
from larsbench.core.spec import RunSpec
from larsbench.loop.checkpoint import latest_valid
from larsbench.loop.record import append_failure, rank_errors_text
from larsbench.suite.config import Experiment
from larsbench.workloads.data import prepare


def run_experiment(
    experiment: Experiment, output: str | Path, console: Console, run_id: str | None = None
) -> list[dict[str, Any]]:
    """Run every cell in turn. ``run_id`` (single-run experiments only) names the run, so
    that running it again resumes it from its last checkpoint."""
    if run_id is not None and len(experiment.runs) != 1:
        raise ConfigError("--run-id", f"names one run, but the experiment has {len(experiment.runs)}; select one run with flags")
    results = check_writable(output)
    records = []
    for index, spec in enumerate(experiment.runs, start=1):
        console.rule(f"run {index}/{len(experiment.runs)}: {spec.label}")
        records.append(launch_run(prepare(spec), results, experiment.name, console, run_id))
    return records


def launch_run(spec: RunSpec, results: Path, experiment: str, console: Console, run_id: str | None = None) -> dict[str, Any]:
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    files = RunFiles.of(results, run_id)
    backend = get_backend(spec.backend)
    worker = [
        sys.executable, "-m", "larsbench.suite.worker",
        "--spec-json", json.dumps(spec.to_dict()),
        "--run-id", run_id,
        "--results", str(results),
        "--experiment", experiment,
    ]  # fmt: skip
    env = dict(os.environ)
    # Ranks on one machine share its cores; unset, every rank would spawn a thread per core.
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(spec.world_size)))
    # No working directory on the ranks' sys.path (Python >= 3.11): a folder named like a
    # module larsbench or a library imports can never shadow it.
    env["PYTHONSAFEPATH"] = "1"
    files.clear_rank_files()  # an earlier attempt at this run id (a resume) left its own
    started = time.time()
    with _forwarding_preemption(files) as preempted, _watching_ranks(files) as vanished:
        completed = subprocess.run(backend.local_launch_command(spec.world_size, worker), env=env)

    written = read_records(results) if results.exists() else []
    record = next((r for r in written if r.get("run_id") == run_id and r.get("timestamp_end", 0) >= started), None)
    if record is not None:
        return record
    saved = latest_valid(files.checkpoints, spec.world_size) if preempted else None
    if saved is not None:
        error = f"checkpointed at {saved.name}; resume with: larsbench run <same settings> --output {results.parent} --run-id {run_id}"
        console.print(f"[yellow]run preempted:[/yellow] {escape(error)}")
        return append_failure(spec, files, experiment, error, status="preempted")
    reasons = rank_errors_text(files) or f"launcher exited with status {completed.returncode}"
    silent = _silent_ranks(files, vanished)
    if silent:
        reasons = f"rank{silent[0]} stopped first without an error (killed?); {reasons}"
    console.print(f"[red]run failed:[/red] {escape(reasons)}")
    return append_failure(spec, files, experiment, reasons)


def _silent_ranks(files: RunFiles, vanished: list[int]) -> list[int]:
    """Ranks that died without leaving an error: the watcher's first-vanished ones, or, when
    every rank went within one poll, those that said nothing while a peer reported an error
    (typically the peer's 'connection reset' from the killed rank)."""
    started = set(files.rank_pids())
    reported = set(files.rank_errors())
    first = [rank for rank in vanished if rank not in reported]
    if first:
        return first
    return sorted(started - reported) if reported else []


@contextlib.contextmanager
def _watching_ranks(files: RunFiles, interval: float = 0.1) -> Iterator[list[int]]:
    """Notes which rank's process disappeared first while the others still ran: a rank killed
    outright (OOM killer, SIGKILL) leaves no error of its own, and its launcher then stops the
    rest, so afterwards every rank looks alike."""
    vanished: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval) and not vanished:
            pids = files.rank_pids()
            alive = {rank: _alive(pid) for rank, pid in pids.items()}
            if len(alive) > 1 and any(alive.values()) and not all(alive.values()):
                vanished.extend(sorted(rank for rank, up in alive.items() if not up))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield vanished
    finally:
        done.set()
        thread.join()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its launcher) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@contextlib.contextmanager
def _forwarding_preemption(files: RunFiles) -> Iterator[list[bool]]:
    """While the ranks run, a preemption signal sent to this launcher goes to every rank
    (their launcher, e.g. torchrun, would not pass it on). Yields a flag that is truthy
    once a signal was forwarded."""
    forwarded: list[bool] = []

    def forward(signum, frame) -> None:
        forwarded.append(True)
        for pid in files.rank_pids().values():
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    previous = signal.signal(PREEMPT_SIGNAL, forward)
    try:
        yield forwarded
    finally:
        signal.signal(PREEMPT_SIGNAL, previous)


def threads_per_rank(nprocs: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // nprocs)
