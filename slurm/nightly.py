"""The nightly recipe: the grid's jobs, then one dependent job that reports on the whole history
and runs the regression gate.

``larsbench slurm EXPERIMENT --nightly DIR --submit`` (from cron) lays a history out as::

    DIR/runs/<UTC time>/results.jsonl      each night's records (the grid's --output folder)
    DIR/runs/<UTC time>/slurm/...          that night's scripts, runs files and job logs
    DIR/report/history.{md,html,json}, *.png   the report over every night, rewritten each night

The history job is submitted with ``--dependency=afterany:<the grid's job ids>``: it runs once
every grid job has ended, failed ones included (their ``failed`` records are part of the
history), and exits with ``larsbench history --fail-on-step``'s status: 1 when the latest nights
of a series form a regression step, 3 when the gate is inconclusive (a newest night beyond the
tolerance that is not yet a step), so the job's state (``FAILED``) and exit code are the gate's
verdict.
"""

from __future__ import annotations

import datetime
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.core.errors import ConfigError
from larsbench.slurm.options import default_python, resolve_path
from larsbench.slurm.script import check_line, comment_text, header_lines, setup_lines
from larsbench.slurm.sweep import safe_name

RUNS, REPORT = "runs", "report"
# Options of the grid that also place the history job; the rest (GPUs, ranks) are the grid's.
PLACEMENT = ("partition", "account", "qos", "time", "constraint")


@dataclass(frozen=True)
class HistoryJob:
    script: Path
    text: str
    report: Path

    def log(self, job_id: str) -> Path:
        return self.script.parent / "logs" / f"{self.script.stem}-{job_id}.out"


def night_output(history: Path, output: Path | None, now: datetime.datetime | None = None) -> Path:
    """Where tonight's grid writes: ``--output`` when it lies inside the history folder, else a
    new ``DIR/runs/<UTC time>`` folder (a later night's report must find it there)."""
    history = Path(resolve_path(history))
    if output is not None:
        output = Path(resolve_path(output))
        if not output.is_relative_to(history):
            raise ConfigError("--output", f"{output} is outside the --nightly folder {history}; later nights' reports read only "
                              "that folder: omit --output (tonight's records then go to DIR/runs/<UTC time>)")  # fmt: skip
        return output
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H%M%SZ")
    folder = history / RUNS / stamp
    suffix = 1
    while folder.exists():  # two grids started within one second
        suffix += 1
        folder = history / RUNS / f"{stamp}-{suffix}"
    return folder


def render_history_script(
    *,
    job_name: str,
    history: str,
    report: str,
    output: str,
    python: str = "python",
    setup: list[str] | tuple[str, ...] = (),
    extra_sbatch: list[str] | tuple[str, ...] = (),
    chdir: str | None = None,
    **placement: Any,
) -> str:
    """The history job's script (pure): one task, where the grid's ``PLACEMENT`` options put it."""
    values = {"job_name": job_name, "ntasks": 1, "chdir": chdir, "output": output}
    values.update({k: v for k, v in placement.items() if k in PLACEMENT})
    command = [python, "-m", "larsbench", "history", history, "-o", report, "--fail-on-step"]
    for word in command:
        check_line("history", word)
    lines = [
        "#!/bin/bash",
        *header_lines(values, extra_sbatch),
        "#",
        f"# larsbench: the nightly history of {comment_text(history)}, after the grid's jobs end.",
        "# Reports on every night's records and runs the gate: exit 1 (job FAILED) when the latest",
        "# nights of a series form a regression step, 3 when they are beyond the tolerance but not yet",
        "# a step. Written by `larsbench slurm --nightly`; by hand:",
        "#   sbatch --dependency=afterany:<the grid's job ids> <this file>",
        "",
        "set -o pipefail",
    ]
    lines += setup_lines(setup)
    lines += ["", shlex.join(command), ""]
    return "\n".join(lines)


def plan_history(history: Path, night: Path, job_name: str, options: dict[str, Any], workdir: str | Path) -> HistoryJob:
    """The history job for tonight's grid in ``night`` (a folder under ``history``)."""
    history = Path(resolve_path(history))
    stem = f"{safe_name(job_name)}-history"
    folder = Path(resolve_path(night)) / "slurm"
    text = render_history_script(
        job_name=f"{job_name}-history",
        history=str(history),
        report=str(history / REPORT),
        output=str(folder / "logs" / stem).replace("%", "%%") + "-%j.out",
        python=options.get("python") or default_python(),
        setup=list(options.get("setup") or ()),
        extra_sbatch=list(options.get("extra_sbatch") or ()),
        chdir=resolve_path(workdir),
        **{k: options[k] for k in PLACEMENT if options.get(k) is not None},
    )
    return HistoryJob(folder / f"{stem}.sbatch", text, history / REPORT)
