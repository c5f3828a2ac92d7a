"""Run an experiment on this machine: each run's ranks started by larsbench (suite.local_ranks), as srun starts them on a cluster."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from larsbench.core.device import means_cpu, pick_device
from larsbench.core.errors import ConfigError
from larsbench.core.files import RESERVE_BYTES, free_reserve, hold_reserve, space_note
from larsbench.core.layout import RunFiles
from larsbench.core.phases import LAUNCH_TIME_ENV
from larsbench.core.phases import summary as phase_summary
from larsbench.core.preemption import PREEMPT_SIGNAL
from larsbench.core.process import alive as process_alive
from larsbench.core.results import check_writable, read_records
from larsbench.core.spec import RunSpec, short_label
from larsbench.loop.checkpoint import latest_valid
from larsbench.loop.progress import read_status
from larsbench.loop.record import append_failure, build_record, rank_errors_text
from larsbench.suite.local_ranks import LocalRanks, start_servers
from larsbench.suite.config import Experiment
from larsbench.suite.repeats import decide_for, run_series
from larsbench.workloads.data import prepare


def run_experiment(
    experiment: Experiment, output: str | Path, console: Console, run_id: str | None = None, verbose: bool = False
) -> list[dict[str, Any]]:
    """Run every cell in turn. ``run_id`` (single-run experiments only) names the run, so
    that running it again resumes it from its last checkpoint. ``verbose`` streams every
    launcher's and library's output to the console instead of the run's log file."""
    if run_id is not None and len(experiment.runs) != 1:
        raise ConfigError("--run-id", f"names one run, but the experiment has {len(experiment.runs)}; select one run with flags")
    if run_id is not None and experiment.auto is not None:
        raise ConfigError("--run-id", "names one run, but --repeats auto makes a series of them; drop one of the two")
    if run_id is not None:
        check_run_id(run_id)
    for spec in experiment.runs:
        if spec.device == "cuda":  # here, not in a rank: a machine without a GPU is bad input, not a failed run
            pick_device("cuda", 0)
    results = check_writable(output)
    reserve = RunFiles.of(results, "").reserve
    try:
        hold_reserve(reserve)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write results to {output} ({exc.strerror or exc}); "
                          f"choose a folder with more than {RESERVE_BYTES // 1024} KiB free") from None  # fmt: skip
    records = []
    try:
        # Every rank server the runs will use, importing side by side before the first run
        # instead of one at a time between runs (suite.rank_server).
        start_servers([rank_environment(s.world_size, s.threads_per_rank) for s in experiment.runs if means_cpu(s.device)])
        for index, spec in enumerate(experiment.runs, start=1):
            if experiment.auto is None:
                repeat = f" (repeat {spec.repeat + 1})" if spec.repeat else ""
                console.rule(f"run {index}/{len(experiment.runs)}: {short_label(spec.to_dict())}{repeat}", style="dim")
                records.append(launch_run(prepare(spec), results, experiment.name, console, run_id, verbose))
                continue

            def one(repeat: RunSpec, series: dict[str, Any], index: int = index) -> dict[str, Any]:
                console.rule(f"setting {index}/{len(experiment.runs)}: {short_label(repeat.to_dict())} (repeat {repeat.repeat + 1}, "
                             f"at most {experiment.auto.most})", style="dim")  # fmt: skip
                return launch_run(prepare(repeat), results, experiment.name, console, None, verbose, series)

            series_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}-{index}"
            records += run_series(spec, experiment.auto, series_id, one, lambda text: console.print(f"  {escape(text)}"))
    finally:
        free_reserve(reserve)
    return records


def check_run_id(run_id: str) -> str:
    """A run id names files (``logs/<run_id>.log``, ``checkpoints/<run_id>/``): one plain name."""
    if not run_id.strip() or run_id in (".", "..") or re.search(r"[/\x00-\x1f\x7f]", run_id) or len(run_id.encode()) > 200:
        raise ConfigError("--run-id", f"{run_id!r} cannot name files; use letters, digits, '-', '_' or '.', no '/' (at most 200 bytes)")
    return run_id


