"""Where a run's files live: every path under a results folder, named in one place.

A results folder (``--output``) holds ``results.jsonl`` and, per run id, side files that the
record points to by relative path, so a folder can be moved or archived whole::

    results.jsonl                   one record per run (larsbench.core.results)
    mllog/<run_id>.log              MLPerf event log (rank 0)
    telemetry/<run_id>.jsonl        LARS per-layer telemetry (rank 0)
    steps/<run_id>.jsonl            per-step times of every rank
    logs/<run_id>.log               the run's launcher and library output
    .larsbench/progress/<run_id>.json  rank 0's progress, shown live by the launcher
    checkpoints/<run_id>/step-N/    checkpoints a preempted run resumes from
    .larsbench/errors/<run_id>.rankR   the one-line reason rank R failed
    .larsbench/pids/<run_id>.rankR     rank R's process id and host: ``PID HOST``
    .larsbench/stopped/<run_id>        why the Slurm job stopped a step that could not end
    .larsbench/reserve              room kept while runs go, freed to record a failure on a full disk
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

RESULTS_FILE = "results.jsonl"


@dataclass(frozen=True)
class RunFiles:
    folder: Path  # the results folder (holding results.jsonl)
    run_id: str

    @classmethod
    def of(cls, results: str | Path, run_id: str) -> RunFiles:
        """From the path of a results file or of the folder holding it."""
        path = Path(results)
        return cls(path.parent if path.suffix == ".jsonl" else path, run_id)

    @property
    def results(self) -> Path:
        return self.folder / RESULTS_FILE

    @property
    def event_log(self) -> Path:
        return self.folder / "mllog" / f"{self.run_id}.log"

    @property
    def telemetry(self) -> Path:
        return self.folder / "telemetry" / f"{self.run_id}.jsonl"

    @property
    def steps(self) -> Path:
        return self.folder / "steps" / f"{self.run_id}.jsonl"

    @property
    def log(self) -> Path:
        return self.folder / "logs" / f"{self.run_id}.log"

    @property
    def progress(self) -> Path:
        return self.folder / ".larsbench" / "progress" / f"{self.run_id}.json"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints" / self.run_id

    @property
    def reserve(self) -> Path:
        return self.folder / ".larsbench" / "reserve"

    def error(self, rank: int) -> Path:
        return self.folder / ".larsbench" / "errors" / f"{self.run_id}.rank{rank}"

    def pid(self, rank: int) -> Path:
        return self.folder / ".larsbench" / "pids" / f"{self.run_id}.rank{rank}"

    @property
    def stopped(self) -> Path:
        return self.folder / ".larsbench" / "stopped" / self.run_id

    def rank_errors(self) -> dict[int, str]:
        """rank → the one line it left on failing."""
        return {rank: path.read_text().strip() for rank, path in self._per_rank("errors").items()}

    def rank_pids(self) -> dict[int, int]:
        """rank → process id, for the ranks that started."""
        return {rank: pid for rank, (pid, _) in self._started().items()}

    def rank_hosts(self) -> dict[int, str]:
        """rank → the host it started on (a pid means something only there)."""
        return {rank: host for rank, (_, host) in self._started().items() if host}

    def silent_ranks(self) -> list[int]:
        """Ranks that started and left no error while a peer reported one: killed outright
        (SIGKILL, the OOM killer), or cut off before they could say anything."""
        reported = set(self.rank_errors())
        return sorted(set(self._started()) - reported) if reported else []

    def clear_rank_files(self) -> None:
        """Forget an earlier attempt's pids and errors (a resume reuses the run id)."""
        for kind in ("errors", "pids"):
            for path in self._per_rank(kind).values():
                path.unlink(missing_ok=True)
        self.stopped.unlink(missing_ok=True)

    def _started(self) -> dict[int, tuple[int, str | None]]:
        started = {}
        for rank, path in self._per_rank("pids").items():
            try:
                words = path.read_text().split()
                started[rank] = (int(words[0]), words[1] if len(words) > 1 else None)
            except (OSError, ValueError, IndexError):
                continue
        return started

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.folder))

    def _per_rank(self, kind: str) -> dict[int, Path]:
        folder = self.folder / ".larsbench" / kind
        if not folder.is_dir():
            return {}
        found = {}
        for path in folder.glob(f"{glob.escape(self.run_id)}.rank*"):
            suffix = path.name.rsplit(".rank", 1)[1]
            if suffix.isdigit():
                found[int(suffix)] = path
        return found
