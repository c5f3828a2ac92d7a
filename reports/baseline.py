"""Baseline files: a JSONL of selected ``ok`` records, written atomically (temp file + rename),
readable by ``larsbench.core.results.read_records`` and therefore by ``larsbench compare``."""

from __future__ import annotations

import errno
import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from larsbench.core.files import atomic_write, made_folders, not_a_file


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
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder; name a file", str(path))
    if path.is_symlink() and not path.exists():  # replacing the link would hide where it was meant to go
        raise FileNotFoundError(errno.ENOENT, not_a_file(path), str(path))
    with made_folders(path.parent):
        return atomic_write(path, "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in records))