def launch_run(
    spec: RunSpec, results: Path, experiment: str, console: Console, run_id: str | None = None, verbose: bool = False,
    series: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One run, its record returned. ``series``: the adaptive series it belongs to
    (``suite.repeats``): its record then says what was decided after it."""
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    files = RunFiles.of(results, run_id)
    worker = [
        sys.executable, "-m", "larsbench.suite.worker",
        "--spec-json", json.dumps(spec.to_dict()),
        "--run-id", run_id,
        "--results", str(results),
        "--experiment", experiment,
        *(["--series-json", json.dumps(series)] if series else []),
    ]  # fmt: skip
    env = rank_environment(spec.world_size, spec.threads_per_rank)
    try:
        files.clear_rank_files()  # an earlier attempt at this run id (a resume) left its own
        files.progress.unlink(missing_ok=True)
        files.log.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # an earlier run filled the disk, say: this one fails, the next may not
        reason = f"could not prepare the run's files in {files.folder} ({exc.strerror or exc})"
        console.print(f"[red]run failed:[/red] {escape(reason)}")
        return _record_failure(spec, files, experiment, reason, console, series=series)
    started = time.time()
    with _forwarding_preemption(files) as preempted, _watching_ranks(files) as vanished, files.log.open("ab") as log:
        output = None if verbose else log  # one log per run: launchers and libraries print a lot, and unlike each other
        env[LAUNCH_TIME_ENV] = repr(time.time())  # the ranks time their setup from here
        process = LocalRanks(spec.world_size, worker, env, output, served=means_cpu(spec.device))
        returncode = _follow(process, files, console, show=not verbose)
    ended = time.time()

    written = read_records(results) if results.exists() else []
    record = next((r for r in written if r.get("run_id") == run_id and r.get("timestamp_end", 0) >= started), None)
    log_note = f"log: {files.log}"
    if record is not None:
        _say_done(console, record, log_note)
        if verbose:
            _say_phases(console, record, started, ended)
        return record
    saved = latest_valid(files.checkpoints, spec.world_size) if preempted else None
    if saved is not None:
        error = f"checkpointed at {saved.name}; resume with: larsbench run <same settings> --output {results.parent} --run-id {run_id}"
        console.print(f"[yellow]run preempted:[/yellow] {escape(error)}")
        return _record_failure(spec, files, experiment, error, console, status="preempted", series=series)
    ranks_said = rank_errors_text(files)
    reasons = ranks_said or _last_error_line(files.log) or f"launcher exited with status {returncode}"
    if (not ranks_said or "No space left on device" in reasons) and "is full (" not in reasons:
        # A rank on a full disk may not have been able to say so: name the full disk here.
        if full := space_note([files.folder, "/dev/shm"]):
            reasons = f"{reasons}; {full}"
    silent = _silent_ranks(files, vanished)
    if silent:
        reasons = f"rank{silent[0]} stopped first without an error (killed?); {reasons}"
    console.print(f"[red]run failed:[/red] {escape(reasons)}")
    if not verbose:
        tail = _tail(files.log, 15)
        if tail:
            console.print(f"[dim]last lines of {escape(str(files.log))}:[/dim]")
            console.print(escape("\n".join(tail)), markup=True, highlight=False, soft_wrap=True)
    return _record_failure(spec, files, experiment, f"{reasons} ({log_note})", console, series=series)


def _record_failure(
    spec: RunSpec, files: RunFiles, experiment: str, reason: str, console: Console, status: str = "failed",
    series: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``append_failure``, with the reserve given back when the disk is full; a record that
    still cannot be written is shown, and the run still counts as failed."""
    decision = decide_for(files.results, {"run_id": files.run_id, "status": status}, series) if series else None
    try:
        return append_failure(spec, files, experiment, reason, status=status, repeats_decision=decision)
    except OSError as exc:
        error = exc
    if error.errno == errno.ENOSPC and free_reserve(files.reserve):
        try:
            return append_failure(spec, files, experiment, reason, status=status, repeats_decision=decision)
        except OSError as exc:
            error = exc
    console.print(f"[red]its record could not be written to {escape(str(files.results))}[/red] ({escape(error.strerror or str(error))}); "
                  "earlier records there are intact")  # fmt: skip
    return build_record(spec, files.run_id, experiment, {}, status=status, error=reason, repeats_decision=decision)


def rank_environment(nprocs: int, threads: int | None = None) -> dict[str, str]:
    """The environment local ranks start with (``threads``: the run's ``threads_per_rank``)."""
    env = dict(os.environ)
    # Ranks on one machine share its cores; unset, every rank would spawn a thread per core.
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nprocs)))
    # OpenMP threads that spin at the end of every parallel region (libgomp's default) hold a
    # core whenever another process wants one: with 2 threads per rank on 2 vCPUs, single-rank
    # runs fell to a tenth of their speed. Waiting threads sleep instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # No working directory on the ranks' sys.path (Python >= 3.11): a folder named like a
    # module larsbench or a library imports can never shadow it.
    env["PYTHONSAFEPATH"] = "1"
    return env


