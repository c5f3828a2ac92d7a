"""The ``slurm`` sub-command of ``larsbench``: sbatch scripts for an experiment.

``add_commands(subparsers)`` adds it to the main parser (``larsbench.main``); its handler
``cmd_slurm(args, console)`` returns the exit code. Bad input raises
``larsbench.core.errors.ConfigError`` (exit 2 in ``larsbench.main.main``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path

from rich.console import Console

from larsbench.core.errors import ConfigError
from larsbench.slurm.options import add_option_flags, flag_options, merge

EPILOG = """\
Slurm options may also come from the experiment file's 'slurm:' section (same names with
'_', e.g. ntasks_per_node: 4); flags win. Runs of one allocation shape (nodes x ranks per
node) share one script, a job array when there are several; its runs file (next to it) maps
array index -> run. Each job writes its record to OUTPUT/results.jsonl, a failed run included.
'setup' lines are shell, run as written; every other value is quoted.

With --comm, the jobs measure collectives instead of training: `larsbench comm` on the
allocation of each shape the experiment's runs take (across its nodes), once per backend, device
and network interface those runs use; records go to OUTPUT/comm.jsonl.

With --repeats auto, every setting's first repeat runs in the grid's jobs and a dependent job,
<name>-repeats.sbatch, submits each next repeat of the settings whose latest record says
'continue' (their throughput's 95% CI not yet within --repeats-target of the mean, fewer than
--repeats-max runs), then itself again after them; --wait follows the whole chain.

With --nightly DIR (for cron; see docs/history.md) a second script, <name>-history.sbatch, runs
`larsbench history DIR -o DIR/report --fail-on-step` once the grid's jobs have ended; with
--submit it is submitted with --dependency=afterany on them, and its job fails (status 1) when
the newest nights of a series form a regression step (3 when the gate is inconclusive).

Every submitted job id is kept in DIR/slurm/jobs.jsonl. A wait cut short (the Slurm controller
gone for --controller-timeout seconds, the waiting process stopped) leaves them there: once Slurm
answers again, `larsbench slurm --output DIR --wait` waits for those jobs instead of submitting.

