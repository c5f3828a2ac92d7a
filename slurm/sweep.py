"""From an experiment to sbatch scripts: one script (a job array when it holds several runs)
per allocation shape, each with its runs file next to it.

Layout under the output folder (the same folder ``larsbench run --output`` writes to)::

    results.jsonl                     every run's record (rank 0 appends; failures too)
    slurm/<name>-<N>n<T>t.sbatch      the script for runs of N nodes × T ranks
    slurm/<name>-<N>n<T>t.runs.jsonl  line i = array index i: {"index", "label", "spec"}
    slurm/logs/<name>-...-%A_%a.out   Slurm's output, one file per job (array task)
    slurm/jobs.jsonl                  the job ids submitted, and which a wait saw end (slurm.submit)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsbench.slurm.options import SECTION, Shape, default_python, resolve_path, shape_for
from larsbench.slurm.script import render_script
from larsbench.core.spec import RunSpec
from larsbench.suite.config import Experiment, bundled_experiment, read_experiment_file, resolve_experiment
from larsbench.core.errors import ConfigError
from larsbench.core.files import made_folders, write_files
from larsbench.core.layout import RESULTS_FILE

# Recorded with every run (LARSBENCH_ALLOCATION) next to the shape itself.
ALLOCATION_KEYS = ("partition", "account", "qos", "time", "gpus_per_node", "cpus_per_task", "mem", "constraint")


@dataclass(frozen=True)
class JobScript:
    shape: Shape
    job_name: str
    script: Path
    runs_file: Path
    runs: tuple[RunSpec, ...]
    text: str
    series: tuple[dict[str, Any] | None, ...] = ()  # per run: the adaptive series it belongs to

    @property
    def runs_text(self) -> str:
        lines = []
        for i, spec in enumerate(self.runs):
            entry: dict[str, Any] = {"index": i, "label": spec.label, "spec": spec.to_dict()}
            if i < len(self.series) and self.series[i] is not None:
                entry["series"] = self.series[i]
            lines.append(json.dumps(entry, separators=(",", ":")) + "\n")
        return "".join(lines)


def load(
    path: str | Path | None, overrides: dict[str, Any], repeats: int | str | None = None, target: str | None = None,
    most: int | None = None,
) -> tuple[Experiment, dict[str, Any]]:  # fmt: skip
    """The experiment and its ``slurm:`` section (read here, so ``suite.config`` needs no
    knowledge of Slurm beyond accepting the key)."""
    if path is None and not overrides:
        path = bundled_experiment()
    if path is None:
        doc: dict[str, Any] = {"name": "cli", "defaults": {}}
        source = "command line"
    else:
        source = str(path)
        doc = dict(read_experiment_file(Path(path)))
    section = doc.pop(SECTION, None)
    return resolve_experiment(doc, overrides, source, repeats, target, most), section


def safe_name(text: str) -> str:
    """A file-name fragment from any text (job names may hold anything; file names do not)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "larsbench"


def plan(
    experiment: Experiment,
    options: dict[str, Any],
    output: str | Path,
    workdir: str | Path | None = None,
    series: list[dict[str, Any] | None] | None = None,
) -> list[JobScript]:
    """Scripts for every run of ``experiment``, grouped by allocation shape (pure: no files).
    ``series[i]``: the adaptive series run ``i`` belongs to (``slurm.repeats``)."""
    output = Path(resolve_path(output))
    workdir = resolve_path(workdir or os.getcwd())
    options = dict(options)
    job_name = options.pop("job_name", None) or experiment.name
    options.setdefault("python", default_python())
    groups: dict[Shape, list[tuple[RunSpec, dict[str, Any] | None]]] = {}
    for i, spec in enumerate(experiment.runs):
        groups.setdefault(shape_for(spec.world_size, options, spec.label), []).append((spec, series[i] if series else None))
    scripts = []
    for shape in sorted(groups):
        specs = tuple(spec for spec, _ in groups[shape])
        members = tuple(one for _, one in groups[shape])
        stem = f"{safe_name(job_name)}-{shape.tag}"
        folder = output / "slurm"
        runs_file = folder / f"{stem}.runs.jsonl"
        log = str(folder / "logs" / stem).replace("%", "%%") + ("-%A_%a.out" if len(specs) > 1 else "-%j.out")
        name = job_name if len(groups) == 1 else f"{job_name}-{shape.tag}"
        allocation = {"nodes": shape.nodes, "ntasks_per_node": shape.ntasks_per_node}
        allocation.update({k: options[k] for k in ALLOCATION_KEYS if options.get(k) is not None})
        user = {k: v for k, v in options.items() if k not in ("nodes", "ntasks_per_node")}
        text = render_script(
            **user,
            job_name=name,
            nodes=shape.nodes,
            ntasks_per_node=shape.ntasks_per_node,
            runs_file=str(runs_file),
            results=str(output / RESULTS_FILE),
            experiment=experiment.name,
            labels=[spec.label for spec in specs],
            chdir=workdir,
            output=log,
            allocation=allocation,
            series=any(members),
        )
        scripts.append(JobScript(shape, name, folder / f"{stem}.sbatch", runs_file, specs, text, members if any(members) else ()))
    return scripts


def prepare_data(experiment: Experiment) -> Experiment:
    """Generated data sets are made once, here, before any job starts (as ``larsbench run``
    does): the runs file then names the folder every rank reads."""
    if not any(spec.dataset == "generated" for spec in experiment.runs):
        return experiment
    from larsbench.workloads.data import prepare

    return dataclasses.replace(experiment, runs=tuple(prepare(spec) for spec in experiment.runs))


def write(scripts: list[JobScript], extra: list[tuple] = ()) -> None:
    """Every script and runs file (and ``extra`` files: ``(path, text)`` for a script,
    ``(path, text, None)`` for data), all or none: a folder that cannot take them all (full,
    unwritable) is left as it was, output folder included."""
    files = [item for job in scripts for item in ((job.runs_file, job.runs_text, None), (job.script, job.text, 0o755))]
    files += [(item[0], item[1], item[2] if len(item) > 2 else 0o755) for item in extra]
    if not files:
        return
    folder = files[0][0].parent
    try:
        with made_folders(folder / "logs"):
            write_files(files)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write the scripts to {folder} ({exc.strerror or exc}); choose a writable folder") from None
