"""The results store: one JSON object per run, one per line, appended atomically.

Many writers may append to the same file at once (a Slurm job array on a shared filesystem):
each record goes out in a single ``write`` on an ``O_APPEND`` descriptor under an exclusive
``flock``, so records never interleave. A writer that died mid-line leaves a torn last line;
the next writer starts on a fresh line instead of gluing its record onto it, and readers skip
the torn line with a warning.

Records load with ``pandas.read_json(path, lines=True)``.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"

REQUIRED_KEYS = (
    "run_id", "status", "backend", "model", "dataset", "image_size", "world_size",
    "micro_batch_size", "accumulation_steps", "global_batch_size", "optimizer", "lr", "steps",
    "epochs", "throughput_images_per_sec", "step_time_p50_sec", "step_time_p95_sec",
    "final_top1", "target_top1", "time_to_accuracy_sec", "epochs_to_accuracy", "loss_curve",
    "param_checksum", "provenance",
)  # fmt: skip

STATUSES = ("ok", "diverged", "failed", "preempted", "timeout")


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"record lacks required keys: {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record status {record['status']!r} is not one of {STATUSES}")
    line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a crashed writer's torn line stays separate and skippable
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_records(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from result files or folders holding ``results.jsonl``, in file order."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        records.extend(_read_file(path))
    return records


def latest_per_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per run id, the last written: a resumed run appends its final record after
    the 'preempted' one it supersedes. Order follows each run's first appearance."""
    latest: dict[Any, dict[str, Any]] = {}
    for record in records:
        latest[record.get("run_id")] = record
    return list(latest.values())


def _read_file(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                warnings.warn(f"{path}:{number}: skipping an unreadable line (a torn write?)", stacklevel=3)
                continue
            if not isinstance(record, dict):
                warnings.warn(f"{path}:{number}: skipping a line that is not a record", stacklevel=3)
                continue
            version = record.get("schema_version", SCHEMA_VERSION)
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"{path}:{number}: record schema {version} is newer than this larsbench "
                    f"understands ({SCHEMA_VERSION}); upgrade larsbench to read it"
                )
            records.append(record)
    return records


def check_writable(output_dir: str | Path) -> Path:
    """Fail before training, not after hours of it, when results cannot be written."""
    output = Path(output_dir)
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-probe-{os.getpid()}"
        with probe.open("wb") as handle:
            handle.write(b"x" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        from suite.errors import ConfigError

        raise ConfigError("--output", f"cannot write results to {output} ({exc.strerror or exc}); choose a writable folder") from None
    return output / RESULTS_FILE