exit status: 0 scripts written (and, with --wait, every job completed), 1 a job did not
complete (with --nightly: or the gate found a regression), 2 bad input, sbatch or squeue
missing, or the controller gone while waiting."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from larsbench.suite.cli import add_repeats_flags, add_run_flags

    slurm = subparsers.add_parser(
        "slurm", help="write sbatch scripts for an experiment (job arrays); --submit, --wait",
        description="Write plain sbatch scripts for an experiment's runs; optionally submit them and wait.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    slurm.add_argument("experiment", nargs="?", type=Path, help="experiment YAML; omit for the bundled default or a single run from flags")
    slurm.add_argument("--output", type=Path, metavar="DIR",
                       help="results folder (default: the experiment's 'output', else ./results); scripts go to DIR/slurm/")  # fmt: skip
    slurm.add_argument("--submit", action="store_true", help="submit the scripts with sbatch and print the job ids")
    slurm.add_argument("--wait", action="store_true",
                       help="submit, wait for every job; exit 0 only if all completed. When DIR/slurm/jobs.jsonl holds jobs "
                       "submitted earlier that no wait saw end, wait for those instead of submitting again")  # fmt: skip
    slurm.add_argument("--dry-run", action="store_true",
                       help="list the jobs and runs the scripts would hold (settings, ranks, global batch, steps, a rough "
                       "time from earlier runs of each setting on this machine) and write or submit nothing")  # fmt: skip
    slurm.add_argument("--poll-seconds", type=float, default=1.0, metavar="S", help="squeue polling interval for --wait")
    slurm.add_argument("--controller-timeout", type=float, default=120.0, metavar="S",
                       help="how long --wait keeps asking a Slurm controller that does not answer before it gives up "
                       "(default 120); the jobs stay noted in DIR/slurm/jobs.jsonl and a later --wait picks them up")  # fmt: skip
    slurm.add_argument("--nightly", type=Path, metavar="DIR",
                       help="history folder: the grid writes to DIR/runs/<UTC time>, and a job that runs after it "
                       "(afterany) writes `larsbench history` of all of DIR to DIR/report and fails on a regression step")  # fmt: skip
    add_repeats_flags(slurm)
    comm = slurm.add_argument_group("collectives (--comm)")
    comm.add_argument("--comm", action="store_true", help="measure the collectives (larsbench comm) on the runs' allocations instead of training")
    comm.add_argument("--min-bytes", default="4K", metavar="SIZE", help="smallest message (default 4K)")
    comm.add_argument("--max-bytes", default="256M", metavar="SIZE", help="largest message (default 256M)")
    comm.add_argument("--operations", default="all_reduce,all_gather,broadcast", help="comma-separated (default: all three)")
    comm.add_argument("--iterations", type=int, default=20, metavar="N", help="collectives per timed loop, at most (default 20, as nccl-tests' -n; fewer for sizes that would pass the 1 s budget); 3 loops per size")
    add_run_flags(slurm)
    add_option_flags(slurm)
    slurm.set_defaults(handler=cmd_slurm)


def cmd_slurm(args: argparse.Namespace, console: Console) -> int:
    from larsbench.backends.registry import get_backend
    from larsbench.core.spec import RUN_FIELDS
    from larsbench.slurm import nightly, repeats, submit, sweep

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    submit.check_seconds(args.poll_seconds, "--poll-seconds")
    submit.check_seconds(args.controller_timeout, "--controller-timeout")
    request = _comm_request(args) if args.comm else None
    overrides = {name: getattr(args, name) for name in RUN_FIELDS if hasattr(args, name)}
    if args.wait and args.nightly is None and args.output is not None and submit.uncollected_jobs(args.output):
        return _reattach(args.output, args, say)  # the experiment may be gone or slow to prepare: not needed
    experiment, section = sweep.load(args.experiment, overrides, args.repeats, args.repeats_target, args.repeats_max)
    options = merge(section, flag_options(args))
    if experiment.auto is not None and args.nightly is not None and request is None:
        raise ConfigError("--repeats", "auto runs repeats after the grid, and the nightly history job would not wait for "
                          "them; give a number of repeats with --nightly")  # fmt: skip
    if args.nightly is not None:
        output = nightly.night_output(args.nightly, args.output)
    else:
        output = args.output or Path(experiment.output or "results")
        if args.wait and submit.uncollected_jobs(output):
            return _reattach(output, args, say)
    if request is not None:
        for name in sorted({spec.backend for spec in experiment.runs}):
            get_backend(name).check_available()
    if args.dry_run:
        if args.submit or args.wait or args.nightly is not None:
            raise ConfigError("--dry-run", "writes and submits nothing; drop --submit, --wait and --nightly, or --dry-run")
        return _dry_run(args, request, experiment, options, output, console, say)
    if args.submit or args.wait:
        submit.require("sbatch", *(["squeue"] if args.wait else []))
    if request is not None:
        return _comm(args, request, experiment, options, output, console, say)
    experiment = sweep.prepare_data(experiment)
    series = repeats.series_ids(experiment, time.strftime("%Y%m%dT%H%M%S")) if experiment.auto is not None else None
    scripts = sweep.plan(experiment, options, output, series=series)
    history = adaptive = None
    if args.nightly is not None:
        history = nightly.plan_history(args.nightly, output, options.get("job_name") or experiment.name, options, os.getcwd())
    if series is not None:
        adaptive = repeats.plan_repeats(experiment, series, options, output, os.getcwd())
    extra = [(history.script, history.text)] if history else []
    extra += [(adaptive.script, adaptive.text), (adaptive.plan, adaptive.plan_text, None)] if adaptive else []
    _write(output, lambda: sweep.write(scripts, extra))
    for job in scripts:
        runs = f"{len(job.runs)} runs (job array)" if len(job.runs) > 1 else "1 run"
        say(f"{job.script}  ({runs}, {job.shape.nodes} node(s) x {job.shape.ntasks_per_node} rank(s))")
    if history is not None:
        say(f"{history.script}  (the history of {args.nightly} and its gate, after the grid; report in {history.report})")
    if adaptive is not None:
        say(f"{adaptive.script}  (submits each setting's next repeat until its throughput is known within "
            f"±{experiment.auto.target * 100:.3g}% or {experiment.auto.most} runs; plan in {adaptive.plan})")
    if not (args.submit or args.wait):
        say("submit with: sbatch SCRIPT (or run again with --submit)"
            + ("; the history script with sbatch --dependency=afterany:<the grid's job ids>" if history else "")
            + ("; the repeats script with sbatch --dependency=afterany:<the grid's job ids>" if adaptive else ""))  # fmt: skip
        return 0
    job_ids = []
    for job in scripts:
        job_ids.append(_submitted(output, submit.sbatch(job.script), job.script, say))
    grid = list(job_ids)
    for after in (history, adaptive):
        if after is not None:
            job_ids.append(_submitted(output, submit.sbatch(after.script, after=grid), after.script, say, f" (after jobs {', '.join(grid)} end)"))
    if not args.wait:
        return 0
    status, tasks = _wait(output, job_ids, args, say)
    if adaptive is not None:
        status = max(status, _follow_repeats(output, job_ids, args, say))
    if history is not None:
        gate = next((t for t in tasks if t.job_id == job_ids[-1]), None)
        verdict = "passed" if gate is not None and gate.state == "COMPLETED" else "failed or did not run"
        say(f"history gate {verdict}: {history.report / 'history.md'}; log {history.log(job_ids[-1])}")
    return status


def _dry_run(args: argparse.Namespace, request, experiment, options: dict, output: Path, console: Console, say) -> int:
    """What the scripts would hold, from the pure planners: no data set is generated and no
    file is written (the runs file would name the generated set's folder, made at write time)."""
    from larsbench.suite.plan import plan, plan_table, total_text

    if request is not None:
        from larsbench.slurm import comm

        sizes, operations = request
        for job in comm.plan_comm(experiment, options, output, sizes, operations, args.iterations, os.getcwd()):
            say(f"would write {job.script}  (collectives of {', '.join(m.backend for m in job.measures)}, "
                f"{job.shape.nodes} node(s) x {job.shape.ntasks_per_node} rank(s))")  # fmt: skip
        return 0
    from larsbench.slurm import sweep

    for job in sweep.plan(experiment, options, output):
        runs = f"{len(job.runs)} runs as a job array" if len(job.runs) > 1 else "1 run"
        say(f"would write {job.script}  ({runs}, {job.shape.nodes} node(s) x {job.shape.ntasks_per_node} rank(s))")
    planned = plan(experiment.runs, output)
    console.print(plan_table(planned, f"experiment {experiment.name!r}: the runs (dry run: nothing is written or submitted)"))
    say(f"{total_text(planned)} of running time, queueing not included; records would go to {output / 'results.jsonl'}")
    return 0


def _write(output: Path, write) -> None:
    """``write`` the scripts (all or none, ``sweep.write``) into ``output``; an output folder
    that cannot take them is refused and not left behind."""
    from larsbench.core.files import made_folders
    from larsbench.core.results import check_writable

    try:
        with made_folders(output):
            check_writable(output)
            write()
    except OSError as exc:
        raise ConfigError("--output", f"cannot write to {output} ({exc.strerror or exc}); choose a writable folder") from None


def _follow_repeats(output: Path, seen: list[str], args: argparse.Namespace, say) -> int:
    """Wait for the jobs the repeats job submitted (noted in the jobs file), round after round,
    until it submits no more; their combined status."""
    from larsbench.slurm import submit

    status, seen = 0, set(seen)
    while more := [job for job in submit.uncollected_jobs(output) if job not in seen]:
        seen |= set(more)
        status = max(status, _wait(output, more, args, say)[0])
    return status


def _submitted(output: Path, job_id: str, script: Path, say, note: str = "") -> str:
    from larsbench.slurm import submit

    say(f"submitted {script.name}: job {job_id}{note}")
    try:
        submit.note_submitted(output, job_id, script)
    except OSError as exc:  # the job runs regardless; its id is on the console
        say(f"job {job_id} could not be noted in {submit.jobs_file(output)} ({exc.strerror or exc}); keep its id to follow it")
    return job_id


def _reattach(output: Path, args: argparse.Namespace, say) -> int:
    from larsbench.slurm import submit

    job_ids = submit.uncollected_jobs(output)
    say(f"{submit.jobs_file(output)}: jobs {', '.join(job_ids)} were submitted and not yet seen to end; "
        "waiting for them instead of submitting again")  # fmt: skip
    records = [p for p in (output / "results.jsonl", output / "comm.jsonl") if p.exists()]
    return _wait(output, job_ids, args, say, submit.submitted_since(output, job_ids), records)[0]


def _wait(
    output: Path, job_ids: list[str], args: argparse.Namespace, say, since: float | None = None, records: list[Path] | None = None,
    settle: bool = True,
) -> tuple[int, list]:  # fmt: skip
    """Wait for ``job_ids`` (submitted at ``since``, default now); their combined status. Cut
    short (the controller gone, the process stopped), the jobs stay noted as uncollected and the
    message says how to pick them up again."""
    from larsbench.slurm import submit

    since = time.time() if since is None else since
    again = f"`larsbench slurm --output {shlex.quote(str(output))} --wait` picks them up again"

    def progress(tasks: list[submit.Task]) -> None:
        say(f"jobs {', '.join(job_ids)}: {submit.summary(tasks) or 'not listed yet'}")

    def outage(error: str) -> None:
        say(f"the Slurm controller does not answer ({error}); asking again for up to {args.controller_timeout:g} s")

    try:
        tasks = submit.wait(job_ids, args.poll_seconds, on_change=progress, controller_timeout=args.controller_timeout,
                            on_outage=outage, settled=(lambda task: _recorded(output, task, since)) if settle else None)  # fmt: skip
    except submit.ControllerGone as exc:
        raise ConfigError("--wait", f"no answer from the Slurm controller for {args.controller_timeout:g} s ({exc}); jobs "
                          f"{', '.join(job_ids)} may still run and are kept in {submit.jobs_file(output)}: once Slurm is back, {again}") from None  # fmt: skip
    except KeyboardInterrupt:
        say(f"stopped waiting; jobs {', '.join(job_ids)} keep running: {again}")
        raise
    try:
        submit.note_collected(output, tasks)
    except OSError as exc:
        say(f"could not mark the jobs collected in {submit.jobs_file(output)} ({exc.strerror or exc})")
    for task in tasks:
        if task.state != "COMPLETED":
            say(f"job {task.job_id}: {task.state}")
    status = submit.exit_status(tasks)
    where = ", ".join(str(p) for p in (records or [output / "results.jsonl"]))
    say(f"{'all jobs completed' if status == 0 else 'not every job completed'}; records in {where}")
    return status, tasks


def _recorded(output: Path, task, since: float) -> str | None:
    """COMPLETED or FAILED for a job task whose run has written its record since ``since``
    (its script has ended), else None. A run id ends with its job (array task) id."""
    from larsbench.core.results import read_records

    results = output / "results.jsonl"
    found = [
        r for r in (read_records(results) if results.exists() else [])
        if str(r.get("run_id", "")).endswith(f"-{task.job_id}") and (r.get("timestamp_end") or 0) >= since
    ]  # fmt: skip
    if not found:
        return None
    return "COMPLETED" if found[-1].get("status") == "ok" else "FAILED"


def _comm_request(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """The message sizes and operations of ``--comm``, checked before anything is written."""
    from larsbench.suite.comm import parse_size, size_sweep
    from larsbench.suite.comm_worker import OPERATIONS

    if args.nightly is not None:
        raise ConfigError("--comm", "measures collectives once, not a nightly grid; drop --nightly or --comm")
    smallest, largest = parse_size(args.min_bytes, "--min-bytes"), parse_size(args.max_bytes, "--max-bytes")
    if smallest > largest:
        raise ConfigError("--min-bytes", f"{args.min_bytes} is larger than --max-bytes {args.max_bytes}")
    operations = [op.strip() for op in args.operations.split(",") if op.strip()]
    for op in operations:
        if op not in OPERATIONS:
            raise ConfigError("--operations", f"unknown operation {op!r}; choose from {', '.join(OPERATIONS)}")
    if args.iterations < 3:
        raise ConfigError("--iterations", "must be at least 3 collectives per timed loop")
    return size_sweep(smallest, largest), operations


def _comm(args: argparse.Namespace, request: tuple[list[int], list[str]], experiment, options: dict, output: Path,
          console: Console, say) -> int:  # fmt: skip
    from larsbench.core.files import read_lines
    from larsbench.slurm import comm, submit
    from larsbench.suite.comm import COMM_FILE, comm_table

    sizes, operations = request
    jobs = comm.plan_comm(experiment, options, output, sizes, operations, args.iterations, os.getcwd())
    _write(output, lambda: comm.write_comm_jobs(jobs))
    for job in jobs:
        say(f"{job.script}  (collectives of {', '.join(m.backend for m in job.measures)}, "
            f"{job.shape.nodes} node(s) x {job.shape.ntasks_per_node} rank(s))")  # fmt: skip
    if not (args.submit or args.wait):
        say("submit with: sbatch SCRIPT (or run again with --submit)")
        return 0
    submitted = {_submitted(output, submit.sbatch(job.script), job.script, say): job for job in jobs}
    if not args.wait:
        return 0
    results = output / COMM_FILE
    status, _ = _wait(output, list(submitted), args, say, records=[results], settle=False)
    suffixes = [s for job_id, job in submitted.items() for s in comm.run_id_suffixes(job, job_id)]
    records = [r for r in (read_lines(results) if results.exists() else []) if str(r.get("run_id", "")).endswith(tuple(suffixes))]
    if records:
        say("")
        console.print(comm_table(records, f"collectives: {len(records)} measurement(s) → {results}"))
    measured = {str(r["run_id"]) for r in records}
    missing = [s for s in suffixes if not any(m.endswith(s) for m in measured)]
    for suffix in missing:
        say(f"no measurements from run *{suffix}; see the job's log in {output / 'slurm' / 'logs'}")
    return 1 if missing or status else 0
