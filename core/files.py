"""Writes that a crash, a full disk or a concurrent writer cannot leave half done.

- ``atomic_write``: the whole file or the old one, never a mix (temporary file in the same
  folder, fsync, rename). Checkpoints, scripts, runs files and baselines go through it.
- ``append_lines``: lines appended in one ``write`` on an ``O_APPEND`` descriptor under an
  exclusive ``flock``, so concurrent writers (a job array on a shared filesystem) never
  interleave. A writer that died mid-line leaves a torn last line: the next append starts on a
  fresh line instead of gluing onto it. Results and telemetry go through it.
- ``read_lines``: the JSON objects of such a file; torn or foreign lines are counted, not
  raised, and reported once per file (``scan_lines`` returns the count instead).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes | str, mode: int | None = None, sync: bool = True) -> Path:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one
    (``sync=False``: skip the fsync, for files that only need to be whole, not durable)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_lines(path: str | Path, lines: Iterable[str], sync: bool = True) -> None:
    """Append ``lines`` (without their newlines) in one write, under an exclusive lock."""
    data = "".join(line + "\n" for line in lines).encode()
    if not data:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a crashed writer's torn line stays separate and skippable
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order. Lines that are not a JSON object (a
    torn write, binary noise) are skipped and reported in one warning for the whole file."""
    objects, skipped = scan_lines(path)
    if skipped:
        warnings.warn(f"{skipped} unreadable line(s) skipped in {path}", stacklevel=2)
    return objects


def scan_lines(path: str | Path, skip_arrays: Sequence[str] = ()) -> tuple[list[dict[str, Any]], int]:
    """``read_lines`` without the warning: the objects and how many lines were skipped, for a
    caller that reports them itself.

    ``skip_arrays``: keys whose value, a list of lists of numbers (a loss curve), is read as
    null instead of decoded: most of a record's bytes and decoding time, for a reader that never
    looks at them. Only the compact form the suite writes is cut (``"key":[[...]]``); a line the
    cut would spoil, or any other layout, is decoded whole."""
    objects: list[dict[str, Any]] = []
    skipped = 0
    loads = json.loads
    keys = tuple(json.dumps(k).encode() + b":[[" for k in skip_arrays)
    with Path(path).open("rb") as handle:
        data = handle.read()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            value = loads(_cut(raw, keys) if keys else raw)
        except (ValueError, UnicodeDecodeError):
            try:
                value = loads(raw)
            except (ValueError, UnicodeDecodeError):
                skipped += 1
                continue
        if isinstance(value, dict):
            objects.append(value)
        else:
            skipped += 1
    return objects, skipped


def _cut(raw: bytes, keys: tuple[bytes, ...]) -> bytes:
    for key in keys:
        start = raw.find(key)
        if start < 0:
            continue
        value = start + len(key) - 2
        end = raw.find(b"]]", value)
        if end < 0 or b'"' in raw[value:end]:  # not a list of number lists: leave it whole
            continue
        raw = raw[:value] + b"null" + raw[end + 2 :]
    return raw
