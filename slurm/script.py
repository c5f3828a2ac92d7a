"""The sbatch script of one allocation shape: a pure function of its options, nothing else.

``render_script`` returns the whole text. Its keyword arguments *are* the options (the
submitit/ReFrame shape): those in ``SBATCH_OPTIONS`` become ``#SBATCH --name=value`` lines
(``_`` → ``-``, sorted, every value through ``shlex.quote``), ``extra_sbatch`` passes further
``#SBATCH`` lines (``--name[=value]``, the value quoted too), ``setup`` lines run as written (shell by design: module loads,
venv activation), and the ``srun`` line is built with ``shlex.join``. The options a user may
set (experiment ``slurm:`` section or flags) are derived from this signature minus
``INTERNAL``; see ``slurm.options``.

Every value that reaches the script is quoted; values also may not contain a line break (a
``#SBATCH`` line is a comment to bash, so quoting alone cannot stop a newline from starting a
command there). The one exception is ``setup``: those lines are shell, run as written.

What the script does (the contract with ``larsbench.suite.worker``, see ``slurm/__init__.py``):
picks its run from the runs file (``SLURM_ARRAY_TASK_ID``, 0 outside an array), derives a run
id that survives a requeue, checks the allocation against the shape it asked for, starts the
ranks with ``srun python -m larsbench.suite.worker`` in the background next to a watchdog that
stops ``srun`` when the step cannot end, forwards the pre-time-limit ``USR1`` to the ranks,
requeues the job when they exit with the preempted status, and writes a ``failed`` record when
they fail without one.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, Strict

from larsbench.core.phases import LAUNCH_TIME_ENV
from larsbench.core.preemption import EXIT_PREEMPTED

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Text = Annotated[str, Strict(), Field(min_length=1)]


def _doc(text: str) -> Any:
    return Field(description=text)


# Keyword arguments of render_script that become "#SBATCH --name=value" lines.
SBATCH_OPTIONS = (
    "job_name", "partition", "account", "qos", "time", "nodes", "ntasks_per_node",
    "gpus_per_node", "cpus_per_task", "mem", "constraint", "array", "chdir", "output",
    "open_mode", "signal", "requeue",
)  # fmt: skip

# Keyword arguments larsbench fills in itself; every other one is a user option.
INTERNAL = ("runs_file", "results", "experiment", "labels", "array", "chdir", "output", "open_mode", "signal", "requeue", "allocation",
            "series")  # fmt: skip


class ShellVar(str):
    """A word of the srun line that is a shell variable set earlier in the script."""


def _word(token: str) -> str:
    return f'"${token}"' if isinstance(token, ShellVar) else shlex.quote(token)


def join_words(tokens: Sequence[str]) -> str:
    """``shlex.join`` for literal words; ``ShellVar`` words expand as ``"$name"``."""
    if not any(isinstance(t, ShellVar) for t in tokens):
        return shlex.join(tokens)
    return " ".join(_word(t) for t in tokens)


EXTRA_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(=.*)?", re.DOTALL)


def extra_option(line: str) -> str:
    """An ``extra_sbatch`` entry as ``--name`` or ``--name=value`` (a leading ``#SBATCH`` is
    dropped); its value is quoted like every other."""
    option = line.strip().removeprefix("#SBATCH").strip()
    if not EXTRA_OPTION.fullmatch(option):
        from larsbench.core.errors import ConfigError

        raise ConfigError("extra_sbatch", f"{line!r} is not a long sbatch option; write it as --name or --name=value, e.g. '--exclusive'")
    return option


def check_line(key: str, value: str) -> None:
    """A value that ends up on a script line may not break that line."""
    if re.search(r"[\r\n\x00]", value):
        from larsbench.core.errors import ConfigError

        raise ConfigError(key, "may not contain a line break or NUL character")


def header_lines(values: dict[str, Any], extra_sbatch: Sequence[str] = ()) -> list[str]:
    """``#SBATCH --name=value`` for each set value (``_`` → ``-``, sorted, quoted; True: a bare
    flag), then the ``extra_sbatch`` lines."""
    header = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            header.append(f"#SBATCH {flag}")
        else:
            check_line(name, str(value))
            header.append(f"#SBATCH {flag}={shlex.quote(str(value))}")
    header.sort()
    for line in extra_sbatch:
        check_line("extra_sbatch", line)
        flag, eq, value = extra_option(line).partition("=")
        header.append(f"#SBATCH {flag}" + (f"={shlex.quote(value)}" if eq else ""))
    return header


def setup_lines(setup: Sequence[str]) -> list[str]:
    """The config's setup lines, run as written (the one unquoted part of a script)."""
    return ["", "# Environment setup from the config, run as written (not quoted: shell by design).", *setup] if setup else []


# How every rank starts, whatever the job runs.
RANK_ENVIRONMENT = (
    "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}",
    "# waiting OpenMP threads sleep instead of spinning on a core another process needs",
    "export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}",
    "# no working directory on the ranks' sys.path: nothing in it can shadow a module",
    "export PYTHONSAFEPATH=1",
)


