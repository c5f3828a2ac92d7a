"""Talking to Slurm: ``sbatch`` to submit, ``squeue`` to follow. Nothing else.

Commands are argument lists, never a joined string (a path with a space stays one argument).
``sbatch`` runs with the caller's ``SBATCH_*`` and ``SLURM_*`` variables removed (``SLURM_CONF``
kept): submitting from inside another job must not hand that job's partition, time or CPU
settings to the new one; the script's own ``#SBATCH`` lines are the whole truth.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from larsbench.core.errors import ConfigError

TERMINAL = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED",
})  # fmt: skip
KEEP = ("SLURM_CONF", "SLURM_CLUSTERS")  # where to submit: the user's choice, not an inherited job setting


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    return {k: v for k, v in env.items() if k in KEEP or not k.startswith(("SBATCH_", "SLURM_"))}


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, env=clean_environment(), **kwargs)
    except FileNotFoundError:
        raise ConfigError("--submit", f"{command[0]} not found: run this on a Slurm login node, or drop --submit and copy the scripts there") from None


def sbatch(script: Path, after: list[str] | None = None) -> str:
    """Submit one script; its job id (the array's id for a job array). ``after``: job ids it
    waits for (``--dependency=afterany``: it starts once each has ended, however it ended)."""
    dependency = [f"--dependency=afterany:{':'.join(after)}"] if after else []
    done = _run(["sbatch", "--parsable", *dependency, str(script)])
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(str(script), f"sbatch refused it: {message[-1] if message else f'status {done.returncode}'}")
    job_id = done.stdout.strip().split(";")[0]  # "123" or "123;cluster"
    if not job_id.isdigit():
        raise ConfigError(str(script), f"sbatch printed {done.stdout.strip()!r}, not a job id")
    return job_id


@dataclass(frozen=True)
class Task:
    """One job or one array task as squeue reports it."""

    job_id: str  # "123", "123_4", or "123_[5-9%2]" for array tasks not yet started
    state: str

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def job_states(job_ids: Iterable[str]) -> list[Task]:
    """Every job and array task of ``job_ids`` Slurm still knows (finished ones included,
    for MinJobAge seconds)."""
    ids = list(job_ids)
    done = _run(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(ids), "--format=%i|%T"])
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return []
        raise RuntimeError(f"squeue failed: {done.stderr.strip()}")
    tasks = []
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            tasks.append(Task(job_id, state.strip()))
    return tasks


def wait(
    job_ids: list[str],
    poll_seconds: float = 1.0,
    on_change: Callable[[list[Task]], None] | None = None,
    states: Callable[[list[str]], list[Task]] = job_states,
    settled: Callable[[Task], str | None] | None = None,
) -> list[Task]:
    """Block until every job (every array task) is finished; their final states.

    Polls squeue rather than ``sbatch --wait`` (which sleeps 2 s, then 10 s between checks).
    A requeued job goes back to PENDING and is waited for again. ``settled`` gives the final
    state of a task Slurm still shows COMPLETING, when something else says its script has ended
    (its record is written), else None: Slurm keeps a job COMPLETING until every node has
    released it, and a node it cannot reach holds it there until Slurm gives up on the node.
    """
    last: list[Task] | None = None
    missing_since: float | None = None
    failing_since: float | None = None
    while True:
        try:
            tasks = states(job_ids)
            if settled is not None:
                tasks = [_settle(t, settled) for t in tasks]
            failing_since = None
        except RuntimeError as exc:  # slurmctld busy or restarting: try again for a while
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > 120:
                raise ConfigError("--wait", f"{exc}; the jobs may still run: check them with squeue") from None
            time.sleep(max(poll_seconds, 2.0))
            continue
        if tasks != last and on_change is not None:
            on_change(tasks)
        last = tasks
        seen = {_base(t.job_id) for t in tasks}
        if tasks and all(t.done for t in tasks) and seen >= set(job_ids):
            return tasks
        if not seen >= set(job_ids):
            # Gone from squeue: finished longer than MinJobAge ago, or never accepted.
            missing_since = missing_since or time.monotonic()
            if time.monotonic() - missing_since > 30:
                gone = sorted(set(job_ids) - seen)
                return tasks + [Task(j, "UNKNOWN") for j in gone]
        else:
            missing_since = None
        time.sleep(poll_seconds)


def _settle(task: Task, settled: Callable[[Task], str | None]) -> Task:
    final = settled(task) if task.state == "COMPLETING" else None
    return Task(task.job_id, final) if final else task


def _base(job_id: str) -> str:
    return re.split(r"[_+]", job_id, maxsplit=1)[0]


def exit_status(tasks: list[Task]) -> int:
    """0 when every job and array task completed, 1 otherwise."""
    return 0 if tasks and all(t.state == "COMPLETED" for t in tasks) else 1


def summary(tasks: list[Task]) -> str:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state] = counts.get(task.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
