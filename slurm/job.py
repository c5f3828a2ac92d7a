"""Helpers the generated sbatch script calls inside the job (``python -m larsbench.slurm.job ...``).

``spec``      print the ``--spec-json`` value of one line of a runs file (the array index's run)
``queue-time`` print how long this start of the job waited in the queue
``finalize``  after ``srun`` failed: write a ``failed`` (or ``preempted``) record for the run
              unless rank 0 already wrote one, with the ranks' own error lines as the reason

Kept free of torch imports on the ``spec`` path: it runs before every job's ranks start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """The runs file: one ``{"index", "label", "spec"}`` object per line, index = line number."""
    runs = []
    for number, line in enumerate(Path(path).read_text().splitlines()):
        entry = json.loads(line)
        if entry.get("index") != number:
            raise ValueError(f"{path}: line {number + 1} has index {entry.get('index')!r}, expected {number}")
        runs.append(entry)
    return runs


def run_entry(path: str | Path, index: int) -> dict[str, Any]:
    runs = read_runs(path)
    if not 0 <= index < len(runs):
        raise SystemExit(f"slurm.job: {path} has {len(runs)} run(s); there is no index {index}")
    return runs[index]


def finalize(
    runs: Path, index: int, run_id: str, results: Path, experiment: str, exit_code: int, status: str = "failed"
) -> dict[str, Any] | None:
    """Append a record for a run whose ranks exited without one; None when one exists."""
    from larsbench.backends.registry import get_backend
    from larsbench.core.environment import ClusterEnvironment, first_host, port_for_job
    from larsbench.core.layout import RunFiles
    from larsbench.core.results import read_records
    from larsbench.loop.record import append_failure, rank_errors_text
    from larsbench.suite.config import build_spec

    if results.exists() and any(r.get("run_id") == run_id for r in read_records(results)):
        return None
    files = RunFiles.of(results, run_id)
    spec = build_spec([("spec", run_entry(runs, index)["spec"])])
    reason = rank_errors_text(files) or f"srun exited with status {exit_code}"
    if status == "preempted":
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        reason = f"preempted after {restarts} requeue(s) (srun status {exit_code}); {reason}"
    env = os.environ
    job_id = env.get("SLURM_JOB_ID")
    node_list = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    cluster = ClusterEnvironment(
        source="slurm", rank=0, world_size=spec.world_size, local_rank=0,
        local_world_size=int(env.get("SLURM_NTASKS_PER_NODE") or spec.world_size), node_rank=0,
        master_addr=first_host(node_list) if node_list else "127.0.0.1",
        master_port=port_for_job(job_id or "0"), job_id=job_id,
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"), node_list=node_list,
        num_nodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
    )  # fmt: skip
    try:
        versions = get_backend(spec.backend).versions()
    except Exception:  # the backend's library may be what failed to import
        versions = {}
    return append_failure(spec, files, experiment, reason, status=status, env=cluster, versions=versions)


def queue_seconds(job_fields: str) -> float | None:
    """StartTime − SubmitTime from ``scontrol show job -o`` output: how long this start of the
    job waited in the queue (a requeued job is submitted anew)."""
    import datetime

    found = dict(field.split("=", 1) for field in job_fields.split() if "=" in field)
    try:
        submit = datetime.datetime.fromisoformat(found["SubmitTime"])
        start = datetime.datetime.fromisoformat(found["StartTime"])
    except (KeyError, ValueError):
        return None
    return max(0.0, (start - submit).total_seconds())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsbench.slurm.job", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    spec = actions.add_parser("spec", help="print the spec JSON of one run of a runs file")
    spec.add_argument("--runs", required=True, type=Path)
    spec.add_argument("--index", required=True, type=int)
    done = actions.add_parser("finalize", help="record a run whose ranks failed without a record")
    done.add_argument("--runs", required=True, type=Path)
    done.add_argument("--index", required=True, type=int)
    done.add_argument("--run-id", required=True)
    done.add_argument("--results", required=True, type=Path)
    done.add_argument("--experiment", required=True)
    done.add_argument("--exit-code", required=True, type=int)
    done.add_argument("--status", default="failed", choices=["failed", "preempted"])
    actions.add_parser("queue-time", help="print how long this job waited in the queue (seconds), or nothing")
    args = parser.parse_args(argv)

    if args.action == "queue-time":
        import subprocess

        job = os.environ.get("SLURM_JOB_ID", "")
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False)
        seconds = queue_seconds(shown.stdout) if job and shown.returncode == 0 else None
        if seconds is not None:
            print(f"{seconds:.0f}")
        return 0

    if args.action == "spec":
        print(json.dumps(run_entry(args.runs, args.index)["spec"], separators=(",", ":")))
        return 0
    record = finalize(args.runs, args.index, args.run_id, args.results, args.experiment, args.exit_code, args.status)
    if record is None:
        print(f"larsbench: run {args.run_id} already has a record in {args.results}")
    else:
        print(f"larsbench: run {args.run_id} {record['status']}: {record['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
