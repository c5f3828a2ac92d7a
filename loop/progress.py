"""Progress of a run, from rank 0: a small status file the launcher shows as a live bar
(the same for every backend, whatever its launcher prints), and plain lines in the run's log.

The status file (``RunFiles.progress``) is one JSON object, replaced atomically at every
update: ``{"step", "total", "loss", "notes": [...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from larsbench.core.files import atomic_write


class RankProgress:
    def __init__(self, label: str, total_steps: int, enabled: bool, status_file: Path | None = None):
        self.enabled = enabled
        self.total = total_steps
        self.status_file = status_file if enabled else None
        self.console = Console(highlight=False)
        self.notes: list[str] = []
        self.step, self.loss = 0, None
        if enabled:
            self.console.print(f"{label}: {total_steps} steps")
            self._write()

    def update(self, step: int, loss: float | None) -> None:
        self.step, self.loss = step, loss
        self._write()

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"  {text}")
            self.notes.append(text)
            self._write()

    def close(self) -> None:
        if self.enabled:
            shown = "nan" if self.loss is None else f"{self.loss:.4f}"
            self.console.print(f"  step {self.step}/{self.total}, loss {shown}")

    def _write(self) -> None:
        if self.status_file is None:
            return
        status = {"step": self.step, "total": self.total, "loss": self.loss, "notes": self.notes}
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.status_file, json.dumps(status), sync=False)
        except OSError:
            self.status_file = None  # progress is a convenience; never fail a run over it


def read_status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