def srun_words(nodes: int, ntasks_per_node: int, cpus_per_task: int | None) -> list[str]:
    """``srun`` for one rank per task over the whole allocation; a failing rank ends the step."""
    words = ["srun", "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks={nodes * ntasks_per_node}", f"--ntasks-per-node={ntasks_per_node}"]
    if cpus_per_task is not None:
        # Since Slurm 22.05 srun no longer inherits the job's --cpus-per-task.
        words.append(f"--cpus-per-task={cpus_per_task}")
    return words


def render_script(
    *,
    # -- user options (experiment `slurm:` section or command-line flags) ----------------------
    job_name: Annotated[Text, _doc("job name (default: the experiment's name)")],
    nodes: Annotated[PositiveInt, _doc("nodes per run (default: world_size / ntasks_per_node)")],
    ntasks_per_node: Annotated[
        PositiveInt, _doc("ranks per node (default: gpus_per_node, else all ranks on one node)")
    ],
    partition: Annotated[Text | None, _doc("partition")] = None,
    account: Annotated[Text | None, _doc("account to charge")] = None,
    qos: Annotated[Text | None, _doc("quality of service")] = None,
    time: Annotated[Text | PositiveInt | None, _doc("time limit: minutes or [D-]HH:MM:SS")] = None,
    gpus_per_node: Annotated[PositiveInt | Text | None, _doc("GPUs per node: 4 or a100:4")] = None,
    cpus_per_task: Annotated[PositiveInt | None, _doc("CPUs per rank (also its thread count)")] = None,
    mem: Annotated[Text | PositiveInt | None, _doc("memory per node: 64G, or megabytes")] = None,
    constraint: Annotated[Text | None, _doc("node features, e.g. 'a100&ib'")] = None,
    extra_sbatch: Annotated[
        list[Text], _doc("more '#SBATCH' options: --name or --name=value, e.g. '--exclusive' (the value is quoted)")
    ] = (),  # type: ignore[assignment]
    setup: Annotated[
        list[str],
        _doc("shell lines run before the ranks start (module load, source venv/bin/activate); "
             "run as written: the one part of the script that is not quoted"),
    ] = (),  # type: ignore[assignment]
    python: Annotated[Text, _doc("the Python that runs the ranks (default: this one)")] = "python",
    signal_seconds: Annotated[
        PositiveInt, _doc("seconds before the time limit at which the ranks checkpoint and requeue")
    ] = 300,
    max_requeues: Annotated[NonNegativeInt, _doc("requeues of a preempted run before giving up")] = 10,
    stop_margin_seconds: Annotated[
        PositiveInt,
        _doc("seconds srun may still run after a rank failed (or every rank on the first node ended) before the "
             "job stops it: a node srun cannot reach never lets it end; keep it above Slurm's KillWait"),
    ] = 60,
    array_throttle: Annotated[PositiveInt | None, _doc("at most this many runs of a job array at once")] = None,
    # -- filled in by larsbench -----------------------------------------------------------------
    runs_file: str,
    results: str,
    experiment: str,
    labels: Sequence[str] = (),
    chdir: str | None = None,
    output: str | None = None,
    allocation: dict[str, Any] | None = None,
    array: str | None = None,
    open_mode: str = "append",
    signal: str | None = None,
    requeue: bool = True,
    series: bool = False,
) -> str:
    """The sbatch script for ``len(labels)`` runs of one shape (a job array when more than one).

    ``labels[i]`` describes line ``i`` of ``runs_file`` (a comment only; the runs file holds
    the specs). ``allocation`` is exported as ``LARSBENCH_ALLOCATION`` (JSON) for provenance.
    ``series``: the runs belong to adaptive series of repeats (``repeats: auto``; their runs
    file says which): rank 0 records what was decided after each run (``suite.repeats``).
    """
    count = max(1, len(labels))
    if array is None and count > 1:
        array = f"0-{count - 1}" + (f"%{array_throttle}" if array_throttle else "")
    if signal is None:
        signal = f"B:USR1@{signal_seconds}"
    values = {
        "job_name": job_name, "partition": partition, "account": account, "qos": qos,
        "time": time, "nodes": nodes, "ntasks_per_node": ntasks_per_node,
        "gpus_per_node": gpus_per_node, "cpus_per_task": cpus_per_task, "mem": mem,
        "constraint": constraint, "array": array, "chdir": chdir, "output": output,
        "open_mode": open_mode, "signal": signal, "requeue": requeue,
    }  # fmt: skip
    assert set(values) == set(SBATCH_OPTIONS)
    header = header_lines(values, extra_sbatch)

    srun = srun_words(nodes, ntasks_per_node, cpus_per_task) + [
        ShellVar("python"), "-m", "larsbench.suite.worker", "--spec-json", ShellVar("spec"), "--run-id", ShellVar("run_id"),
        "--results", ShellVar("results"), "--experiment", ShellVar("experiment"),
        *(["--series-json", ShellVar("series")] if series else []),
    ]  # fmt: skip
    run = [
        "--runs", ShellVar("runs"), "--index", ShellVar("index"), "--run-id", ShellVar("run_id"),
        "--results", ShellVar("results"), "--experiment", ShellVar("experiment"),
    ]  # fmt: skip
    job = [ShellVar("python"), "-m", "larsbench.slurm.job"]
    finalize = [*job, "finalize", *run, "--exit-code", ShellVar("status")]
    watch = [*job, "watch", "--run-id", ShellVar("run_id"), "--results", ShellVar("results"), "--pid", ShellVar("srun_pid"),
             "--margin", str(stop_margin_seconds)]  # fmt: skip

    what = f"{count} runs as a job array (one run per array index)" if count > 1 else "1 run"
    listing = [f"#   {i}: {comment_text(label)}" for i, label in enumerate(labels[:40])]
    if len(labels) > 40:
        listing.append(f"#   ... {len(labels) - 40} more in the runs file")
    lines = [
        "#!/bin/bash",
        *header,
        "#",
        f"# larsbench: experiment {comment_text(experiment)}, {what} on {nodes} node(s) x {ntasks_per_node} rank(s).",
        "# Written by `larsbench slurm`; submit it by hand with `sbatch <this file>`, or use --submit.",
        f"# Runs (index: label); their settings are in {comment_text(runs_file)}:",
        *listing,
        "",
        "set -eo pipefail",
        "# The launch stamp: each rank's record times its setup (this script's helpers, srun, imports) from here.",
        f"export {LAUNCH_TIME_ENV}=$(date +%s.%N)",
    ]
    lines += setup_lines(setup)
    lines += [
        "",
        f"python={shlex.quote(python)}",
        f"runs={shlex.quote(runs_file)}",
        f"results={shlex.quote(results)}",
        f"experiment={shlex.quote(experiment)}",
        "index=${SLURM_ARRAY_TASK_ID:-0}",
        "# This job's run: line $index of the runs file, as a larsbench.suite.worker --spec-json value.",
        f'spec=$("$python" -m larsbench.slurm.job spec --runs "$runs" --index "$index")',
        *(['# The adaptive series this run belongs to (repeats: auto): rank 0 records what is decided after it.',
           'series=$("$python" -m larsbench.slurm.job series --runs "$runs" --index "$index")'] if series else []),
        "# Same job id after a requeue, so the same run id: a requeued run resumes its checkpoint.",
        "run_id=${SLURM_CLUSTER_NAME:-slurm}-${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}",
        f"export LARSBENCH_ALLOCATION={shlex.quote(json.dumps(allocation or {}, sort_keys=True, separators=(',', ':')))}",
        *RANK_ENVIRONMENT,
        '# queue time of this start (Slurm\'s StartTime - SubmitTime), kept apart from training time',
        'export LARSBENCH_QUEUE_SEC=$("$python" -m larsbench.slurm.job queue-time || true)',
        'echo "larsbench: run $run_id (index $index, restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"',
        "# Forget an earlier start's rank files; an allocation unlike the one asked for fails here (exit 2).",
        join_words([*job, "prepare", *run]),
        "",
        f"# Slurm sends USR1 to this script {signal_seconds} s before the time limit (--signal={signal}).",
        f"# It is passed on to every rank (srun relays it); the ranks checkpoint and exit with {EXIT_PREEMPTED}",
        "# (srun may report 143 instead: --kill-on-bad-exit stops ranks that exit a moment later), and",
        f"# the job is requeued, at most {max_requeues} times: same job id, same run id, resumed.",
        "srun_pid=",
        "signalled=0",
        'on_usr1() { signalled=1; if [[ -n $srun_pid ]]; then kill -USR1 "$srun_pid" || true; fi; }',
        "trap on_usr1 USR1",
        "",
        join_words(srun) + " &",
        "srun_pid=$!",
        "# srun waits to hear from every node's step daemon: one it cannot reach would hold the job until",
        f"# Slurm gives up on the node. The watchdog stops srun {stop_margin_seconds} s after the step began to fail.",
        join_words(watch) + " &",
        "watch_pid=$!",
        "status=0",
        'wait "$srun_pid" || status=$?',
        'while kill -0 "$srun_pid" 2>/dev/null; do  # a trapped signal interrupted wait: srun still runs',
        '    status=0',
        '    wait "$srun_pid" || status=$?',
        "done",
        'wait "$watch_pid" || true',
        "",
        f"if (( status == {EXIT_PREEMPTED} || (signalled && status != 0) )); then",
        f"    if (( ${{SLURM_RESTART_COUNT:-0}} < {max_requeues} )); then",
        '        echo "larsbench: run $run_id preempted (status $status); requeueing job $SLURM_JOB_ID"',
        '        scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "    fi",
        "    " + join_words([*finalize, "--status", "preempted"]),
        '    exit "$status"',
        "fi",
        "if (( status != 0 )); then",
        "    # A run that failed before rank 0 wrote its record still gets one (status failed).",
        "    " + join_words(finalize),
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)


def comment_text(text: str) -> str:
    """Text for a comment line: printable, on one line."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", str(text))
