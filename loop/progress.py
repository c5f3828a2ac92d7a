"""Progress on rank 0: a live rich bar on a terminal, a few plain lines in a log file."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RankProgress:
    def __init__(self, label: str, total_steps: int, enabled: bool):
        self.enabled = enabled
        self.console = Console(highlight=False)
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(label, total=total_steps, loss="…")
            self._progress.start()
        elif enabled:
            self.console.print(f"{label}: {total_steps} steps")

    def update(self, step: int, loss: float | None) -> None:
        if self._progress is not None:
            shown = "nan" if loss is None else f"{loss:.4f}"
            self._progress.update(self._task, completed=step, loss=shown)

    def note(self, text: str) -> None:
        if self.enabled:
            (self._progress.console if self._progress else self.console).print(f"  {text}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
