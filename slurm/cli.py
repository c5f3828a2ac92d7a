"""The ``slurm`` sub-command of ``larsbench``: sbatch scripts for an experiment.

``add_commands(subparsers)`` adds it to the main parser (``larsbench.main``); its handler
``cmd_slurm(args, console)`` returns the exit code. Bad input raises
``larsbench.core.errors.ConfigError`` (exit 2 in ``larsbench.main.main``).
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from rich.console import Console

from larsbench.slurm.options import add_option_flags, flag_options, merge

EPILOG = """\
Slurm options may also come from the experiment file's 'slurm:' section (same names with
'_', e.g. ntasks_per_node: 4); flags win. Runs of one allocation shape (nodes x ranks per
node) share one script, a job array when there are several; its runs file (next to it) maps
array index -> run. Each job writes its record to OUTPUT/results.jsonl, a failed run included.
'setup' lines are shell, run as written; every other value is quoted.

With --nightly DIR (for cron; see docs/history.md) a second script, <name>-history.sbatch, runs
`larsbench history DIR -o DIR/report --fail-on-step` once the grid's jobs have ended; with
--submit it is submitted with --dependency=afterany on them, and its job fails (status 1) when
the newest nights of a series form a regression step.

Every submitted job id is kept in DIR/slurm/jobs.jsonl. A wait cut short (the Slurm controller
gone for --controller-timeout seconds, the waiting process stopped) leaves them there: once Slurm
answers again, `larsbench slurm --output DIR --wait` waits for those jobs instead of submitting.

exit status: 0 scripts written (and, with --wait, every job completed), 1 a job did not
complete (with --nightly: or the gate found a regression), 2 bad input, sbatch or squeue
missing, or the controller gone while waiting."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from larsbench.suite.cli import add_run_flags

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
    slurm.add_argument("--repeats", type=int, metavar="N", help="run every setting N times (array tasks); overrides the experiment's 'repeats'")
    slurm.add_argument("--poll-seconds", type=float, default=1.0, metavar="S", help="squeue polling interval for --wait")
    slurm.add_argument("--controller-timeout", type=float, default=120.0, metavar="S",
                       help="how long --wait keeps asking a Slurm controller that does not answer before it gives up "
                       "(default 120); the jobs stay noted in DIR/slurm/jobs.jsonl and a later --wait picks them up")  # fmt: skip
    slurm.add_argument("--nightly", type=Path, metavar="DIR",
                       help="history folder: the grid writes to DIR/runs/<UTC time>, and a job that runs after it "
                       "(afterany) writes `larsbench history` of all of DIR to DIR/report and fails on a regression step")  # fmt: skip
    add_run_flags(slurm)
    add_option_flags(slurm)
    slurm.set_defaults(handler=cmd_slurm)


def cmd_slurm(args: argparse.Namespace, console: Console) -> int:
    from larsbench.core.errors import ConfigError
    from larsbench.core.files import made_folders
    from larsbench.core.results import check_writable
    from larsbench.core.spec import RUN_FIELDS
    from larsbench.slurm import nightly, submit, sweep

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    submit.check_seconds(args.poll_seconds, "--poll-seconds")
    submit.check_seconds(args.controller_timeout, "--controller-timeout")
    overrides = {name: getattr(args, name) for name in RUN_FIELDS if hasattr(args, name)}
    if args.wait and args.nightly is None and args.output is not None and submit.uncollected_jobs(args.output):
        return _reattach(args.output, args, say)  # the experiment may be gone or slow to prepare: not needed
    experiment, section = sweep.load(args.experiment, overrides, args.repeats)
    options = merge(section, flag_options(args))
    if args.nightly is not None:
        output = nightly.night_output(args.nightly, args.output)
    else:
        output = args.output or Path(experiment.output or "results")
        if args.wait and submit.uncollected_jobs(output):
            return _reattach(output, args, say)
    if args.submit or args.wait:
        submit.require("sbatch", *(["squeue"] if args.wait else []))
    scripts = sweep.plan(sweep.prepare_data(experiment), options, output)
    history = None
    if args.nightly is not None:
        history = nightly.plan_history(args.nightly, output, options.get("job_name") or experiment.name, options, os.getcwd())
    try:
        with made_folders(output):  # a refused output folder is not left behind
            check_writable(output)
            sweep.write(scripts, [(history.script, history.text)] if history else [])
    except OSError as exc:
        raise ConfigError("--output", f"cannot write to {output} ({exc.strerror or exc}); choose a writable folder") from None
    for job in scripts:
        runs = f"{len(job.runs)} runs (job array)" if len(job.runs) > 1 else "1 run"
        say(f"{job.script}  ({runs}, {job.shape.nodes} node(s) x {job.shape.ntasks_per_node} rank(s))")
    if history is not None:
        say(f"{history.script}  (the history of {args.nightly} and its gate, after the grid; report in {history.report})")
    if not (args.submit or args.wait):
        say("submit with: sbatch SCRIPT (or run again with --submit)"
            + ("; the history script with sbatch --dependency=afterany:<the grid's job ids>" if history else ""))  # fmt: skip
        return 0
    job_ids = []
    for job in scripts:
        job_ids.append(_submitted(output, submit.sbatch(job.script), job.script, say))
    if history is not None:
        grid = list(job_ids)
        job_ids.append(_submitted(output, submit.sbatch(history.script, after=grid), history.script, say, f" (after jobs {', '.join(grid)} end)"))
    if not args.wait:
        return 0
    status, tasks = _wait(output, job_ids, args, say)
    if history is not None:
        gate = next((t for t in tasks if t.job_id == job_ids[-1]), None)
        verdict = "passed" if gate is not None and gate.state == "COMPLETED" else "failed or did not run"
        say(f"history gate {verdict}: {history.report / 'history.md'}; log {history.log(job_ids[-1])}")
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
    return _wait(output, job_ids, args, say)[0]


def _wait(output: Path, job_ids: list[str], args: argparse.Namespace, say) -> tuple[int, list]:
    """Wait for ``job_ids``; their combined status. Cut short (the controller gone, the
    process stopped), the jobs stay noted as uncollected and the message says how to pick
    them up again."""
    from larsbench.core.errors import ConfigError
    from larsbench.slurm import submit

    again = f"`larsbench slurm --output {shlex.quote(str(output))} --wait` picks them up again"

    def progress(tasks: list[submit.Task]) -> None:
        say(f"jobs {', '.join(job_ids)}: {submit.summary(tasks) or 'not listed yet'}")

    def outage(error: str) -> None:
        say(f"the Slurm controller does not answer ({error}); asking again for up to {args.controller_timeout:g} s")

    try:
        tasks = submit.wait(job_ids, args.poll_seconds, on_change=progress, controller_timeout=args.controller_timeout, on_outage=outage)
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
    say(f"{'all jobs completed' if status == 0 else 'not every job completed'}; records in {output / 'results.jsonl'}")
    return status, tasks
