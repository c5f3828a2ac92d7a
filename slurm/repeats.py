"""Adaptive repeats under Slurm (``larsbench slurm --repeats auto``): each setting's repeats run as
jobs one after another until its throughput is known well enough (``suite.repeats``).

The grid's scripts run every setting's first repeat; each run's record says what was decided
after it (rank 0 decides, from the series' records so far). A small dependent job,
``<name>-repeats.sbatch``, runs once the grid has ended (``--dependency=afterany``):

    python -m larsbench.slurm.repeats OUTPUT/slurm/<name>-repeats.json

It reads the series' records in ``OUTPUT/results.jsonl``; for every series whose latest record
says *continue* it writes and submits the next repeat (one script per allocation shape, a job
array when there are several, ``<name>-repeatN-*.sbatch``), then submits itself again after
those jobs. It stops submitting once every series has stopped (the target reached, the cap, a
run that did not finish ok, or a job that left no record). Every job it submits is noted in
``OUTPUT/slurm/jobs.jsonl``, so ``larsbench slurm --wait`` follows the chain to its end.

The plan file holds what the next rounds need: the experiment's name, the Slurm options, the
working folder, each series' first repeat and rule, and the round reached.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.core.files import atomic_write
from larsbench.core.layout import RESULTS_FILE
from larsbench.slurm.nightly import PLACEMENT
from larsbench.slurm.options import default_python, resolve_path
from larsbench.slurm.script import check_line, comment_text, header_lines, setup_lines
from larsbench.slurm.sweep import JobScript, safe_name
from larsbench.suite.config import Experiment
from larsbench.suite.repeats import decision_text, repeat_of, series_records


@dataclass(frozen=True)
class RepeatsJob:
    script: Path
    text: str
    plan: Path
    plan_text: str


def series_ids(experiment: Experiment, stamp: str) -> list[dict[str, Any]]:
    """One series per cell of an adaptive experiment (``experiment.runs`` holds first repeats)."""
    assert experiment.auto is not None
    return [experiment.auto.series(f"{stamp}-{i}") for i in range(1, len(experiment.runs) + 1)]


def plan_repeats(
    experiment: Experiment, series: list[dict[str, Any]], options: dict[str, Any], output: Path, workdir: str | Path
) -> RepeatsJob:
    """The dependent job and its plan file for an adaptive grid (pure: no files)."""
    output = Path(resolve_path(output))
    job_name = options.get("job_name") or experiment.name
    stem = f"{safe_name(job_name)}-repeats"
    folder = output / "slurm"
    script, plan = folder / f"{stem}.sbatch", folder / f"{stem}.json"
    python = options.get("python") or default_python()
    content = {
        "experiment": experiment.name, "job_name": job_name, "output": str(output), "workdir": resolve_path(workdir),
        "options": {k: v for k, v in options.items() if k != "job_name"}, "script": str(script), "round": 1,
        "series": [{**one, "spec": spec.to_dict()} for one, spec in zip(series, experiment.runs)],
    }  # fmt: skip
    values = {"job_name": f"{job_name}-repeats", "ntasks": 1, "chdir": resolve_path(workdir),
              "output": str(folder / "logs" / stem).replace("%", "%%") + "-%j.out"}  # fmt: skip
    values.update({k: options[k] for k in PLACEMENT if options.get(k) is not None})
    command = [python, "-m", "larsbench.slurm.repeats", str(plan)]
    for word in command:
        check_line("repeats", word)
    lines = [
        "#!/bin/bash",
        *header_lines(values, options.get("extra_sbatch") or ()),
        "#",
        f"# larsbench: the next repeats of experiment {comment_text(experiment.name)}'s adaptive series, after its jobs end.",
        "# Submits the next repeat of every series whose latest record says 'continue', then itself again after them.",
        "# Written by `larsbench slurm --repeats auto`; by hand: sbatch --dependency=afterany:<the grid's job ids> <this file>",
        "",
        "set -eo pipefail",
        *setup_lines(options.get("setup") or ()),
        "",
        shlex.join(command),
        "",
    ]
    return RepeatsJob(script, "\n".join(lines), plan, json.dumps(content, indent=1) + "\n")


def next_round(plan_path: Path, say=print) -> int:
    """Submit the next repeats (module docstring); 0 when done or submitted."""
    from larsbench.slurm import submit, sweep
    from larsbench.suite.config import build_spec

    plan = json.loads(plan_path.read_text())
    output = Path(plan["output"])
    results = output / RESULTS_FILE
    specs, members = [], []
    for one in plan["series"]:
        found = series_records(results, one["series"])
        if not found:
            say(f"series {one['series']}: no record of its latest repeat (its job left none): it stops")
            continue
        last = found[-1]
        decision = last.get("repeats_decision")
        say(f"series {one['series']} ({last.get('label')}), repeat {last.get('repeat', 0) + 1}: {decision_text(decision)}")
        if decision and decision.get("decision") == "continue":
            first = build_spec([("spec", one["spec"])])
            specs.append(repeat_of(first, int(last.get("repeat", 0)) + 1))
            members.append({k: v for k, v in one.items() if k != "spec"})
    if not specs:
        say(f"every series has stopped; records in {results}")
        return 0
    plan["round"] += 1
    experiment = Experiment(plan["experiment"], "", str(output), tuple(specs))
    options = {**plan["options"], "job_name": f"{plan['job_name']}-repeat{plan['round']}"}
    scripts: list[JobScript] = sweep.plan(experiment, options, output, plan["workdir"], members)
    sweep.write(scripts)
    job_ids = []
    for job in scripts:
        job_id = submit.sbatch(job.script)
        submit.note_submitted(output, job_id, job.script)
        job_ids.append(job_id)
        say(f"submitted {job.script.name}: job {job_id} ({len(job.runs)} repeat(s))")
    atomic_write(plan_path, json.dumps(plan, indent=1) + "\n")
    again = submit.sbatch(Path(plan["script"]), after=job_ids)
    submit.note_submitted(output, again, Path(plan["script"]))
    say(f"submitted {Path(plan['script']).name}: job {again} (after jobs {', '.join(job_ids)} end)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsbench.slurm.repeats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("plan", type=Path, help="the plan file larsbench slurm --repeats auto wrote")
    args = parser.parse_args(argv)
    from larsbench.core.errors import ConfigError, error_line

    try:
        return next_round(args.plan, lambda text: print(f"larsbench: {text}", flush=True))
    except ConfigError as exc:  # sbatch refused a script, say
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
