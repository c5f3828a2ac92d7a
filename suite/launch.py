"""Run an experiment on this machine: each run's ranks started by its backend's own launcher."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from backends.registry import get_backend
from suite import provenance
from suite.config import Experiment, RunSpec
from suite.record import build_record
from suite.results import append_record, check_writable, read_records
from suite.worker import error_dir
from workloads.data import prepare


def run_experiment(experiment: Experiment, output: str | Path, console: Console) -> list[dict[str, Any]]:
    results = check_writable(output)
    records = []
    for index, spec in enumerate(experiment.runs, start=1):
        console.rule(f"run {index}/{len(experiment.runs)}: {spec.label}")
        records.append(launch_run(prepare(spec), results, experiment.name, console))
    return records


def launch_run(spec: RunSpec, results: Path, experiment: str, console: Console) -> dict[str, Any]:
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    backend = get_backend(spec.backend)
    worker = [
        sys.executable, "-m", "suite.worker",
        "--spec-json", json.dumps(spec.to_dict()),
        "--run-id", run_id,
        "--results", str(results),
        "--experiment", experiment,
    ]  # fmt: skip
    env = dict(os.environ)
    # Ranks on one machine share its cores; unset, every rank would spawn a thread per core.
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(spec.world_size)))
    completed = subprocess.run(backend.local_launch_command(spec.world_size, worker), env=env)

    written = read_records(results) if results.exists() else []
    record = next((r for r in written if r.get("run_id") == run_id), None)
    if record is None:
        reasons = _rank_errors(results, run_id) or f"launcher exited with status {completed.returncode}"
        console.print(f"[red]run failed:[/red] {reasons}")
        info = provenance.collect(spec.to_dict(), None, {})
        record = build_record(spec, run_id, experiment, info, status="failed", error=reasons)
        append_record(results, record)
    return record


def threads_per_rank(nprocs: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // nprocs)


def _rank_errors(results: Path, run_id: str) -> str | None:
    folder = error_dir(results)
    found = sorted(folder.glob(f"{run_id}.rank*")) if folder.is_dir() else []
    if not found:
        return None
    return "; ".join(f"{p.name.rsplit('.', 1)[1]}: {p.read_text().strip()}" for p in found)
