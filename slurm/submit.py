"""Talking to Slurm: ``sbatch`` to submit, ``squeue`` to follow. Nothing else.

Commands are argument lists, never a joined string (a path with a space stays one argument).
``sbatch`` runs with the caller's ``SBATCH_*`` and ``SLURM_*`` variables removed (``SLURM_CONF``
kept): submitting from inside another job must not hand that job's partition, time or CPU
settings to the new one; the script's own ``#SBATCH`` lines are the whole truth.

Every submitted job id is noted in ``OUTPUT/slurm/jobs.jsonl`` as it is submitted, and marked
collected once a wait has seen it end: jobs submitted but never collected (no ``--wait``, or a
wait cut short: the controller went away, the waiting process was stopped) are what a later
``larsbench slurm --output OUTPUT --wait`` waits for instead of submitting again.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from larsbench.core.errors import ConfigError
from larsbench.core.files import append_lines, read_lines

CONTROLLER_TIMEOUT = 120.0  # seconds a wait keeps asking a controller that does not answer
SQUEUE_TIMEOUT = 60.0
JOBS_FILE = "jobs.jsonl"

TERMINAL = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED",
})  # fmt: skip
KEEP = ("SLURM_CONF", "SLURM_CLUSTERS")  # where to submit: the user's choice, not an inherited job setting


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    return {k: v for k, v in env.items() if k in KEEP or not k.startswith(("SBATCH_", "SLURM_"))}


# Which option needs which command, for the message when it is missing.
NEEDED_BY = {"sbatch": "--submit", "squeue": "--wait"}


def require(*commands: str) -> None:
    """Refuse before anything is submitted when a Slurm command that will be needed is missing
    (a job submitted by a process that then cannot follow it is a job lost track of)."""
    for command in commands:
        if shutil.which(command, path=clean_environment().get("PATH")) is None:
            raise ConfigError(
                NEEDED_BY.get(command, "--submit"), f"{command} is not on PATH: run this on a Slurm login node, or drop "
                "--submit and --wait and submit the written scripts with sbatch there",
            )  # fmt: skip


def _run(command: list[str], timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, env=clean_environment(), timeout=timeout, **kwargs)
    except FileNotFoundError:
        option = NEEDED_BY.get(command[0], "--submit")
        raise ConfigError(option, f"{command[0]} not found: run this on a Slurm login node, or drop --submit and --wait and copy the scripts there") from None


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


def job_states(job_ids: Iterable[str], timeout: float = SQUEUE_TIMEOUT) -> list[Task]:
    """Every job and array task of ``job_ids`` Slurm still knows (finished ones included,
    for MinJobAge seconds). RuntimeError when squeue fails or takes over ``timeout`` seconds."""
    ids = list(job_ids)
    try:
        done = _run(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(ids), "--format=%i|%T"], timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"squeue did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return []
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"squeue failed: {lines[-1] if lines else f'status {done.returncode}'}")
    tasks = []
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            tasks.append(Task(job_id, state.strip()))
    return tasks


class ControllerGone(Exception):
    """squeue has failed for longer than the wait allows: the jobs' fate is unknown."""


