"""``larsbench slurm --comm``: the collectives benchmark (``larsbench comm``) on the allocations an
experiment's runs would get, one sbatch job per allocation shape.

Each job runs ``srun python -m larsbench.suite.comm_worker`` once per backend (with the device
and network interface) its shape's runs use, so the figures describe the interconnect exactly
as training would use it, across as many nodes. Records go to ``OUTPUT/comm.jsonl`` (``larsbench
report`` plots them); scripts and logs to ``OUTPUT/slurm/``, next to the training jobs'.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.slurm.options import Shape, default_python, resolve_path, shape_for
from larsbench.slurm.script import (
    RANK_ENVIRONMENT, ShellVar, check_line, comment_text, header_lines, join_words, setup_lines, srun_words,
)
from larsbench.slurm.sweep import safe_name, write
from larsbench.suite.comm import COMM_FILE
from larsbench.suite.config import Experiment

# The options that place a comm job; the training ones (requeue, preemption, watchdog) do not apply.
PLACEMENT = ("partition", "account", "qos", "time", "gpus_per_node", "cpus_per_task", "mem", "constraint")


@dataclass(frozen=True)
class Measure:
    """One backend's sweep inside a comm job."""

    backend: str
    device: str
    network_interface: str | None
    timeout_sec: float


@dataclass(frozen=True)
class CommJob:
    shape: Shape
    script: Path
    measures: tuple[Measure, ...]
    text: str


def plan_comm(
    experiment: Experiment, options: dict[str, Any], output: str | Path, sizes: list[int], operations: list[str],
    iterations: int, workdir: str | Path,
) -> list[CommJob]:  # fmt: skip
    """One comm job per allocation shape of ``experiment``'s runs (pure: no files)."""
    output = Path(resolve_path(output))
    job_name = options.get("job_name") or experiment.name
    groups: dict[Shape, list[Measure]] = {}
    for spec in experiment.runs:
        measure = Measure(spec.backend, spec.device, spec.network_interface, spec.collective_timeout_sec)
        found = groups.setdefault(shape_for(spec.world_size, options, spec.label), [])
        if measure not in found:
            found.append(measure)
    jobs = []
    for shape in sorted(groups):
        stem = f"{safe_name(job_name)}-comm-{shape.tag}"
        folder = output / "slurm"
        text = render_comm_script(
            job_name=f"{job_name}-comm",
            shape=shape,
            measures=groups[shape],
            sizes=sizes,
            operations=operations,
            iterations=iterations,
            results=str(output / COMM_FILE),
            python=options.get("python") or default_python(),
            setup=list(options.get("setup") or ()),
            extra_sbatch=list(options.get("extra_sbatch") or ()),
            chdir=resolve_path(workdir),
            output=str(folder / "logs" / stem).replace("%", "%%") + "-%j.out",
            placement={k: options[k] for k in PLACEMENT if options.get(k) is not None},
        )
        jobs.append(CommJob(shape, folder / f"{stem}.sbatch", tuple(groups[shape]), text))
    return jobs


def render_comm_script(
    *, job_name: str, shape: Shape, measures: list[Measure], sizes: list[int], operations: list[str], iterations: int,
    results: str, python: str, setup: list[str], extra_sbatch: list[str], chdir: str, output: str,
    placement: dict[str, Any],
) -> str:  # fmt: skip
    """The comm job's script (pure): every measure in turn, each to its own run id; the job
    fails when any of them did."""
    values = {"job_name": job_name, "nodes": shape.nodes, "ntasks_per_node": shape.ntasks_per_node, "chdir": chdir, "output": output}
    values.update(placement)
    srun = srun_words(shape.nodes, shape.ntasks_per_node, placement.get("cpus_per_task"))
    lines = [
        "#!/bin/bash",
        *header_lines(values, extra_sbatch),
        "#",
        f"# larsbench: collectives ({', '.join(operations)}) of {', '.join(m.backend for m in measures)} "
        f"on {shape.nodes} node(s) x {shape.ntasks_per_node} rank(s).",
        "# Written by `larsbench slurm --comm`; submit it by hand with `sbatch <this file>`, or use --submit.",
        "",
        "set -o pipefail",
    ]
    lines += setup_lines(setup)
    lines += [
        "",
        f"python={shlex.quote(python)}",
        f"results={shlex.quote(results)}",
        *RANK_ENVIRONMENT,
        'echo "larsbench: collectives on $SLURM_JOB_NODELIST"',
        "status=0",
    ]
    for m in measures:
        worker = [
            ShellVar("python"), "-m", "larsbench.suite.comm_worker", "--backend", m.backend, "--device", m.device,
            "--sizes", ",".join(map(str, sizes)), "--operations", ",".join(operations), "--iterations", str(iterations),
            "--timeout-sec", f"{m.timeout_sec:g}", "--results", ShellVar("results"),
            "--run-id", ShellVar("run_id"),
        ]  # fmt: skip
        if m.network_interface is not None:
            worker += ["--network-interface", m.network_interface]
        for word in worker:
            if not isinstance(word, ShellVar):
                check_line("comm", word)
        lines += [
            "",
            f"run_id=${{SLURM_CLUSTER_NAME:-slurm}}-${{SLURM_JOB_ID}}-{safe_name(m.backend)}",
            f"echo {shlex.quote(f'larsbench: {comment_text(m.backend)}')} \"($run_id)\"",
            join_words([*srun, *worker]) + " || status=$?",
        ]
    lines += ["", 'exit "$status"', ""]
    return "\n".join(lines)


def write_comm_jobs(jobs: list[CommJob]) -> None:
    """Every comm script, all or none (``sweep.write``)."""
    write([], [(job.script, job.text) for job in jobs])


def run_id_suffixes(job: CommJob, job_id: str) -> list[str]:
    """How the run ids of ``job``'s measures end once submitted as ``job_id`` (they begin with
    the cluster's name, which only Slurm knows)."""
    return [f"-{job_id}-{safe_name(m.backend)}" for m in job.measures]
