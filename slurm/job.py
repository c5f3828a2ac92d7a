"""Helpers the generated sbatch script calls inside the job (``python -m larsbench.slurm.job ...``).

``spec``      print the ``--spec-json`` value of one line of a runs file (the array index's run)
``series``    print the adaptive series that line's run belongs to (``--series-json``), if any
``queue-time`` print how long this start of the job waited in the queue
``prepare``   before ``srun``, at every start: forget an earlier start's rank files, and fail the
              run (a ``failed`` record, exit 2) when the allocation does not match the script's shape
``watch``     beside ``srun``: stop it when it still runs a margin after the step began to fail
``finalize``  after ``srun`` failed: write a ``failed`` (or ``preempted``) record for the run
              unless rank 0 already wrote one, with the ranks' own error lines as the reason and,
              on several nodes, the nodes this one could not reach and the ranks they held

Kept free of torch imports on every path but a failure's record: they run at every job start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from larsbench.core.layout import RunFiles
from larsbench.core.process import alive

# Seconds a node's slurmd has to answer before the node counts as unreachable.
PROBE_TIMEOUT_SEC = 3.0


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
    runs: Path, index: int, run_id: str, results: Path, experiment: str, exit_code: int, status: str = "failed",
    reason: str | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Append a record for a run whose ranks exited without one; None when one exists.
    ``reason``: why, when the ranks never started (their own errors otherwise)."""
    from larsbench.backends.registry import get_backend
    from larsbench.core.environment import ClusterEnvironment, first_host, port_for_job
    from larsbench.core.results import read_records
    from larsbench.loop.record import append_failure, rank_errors_text
    from larsbench.suite.config import build_spec
    from larsbench.suite.repeats import decide_for

    if results.exists() and any(r.get("run_id") == run_id for r in read_records(results)):
        return None
    files = RunFiles.of(results, run_id)
    entry = run_entry(runs, index)
    spec = build_spec([("spec", entry["spec"])])
    env = os.environ
    node_list = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    num_nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    unreachable = unreachable_nodes(node_list) if status == "failed" and reason is None and num_nodes > 1 and node_list else None
    if reason is None:
        causes = [*node_causes(files, unreachable or {})]
        if files.stopped.exists():
            causes.append(files.stopped.read_text().strip())
        causes.append(rank_errors_text(files) or f"srun exited with status {exit_code}")
        reason = "; ".join(causes)
    if status == "preempted":
        restarts = env.get("SLURM_RESTART_COUNT", "0")
        reason = f"preempted after {restarts} requeue(s) (srun status {exit_code}); {reason}"
    job_id = env.get("SLURM_JOB_ID")
    cluster = ClusterEnvironment(
        source="slurm", rank=0, world_size=spec.world_size, local_rank=0,
        local_world_size=int(env.get("SLURM_NTASKS_PER_NODE") or spec.world_size), node_rank=0,
        master_addr=first_host(node_list) if node_list else "", master_port=port_for_job(job_id or "0"),
        job_id=job_id, array_task_id=env.get("SLURM_ARRAY_TASK_ID"), node_list=node_list, num_nodes=num_nodes,
    )  # fmt: skip
    try:
        versions = get_backend(spec.backend).versions()
    except Exception:  # the backend's library may be what failed to import
        versions = {}
    series = entry.get("series")
    decision = decide_for(results, {"run_id": run_id, "status": status}, series) if series else None
    return append_failure(
        spec, files, experiment, reason, status=status, env=cluster, versions=versions,
        unreachable_nodes=sorted(unreachable) if unreachable is not None else None, repeats_decision=decision,
    )  # fmt: skip


def node_causes(files: RunFiles, unreachable: dict[str, str]) -> list[str]:
    """Where the failure sits: each node this one cannot reach and the ranks it held, then each
    rank elsewhere that ended without a word while a peer reported an error."""
    hosts = files.rank_hosts()
    here = socket.gethostname()
    causes = []
    for node, why in sorted(unreachable.items()):
        ranks = ", ".join(str(r) for r, host in sorted(hosts.items()) if host == node) or "unknown"
        causes.append(f"{node} unreachable from {here} ({why}); its ranks: {ranks}")
    for rank in files.silent_ranks():
        if hosts.get(rank) not in unreachable:
            causes.append(f"rank{rank} on {hosts.get(rank, 'an unknown host')} ended without an error (killed?)")
    return causes


def unreachable_nodes(node_list: str, timeout: float = PROBE_TIMEOUT_SEC) -> dict[str, str] | None:
    """The job's nodes that do not answer now on their slurmd's port (the one port every
    node of a Slurm cluster serves), each with why; None when Slurm cannot say where they are."""
    addresses, port = node_addresses(node_list), slurmd_port()
    if not addresses or port is None:
        return None

    def answers(address: str) -> bool:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:
            return False

    with ThreadPoolExecutor(len(addresses)) as pool:
        answered = dict(zip(addresses, pool.map(answers, addresses.values())))
    return {
        node: f"no answer from its slurmd at {addresses[node]}:{port} within {timeout:g} s"
        for node, ok in answered.items() if not ok
    }  # fmt: skip


