"""Writes that a crash, a full disk or a concurrent writer cannot leave half done.

- ``atomic_write``: the whole file or the old one, never a mix (temporary file in the same
  folder, fsync, rename). Checkpoints, scripts, runs files and baselines go through it.
- ``append_lines``: lines appended in one ``write`` on an ``O_APPEND`` descriptor under an
  exclusive ``flock``, so concurrent writers (a job array on a shared filesystem) never
  interleave. A writer that died mid-line leaves a torn last line: the next append starts on a
  fresh line instead of gluing onto it. Results and telemetry go through it.
- ``read_lines``: the JSON objects of such a file; torn or foreign lines are counted, not
  raised, and reported once per file as an ``UnreadableLines`` warning (``scan_lines`` returns
  the count instead). Memory stays bounded whatever the file holds: a line longer than
  ``MAX_LINE_BYTES`` is skipped unread.
- ``whole_folder``: an output folder written completely or not at all (a staging folder beside
  it, moved into place at the end).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

# No record comes near this (a 100,000-step loss curve is about 3 MB); a line longer than it is
# noise, and holding it whole could exhaust memory (a sparse or device file has no line breaks).
MAX_LINE_BYTES = 256 * 2**20
_CHUNK = 8 * 2**20


class UnreadableLines(UserWarning):
    """Lines of a records file that are not records (a torn write, noise), counted per file.

    The command line prints each as one line, once per file (``larsbench.main``)."""

    def __init__(self, path: str | Path, count: int):
        super().__init__(f"{count} unreadable line{'s' if count != 1 else ''} skipped in {path}")
        self.path = Path(path)
        self.count = count


def warn_unreadable(path: str | Path, count: int) -> None:
    if count:
        warnings.warn(UnreadableLines(path, count), stacklevel=3)


def not_a_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a regular file, in words; None when it can be."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_symlink() and not path.exists():
        return "a symbolic link loop" if _is_loop(path) else "a broken symbolic link"
    if path.is_dir():
        return "a folder, not a file"
    if path.exists():
        return "not a regular file (a device, pipe or socket)"
    return "no such file"


RESERVE_BYTES = 128 * 2**10  # a failure record is about 6 KB; other ranks may still write a little


def hold_reserve(path: str | Path, size: int = RESERVE_BYTES) -> Path:
    """Take ``size`` bytes of the disk now, in a file that ``free_reserve`` gives back when the
    disk is full: room to record why a run failed, whatever filled the disk meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("wb") as handle:
            handle.write(b"\0" * size)  # real blocks, unlike a sparse file
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def free_reserve(path: str | Path) -> bool:
    """Give back the room ``hold_reserve`` took; whether there was any."""
    try:
        Path(path).unlink()
    except OSError:
        return False
    return True


def space_note(folders: Iterable[str | Path], below: int = 2**20) -> str | None:
    """The folders (of ``folders``) whose filesystem has less than ``below`` bytes free, in words:
    the cause to name when a write failed with 'No space left on device'."""
    notes = []
    for folder in folders:
        try:
            usage = shutil.disk_usage(folder)
        except OSError:
            continue
        if usage.free < below:
            what = " (shared memory: DataLoader workers pass batches through it; a container's --shm-size sets it)" if str(folder) == "/dev/shm" else ""
            notes.append(f"{folder} is full ({usage.free // 1024} KiB free of {usage.total // 1024} KiB){what}")
    return "; ".join(notes) or None


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


def write_files(files: Iterable[tuple[str | Path, bytes | str, int | None]]) -> list[Path]:
    """Several files (path, data, mode or None) replaced together: each is written whole to a
    temporary file beside it first, and only when all are written are they renamed into place,
    so a failure (a full disk) leaves every one of them as it was."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data, mode in files:
            path = Path(path)
            payload = data.encode() if isinstance(data, str) else data
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644 if mode is None else mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in staged]


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
        try:
            written = os.write(fd, data)
            if written != len(data):  # the disk had room for part of it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            if sync:
                os.fsync(fd)
        except OSError as exc:
            # A full disk takes part of the lines: cut them off again, so the file ends where
            # it ended before and the next append does not start after a fragment.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise
    finally:
        os.close(fd)  # releases the lock


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order. Lines that are not a JSON object (a
    torn write, binary noise) are skipped and reported in one warning for the whole file."""
    objects, skipped = scan_lines(path)
    warn_unreadable(path, skipped)
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
    for raw in _lines(path):
        if raw is None:
            skipped += 1
            continue
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


def _lines(path: str | Path) -> Iterator[bytes | None]:
    """The lines of a file, read in chunks; None for a line longer than ``MAX_LINE_BYTES``
    (dropped as it is read, never held)."""
    with Path(path).open("rb") as handle:
        pending: list[bytes] = []
        pending_size = 0
        too_long = False
        while chunk := handle.read(_CHUNK):
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                if too_long:
                    yield None
                elif pending:
                    yield b"".join([*pending, piece])
                else:
                    yield piece
                pending, pending_size, too_long = [], 0, False
            tail = pieces[-1]
            if not too_long and tail:
                pending.append(tail)
                pending_size += len(tail)
                if pending_size > MAX_LINE_BYTES:
                    pending, pending_size, too_long = [], 0, True
        if too_long:
            yield None
        elif pending:
            yield b"".join(pending)


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


@contextlib.contextmanager
def whole_folder(target: str | Path) -> Iterator[Path]:
    """An output folder written completely or not at all.

    Yields a staging folder beside ``target`` (same filesystem) to write into. When the block
    ends normally its contents move into ``target`` (renames: no space needed, so a full disk
    cannot stop them half-way; files of an existing ``target`` that the block did not write are
    kept). When it raises, the staging folder goes, with any parent folders made for it, and
    ``target`` is as it was."""
    target = Path(target)
    if target.is_symlink() and not target.exists():
        raise OSError(errno.ELOOP if _is_loop(target) else errno.ENOENT, "a broken symbolic link", str(target))
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
    with made_folders(target.parent):
        staging = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        os.mkdir(staging)
        try:
            yield staging
            if target.is_dir():
                _merge(staging, target)
                shutil.rmtree(staging)
            else:
                os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _merge(source: Path, target: Path) -> None:
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and destination.is_dir() and not destination.is_symlink():
            _merge(entry, destination)
        else:
            os.replace(entry, destination)


def _is_loop(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


@contextlib.contextmanager
def made_folders(folder: str | Path) -> Iterator[Path]:
    """``folder`` created with its missing parents; when the block raises, the ones this made
    are removed again if still empty, so a refused command leaves no trace."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    except BaseException:
        for made in missing:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