def wait(
    job_ids: list[str],
    poll_seconds: float = 1.0,
    on_change: Callable[[list[Task]], None] | None = None,
    states: Callable[[list[str]], list[Task]] | None = None,
    controller_timeout: float = CONTROLLER_TIMEOUT,
    on_outage: Callable[[str], None] | None = None,
    settled: Callable[[Task], str | None] | None = None,
) -> list[Task]:
    """Block until every job (every array task) is finished; their final states.

    Polls squeue rather than ``sbatch --wait`` (which sleeps 2 s, then 10 s between checks).
    A requeued job goes back to PENDING and is waited for again. While squeue fails (the
    controller busy, restarting or gone) it keeps asking, saying so once (``on_outage``), and
    raises ``ControllerGone`` after ``controller_timeout`` seconds without an answer. ``states``
    defaults to squeue (``job_states``), each call cut off after ``controller_timeout`` seconds.
    ``settled`` gives the final state of a task Slurm still shows COMPLETING, when something
    else says its script has ended (its record is written), else None: Slurm keeps a job
    COMPLETING until every node has released it, and a node it cannot reach holds it there
    until Slurm gives up on the node.
    """
    last: list[Task] | None = None
    ended: dict[str, list[Task]] = {}  # job → its tasks' final states, once all were seen done
    missing_since: float | None = None
    failing_since: float | None = None
    if states is None:
        # squeue itself retries an unreachable controller for about 20 s before it fails:
        # a shorter timeout would otherwise not be kept.
        states = functools.partial(job_states, timeout=min(SQUEUE_TIMEOUT, controller_timeout))
    while True:
        asked = time.monotonic()
        try:
            tasks = states(job_ids)
            if settled is not None:
                tasks = [_settle(t, settled) for t in tasks]
            failing_since = None
        except RuntimeError as exc:
            if failing_since is None:
                failing_since = asked  # no answer since the question was asked
                if on_outage is not None:
                    on_outage(str(exc))
            if time.monotonic() - failing_since > controller_timeout:
                raise ControllerGone(str(exc)) from None
            time.sleep(min(max(poll_seconds, 2.0), controller_timeout))
            continue
        seen = {_base(t.job_id) for t in tasks}
        for job in seen:
            mine = [t for t in tasks if _base(t.job_id) == job]
            if all(t.done for t in mine):
                ended[job] = mine
            else:
                ended.pop(job, None)  # requeued
        # A job that ended leaves squeue MinJobAge later, perhaps while a sibling still runs:
        # it keeps the final states it was seen with instead of becoming UNKNOWN.
        left = [job for job in job_ids if job not in seen and ended.get(job)]
        tasks = tasks + [t for job in left for t in ended[job]]
        seen |= set(left)
        if tasks != last and on_change is not None:
            on_change(tasks)
        last = tasks
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


def check_seconds(value: float, option: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(option, f"must be a positive number of seconds (got {value:g})")
    return value


# -- the jobs file ------------------------------------------------------------------------------


def jobs_file(output: str | Path) -> Path:
    return Path(output) / "slurm" / JOBS_FILE


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def note_submitted(output: str | Path, job_id: str, script: Path) -> None:
    """Keep a submitted job's id with the output, before anything else can go wrong."""
    append_lines(jobs_file(output), [json.dumps({"job_id": job_id, "script": str(script), "submitted_utc": _now()})])


def note_collected(output: str | Path, tasks: list[Task]) -> None:
    """Mark the jobs of ``tasks`` as waited for to their end, with their final states."""
    by_job: dict[str, list[Task]] = {}
    for task in tasks:
        by_job.setdefault(_base(task.job_id), []).append(task)
    append_lines(jobs_file(output), [
        json.dumps({"job_id": job, "collected_utc": _now(), "states": summary(mine)}) for job, mine in by_job.items()
    ])  # fmt: skip


def submitted_since(output: str | Path, job_ids: Iterable[str]) -> float | None:
    """When the first of ``job_ids`` was submitted (Unix time, to the second below), from the
    jobs file; None when it does not say."""
    path, wanted = jobs_file(output), set(job_ids)
    times = []
    for entry in read_lines(path) if path.is_file() else []:
        if str(entry.get("job_id")) in wanted and "submitted_utc" in entry:
            try:
                times.append(datetime.datetime.fromisoformat(str(entry["submitted_utc"])).timestamp())
            except ValueError:
                continue
    return min(times, default=None)


def uncollected_jobs(output: str | Path) -> list[str]:
    """Job ids submitted for ``output`` that no wait has seen end, in submission order."""
    path = jobs_file(output)
    if not path.is_file():
        return []
    waiting: dict[str, None] = {}  # in order; a job id a reset cluster hands out again counts anew
    for entry in read_lines(path):
        job = str(entry.get("job_id", ""))
        if not job.isdigit():
            continue
        if "collected_utc" in entry:
            waiting.pop(job, None)
        else:
            waiting[job] = None
    return list(waiting)
