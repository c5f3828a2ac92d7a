"""Baseline files: a JSONL of selected ``ok`` records, written atomically (temp file + rename),
readable by ``suite.results.read_records`` and therefore by ``larsbench compare``."""

from __future__ import annotations

import json
import os
import tempfile
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any


def select(records: list[dict[str, Any]], experiment: str | None = None, label: str | None = None) -> list[dict[str, Any]]:
    """The ``ok`` records, optionally only one experiment's and/or labels matching a glob."""
    return [
        r for r in records
        if r.get("status") == "ok"
        and (experiment is None or r.get("experiment") == experiment)
        and (label is None or fnmatchcase(str(r.get("label")), label))
    ]  # fmt: skip


def save_baseline(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``records`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for r in records:
                handle.write(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