def _follow(process: LocalRanks, files: RunFiles, console: Console, show: bool) -> int:
    """Wait for the ranks, showing rank 0's progress (steps, loss, evaluations)."""
    shown_notes = 0
    with Progress(
        TextColumn("  "), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), console=console, transient=True, disable=not (show and console.is_terminal),
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=None, loss="…")
        while True:
            returncode = process.poll()
            status = read_status(files.progress) if show else None
            if status:
                loss = status.get("loss")
                bar.update(task, total=status["total"], completed=status["step"], loss="…" if loss is None else f"{loss:.4f}")
                for note in status.get("notes", [])[shown_notes:]:
                    bar.console.print(f"  {escape(note)}", highlight=False)
                shown_notes = len(status.get("notes", []))
            if returncode is not None:
                return returncode
            with contextlib.suppress(subprocess.TimeoutExpired):  # returns as soon as the ranks end
                process.wait(timeout=0.1)


def _say_done(console: Console, record: dict[str, Any], log_note: str) -> None:
    throughput = record.get("throughput_images_per_sec")
    parts = [record["status"]]
    if throughput is not None:
        parts.append(f"{throughput:.1f} images/s")
    if record.get("final_top1") is not None:
        parts.append(f"top-1 {record['final_top1']:.3f}")
    style = "green" if record["status"] == "ok" else "yellow"
    console.print(f"  [{style}]{escape(', '.join(parts))}[/{style}] [dim]({escape(log_note)})[/dim]")
    # A figure from a disturbed window must not pass for a clean one.
    if record.get("unstable"):
        console.print(f"  [yellow]unstable: {escape('; '.join(record.get('unstable_reasons') or []))}[/yellow]")
    straggler = record.get("straggler")
    if straggler:
        console.print(f"  [yellow]straggler: rank {straggler.get('rank')} on {escape(str(straggler.get('host')))}, "
                      f"{straggler.get('slower_by', 0):.0%} slower on its own[/yellow]")


def _say_phases(console: Console, record: dict[str, Any], started: float, ended: float) -> None:
    """Where the run's time went around its clock (``--verbose``): the record's phases, and
    what the ranks' exit cost after the record was written, seen from here."""
    console.print(f"  [dim]{escape(phase_summary(record.get('setup_sec'), record.get('phases_sec')))}[/dim]")
    clock = record.get("wall_time_sec") or 0.0
    exit_sec = max(0.0, ended - record["timestamp_end"])
    console.print(f"  [dim]exit {exit_sec:.2f} s after the record; {ended - started:.1f} s in all, "
                  f"{ended - started - clock:.1f} s of it outside the run's clock[/dim]")  # fmt: skip


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _last_error_line(log: Path) -> str | None:
    """A rank that died before it could leave an error (an import failed, say) still printed
    one: the last line of its traceback."""
    for line in reversed(_tail(log, 200)):
        if re.match(r"^\s*(\[\w+\]<std\w+>:)?\s*\w*(Error|Exception)\b.*: ", line):
            return line.strip()
    return None


def _silent_ranks(files: RunFiles, vanished: list[int]) -> list[int]:
    """Ranks that died without leaving an error: the watcher's first-vanished ones, or, when
    every rank went within one poll, those that said nothing while a peer reported an error
    (typically the peer's 'connection reset' from the killed rank)."""
    reported = set(files.rank_errors())
    return [rank for rank in vanished if rank not in reported] or files.silent_ranks()


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
            alive = {rank: process_alive(pid) for rank, pid in pids.items()}
            if len(alive) > 1 and any(alive.values()) and not all(alive.values()):
                vanished.extend(sorted(rank for rank, up in alive.items() if not up))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield vanished
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def _forwarding_preemption(files: RunFiles) -> Iterator[list[bool]]:
    """While the ranks run, a preemption signal sent to this process goes to every rank. Yields a flag that is truthy once a signal
    was forwarded."""
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
