"""MLPerf-style event log (``:::MLLOG`` lines) written next to a run's record, with MLCommons'
own ``mlperf_logging.mllog``: run_start, epoch and eval events, run_stop with a status."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class EventLog:
    """Rank 0 logs; every other rank holds a disabled log, so callers never branch."""

    def __init__(self, path: Path | None):
        self.path = path
        self._log = None
        if path is None:
            return
        from mlperf_logging import mllog

        path.parent.mkdir(parents=True, exist_ok=True)
        # A logger of our own that does not propagate: a root handler (torchrun installs one)
        # would echo every event to the console.
        logger = logging.getLogger(f"larsbench.mllog.{path.stem}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        mllog.config(logger=logger, filename=str(path), default_stack_offset=2)
        self._log = mllog.get_mllogger()

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.end(key=key, value=value, metadata=metadata or None)