def node_addresses(node_list: str) -> dict[str, str]:
    """Node name → the address Slurm reaches it at (``scontrol show node``)."""
    shown = _scontrol("show", "node", "-o", node_list)
    found = {}
    for line in shown.splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "NodeName" in fields:
            found[fields["NodeName"]] = fields.get("NodeAddr") or fields["NodeName"]
    return found


def slurmd_port() -> int | None:
    for line in _scontrol("show", "config").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "SlurmdPort" and value.strip().isdigit():
            return int(value.strip())
    return None


def _scontrol(*args: str) -> str:
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def prepare(runs: Path, index: int, run_id: str, results: Path, experiment: str) -> str | None:
    """At every start of the job, before its ranks: forget an earlier start's pids and errors
    (a requeued job reuses the run id), then check the allocation against the shape the script
    asked for. Returns the mismatch, recorded as the run's failure, or None."""
    from larsbench.core.environment import allocation_mismatch

    RunFiles.of(results, run_id).clear_rank_files()
    requested = json.loads(os.environ.get("LARSBENCH_ALLOCATION") or "{}")
    problem = allocation_mismatch(requested, os.environ)
    if problem is not None:
        finalize(runs, index, run_id, results, experiment, 2, reason=f"allocation: {problem}")
    return problem


def watch(files: RunFiles, pid: int, margin: float, poll: float = 0.5) -> str | None:
    """Stop ``srun`` (``pid``) when it still runs ``margin`` seconds after its step began to
    fail: a rank left an error, or every rank on this node has exited. srun waits to hear from
    every node's step daemon, so one it cannot reach would hold the job until Slurm gives up on
    the node (SlurmdTimeout, 300 s by default). Returns the note it leaves in ``files.stopped``
    for the record, or None when srun ended by itself."""
    here = socket.gethostname()
    since, cause = None, None
    while alive(pid):
        if since is None:
            cause = _failing(files, here)
            since = time.monotonic() if cause else None
        elif time.monotonic() - since >= margin:
            note = f"srun still ran {margin:g} s after {cause}, so the job stopped it (a node it cannot reach never lets it end)"
            files.stopped.parent.mkdir(parents=True, exist_ok=True)
            files.stopped.write_text(note + "\n")
            print(f"larsbench: {note}", flush=True)
            os.kill(pid, signal.SIGKILL)
            return note
        time.sleep(poll)
    return None


def _failing(files: RunFiles, here: str) -> str | None:
    errors = [(files.error(rank).stat().st_mtime, rank) for rank in files.rank_errors()]
    if errors:
        return f"rank{min(errors)[1]} failed"
    hosts = files.rank_hosts()
    local = [pid for rank, pid in files.rank_pids().items() if hosts.get(rank) == here]
    if local and not any(alive(pid) for pid in local):
        return f"every rank on {here} ended"
    return None


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
    series = actions.add_parser("series", help="print the adaptive series of one run of a runs file (nothing if none)")
    series.add_argument("--runs", required=True, type=Path)
    series.add_argument("--index", required=True, type=int)
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--runs", required=True, type=Path)
    run.add_argument("--index", required=True, type=int)
    run.add_argument("--run-id", required=True)
    run.add_argument("--results", required=True, type=Path)
    run.add_argument("--experiment", required=True)
    actions.add_parser("prepare", parents=[run], help="forget an earlier start's rank files; fail on an allocation that does not match")
    done = actions.add_parser("finalize", parents=[run], help="record a run whose ranks failed without a record")
    done.add_argument("--exit-code", required=True, type=int)
    done.add_argument("--status", default="failed", choices=["failed", "preempted"])
    watcher = actions.add_parser("watch", help="stop srun when it still runs MARGIN seconds after its step began to fail")
    watcher.add_argument("--run-id", required=True)
    watcher.add_argument("--results", required=True, type=Path)
    watcher.add_argument("--pid", required=True, type=int)
    watcher.add_argument("--margin", required=True, type=float)
    actions.add_parser("queue-time", help="print how long this job waited in the queue (seconds), or nothing")
    args = parser.parse_args(argv)

    if args.action == "queue-time":
        job = os.environ.get("SLURM_JOB_ID", "")
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False)
        seconds = queue_seconds(shown.stdout) if job and shown.returncode == 0 else None
        if seconds is not None:
            print(f"{seconds:.0f}")
        return 0

    if args.action == "spec":
        print(json.dumps(run_entry(args.runs, args.index)["spec"], separators=(",", ":")))
        return 0
    if args.action == "series":
        found = run_entry(args.runs, args.index).get("series")
        print(json.dumps(found, separators=(",", ":")) if found else "")
        return 0
    if args.action == "prepare":
        problem = prepare(args.runs, args.index, args.run_id, args.results, args.experiment)
        if problem is not None:
            print(f"larsbench: error: allocation: {problem}", file=sys.stderr)
            return 2
        return 0
    if args.action == "watch":
        # Preemption's USR1 is the batch shell's to forward, not a reason for this to end.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        stopped = watch(RunFiles.of(args.results, args.run_id), args.pid, args.margin)
        return 3 if stopped else 0
    record = finalize(args.runs, args.index, args.run_id, args.results, args.experiment, args.exit_code, args.status)
    if record is None:
        print(f"larsbench: run {args.run_id} already has a record in {args.results}")
    else:
        print(f"larsbench: run {args.run_id} {record['status']}: {record['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
