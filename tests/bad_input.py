"""Bad input for the property tests of every command: broken files, odd paths, outputs that
cannot be written, and the one check every refusal must pass.

A refusal is one line on stderr, ``larsbench: error: KEY: message``, with KEY the argument the
bad value came from, exit status 2, no traceback, and nothing left half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import strategies as st

# A path component with spaces and shell metacharacters ("/" and NUL cannot be in a name).
NAME_CHARS = st.sampled_from(list("abcXYZ09 _-.$`'\"\\;&|*?[](){}<>!#~%^=,:@+\t"))
NAMES = st.text(NAME_CHARS, min_size=1, max_size=16).filter(lambda s: s not in (".", "..") and s.strip(" .") != "")

INPUT_KINDS = (
    "missing", "empty", "binary", "truncated", "huge", "non_utf8", "directory", "symlink_loop",
    "dangling_symlink", "fifo", "dev_zero",
)  # fmt: skip
HUGE_BYTES = 48 * 2**20  # a sparse file: big to read, free to make


def make_input(kind: str, path: Path, good: bytes = b"", cut: float = 0.5) -> Path:
    """``path`` made into a bad input of ``kind``; ``good`` is a valid file's bytes (``truncated``
    cuts it at ``cut`` of its length, ``non_utf8`` spoils it with Latin-1 bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        pass
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 12 + b"\x89PNG\r\n\x1a\n\x00")
    elif kind == "truncated":
        path.write_bytes(good[: int(len(good) * cut)])
    elif kind == "huge":
        with path.open("wb") as handle:
            handle.write(b"\x00garbage without a line break ")
            handle.truncate(HUGE_BYTES)
    elif kind == "non_utf8":
        path.write_bytes(good.replace(b"a", "\u00e4".encode("latin-1"), 3) if good else b"caf\xe9: \xff\xfe\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink_loop":
        loop = path.with_name(path.name + ".loop")
        path.symlink_to(loop)
        loop.symlink_to(path)
    elif kind == "dangling_symlink":
        path.symlink_to(path.with_name(path.name + ".nowhere"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    else:
        raise ValueError(kind)
    return path


def complete_lines(data: bytes) -> int:
    """How many lines of ``data`` are JSON objects (the test's own count, to judge a reader's)."""
    count = 0
    for raw in data.split(b"\n"):
        try:
            count += isinstance(json.loads(raw), dict)
        except ValueError:
            continue
    return count


def unreadable_lines(data: bytes) -> int:
    return sum(1 for raw in data.split(b"\n") if raw.strip()) - complete_lines(data)


# Output locations that cannot be written. "full" is a tmpfs with no room left; the caller
# mounts it (``tiny_disk``) and passes its path.
OUTPUT_KINDS = ("proc", "under_file", "existing_file", "symlink_loop", "full")


def make_output(kind: str, folder: Path, name: str, disk: Path | None = None) -> Path:
    """A path for an output (a folder or a file to write) that cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "proc":
        return Path("/proc/larsbench-test") / name
    if kind == "under_file":
        blocker = folder / f"{name}.file"
        blocker.write_text("a file, not a folder\n")
        return blocker / "out"
    if kind == "existing_file":
        target = folder / name
        target.write_text("keep me\n")
        return target
    if kind == "symlink_loop":
        return make_input("symlink_loop", folder / name)
    if kind == "full":
        assert disk is not None
        return disk / name
    raise ValueError(kind)


def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``roots`` (None for folders), to show nothing changed."""
    found: dict[str, bytes | None] = {}
    for root in roots:
        if root.is_symlink() or not root.exists():
            continue
        if root.is_file():
            found[str(root)] = root.read_bytes()
            continue
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                found[str(path)] = os.readlink(path).encode()
            elif path.is_dir():
                found[str(path)] = None
            elif path.is_file():
                found[str(path)] = path.read_bytes()
    return found


@contextlib.contextmanager
def tiny_disk(free_kib: int = 0) -> Iterator[Path]:
    """A real filesystem with ``free_kib`` KiB left: a tmpfs (needs root, as CI has) mounted
    for the block, with a filler file taking the rest. Raises ``PermissionError`` without root."""
    mount = Path(tempfile.mkdtemp(prefix="larsbench-disk-"))
    size = free_kib + 4
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        mount.rmdir()
        raise PermissionError("mounting a tmpfs needs root (CI runs as root)")
    try:
        (mount / "filler").write_bytes(b"\0" * 4096)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
        mount.rmdir()


def can_mount() -> bool:
    try:
        with tiny_disk():
            return True
    except PermissionError:
        return False


def check_refused(result, keys: tuple[str, ...] | set[str], notices: int = 0) -> str:
    """``result`` (a CompletedProcess) is a clean refusal naming one of ``keys``; returns the
    key. ``notices``: lines allowed before the error (one per file with unreadable lines)."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.returncode == 2, (result.returncode, text)
    lines = result.stderr.strip().splitlines()
    assert lines, text
    assert len(lines) <= 1 + notices, text
    assert lines[-1].startswith("larsbench: error: "), text
    key, sep, message = lines[-1].removeprefix("larsbench: error: ").partition(": ")
    assert sep and message.strip(), text
    # A setting's part (--backend-config.bucket_cap_mb) counts as the setting.
    named = key if key in keys else next((k for k in keys if key.startswith((k + ".", k + "["))), None)
    assert named is not None, f"{key!r} is not one of {sorted(keys)}: {lines[-1]}"
    return named


def check_clean(result) -> None:
    """No traceback, and a refusal (status 2) is one error line."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    if result.returncode == 2:
        assert result.stderr.strip().splitlines()[-1].startswith("larsbench: error: "), text


def notice_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " unreadable line" in line and not line.startswith("larsbench: error:")]
