"""The results store: one JSON object per run, one per line (``results.jsonl``).

Records are appended through ``larsbench.core.files.append_lines`` (one write under an exclusive
lock: concurrent writers never interleave, a torn line stays separate), and load with
``pandas.read_json(path, lines=True)``. The keys, their types and units are declared once, in
``larsbench.core.schema``; a record that disagrees with it is refused before it is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from larsbench.core import schema
from larsbench.core.errors import ConfigError
from larsbench.core.files import append_lines, made_folders, scan_lines, warn_unreadable
from larsbench.core.layout import RESULTS_FILE
from larsbench.core.schema import SCHEMA_VERSION

STATUSES = ("ok", "diverged", "failed", "preempted")


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    wrong = schema.problems(record)
    if wrong:
        raise ValueError(f"record does not match the schema (core/schema.py): {'; '.join(wrong)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record status {record['status']!r} is not one of {STATUSES}")
    append_lines(path, [json.dumps(record, allow_nan=False, separators=(",", ":"))])


def read_records(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from result files or folders holding ``results.jsonl``, in file order, each
    brought to the current schema (``migrate``). Unreadable lines: one warning per file."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if path.is_dir():
            path = path / RESULTS_FILE
        found, skipped = read_record_file(path)
        warn_unreadable(path, skipped)
        records.extend(found)
    return records


def read_record_file(path: str | Path, skip_arrays: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], int]:
    """The records of one results file in the current schema, and how many of its lines were
    unreadable (for a caller that reports them itself). ``skip_arrays``: see ``scan_lines``."""
    objects, skipped = scan_lines(path, skip_arrays)
    records = []
    for record in objects:
        version = record.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"{path}: record schema {version!r} is newer than this larsbench understands "
                f"({SCHEMA_VERSION}); upgrade larsbench to read it"
            )
        records.append(migrate(record))
    return records, skipped


# Keys version 4 added; a record written before them has none of these measurements.
_MEASURED_SPLIT = ("split_rank", "overhead_sec_per_step", "comm_sec_per_step", "overlapped_comm_sec_per_step",
                   "overhead_fraction", "comm_messages_bytes")  # fmt: skip


def migrate(record: dict[str, Any]) -> dict[str, Any]:
    """A record of an older schema in the current one (new keys from its recorded config)."""
    version = record.get("schema_version", SCHEMA_VERSION)
    if version < SCHEMA_VERSION:
        config = (record.get("provenance") or {}).get("config") or {}
        record = {**record, "schema_version": SCHEMA_VERSION}
        added = [("precision", "fp32"), ("channels_last", False), ("compile", False)] if version < 2 else []
        # Before version 3 every run decoded its images on the CPU.
        for key, default in [*added, ("data_loader", "cpu")]:
            record.setdefault(key, config.get(key, default))
        if version < 4:
            # Exposed communication used to be the step's remainder after the compute probe and
            # the data wait (it held the loop's own overhead too), not a measurement: it is
            # dropped rather than compared with a measured one.
            for name in _MEASURED_SPLIT:
                record.setdefault(name, None)
            record["exposed_comm_sec_per_step"] = record["comm_fraction"] = None
        record.setdefault("repeats_decision", None)  # version 5: no run before it was part of an adaptive series
        if version < 6:
            record = _reductions_apart(record, measured=version >= 4)
        # Before version 7 nobody timed what a run spent around its clock.
        record.setdefault("setup_sec", None)
        record.setdefault("phases_sec", None)
        if version < 8:
            # Before optimizers were registered components, LARS was the one with telemetry.
            record.setdefault("layer_telemetry", record.get("optimizer") == "lars")
            record.setdefault("optimizer_sharding", config.get("optimizer_sharding", "none"))
            for name in ("optimizer_state_bytes", "peak_host_rss_bytes", "peak_cuda_bytes"):
                record.setdefault(name, None)
    return record


def _reductions_apart(record: dict[str, Any], measured: bool) -> dict[str, Any]:
    """Version 6 keeps the reduction calls' measured wait and span apart from the split, which
    on one rank counts them as overhead: from version 4 on they were the split's exposed
    communication and span."""
    wait = record.get("exposed_comm_sec_per_step") if measured else None
    span = record.get("comm_sec_per_step") if measured else None
    record = {**record, "reduction_wait_sec_per_step": wait, "reduction_span_sec_per_step": span}
    if measured and record.get("world_size") == 1 and wait:
        step, overhead = record.get("step_time_mean_sec"), record.get("overhead_sec_per_step")
        record.update(exposed_comm_sec_per_step=0.0, comm_sec_per_step=0.0, overlapped_comm_sec_per_step=0.0, comm_fraction=0.0)
        if overhead is not None:
            record["overhead_sec_per_step"] = overhead + wait
            record["overhead_fraction"] = (overhead + wait) / step if step else None
    return record


def latest_per_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per run id, the last written: a resumed run appends its final record after
    the 'preempted' one it supersedes. Order follows each run's first appearance."""
    latest: dict[Any, dict[str, Any]] = {}
    for record in records:
        latest[record.get("run_id")] = record
    return list(latest.values())


def check_writable(output_dir: str | Path) -> Path:
    """Fail before training, not after hours of it, when results cannot be written."""
    output = Path(output_dir)
    probe = output / f".write-probe-{os.getpid()}"
    try:
        with made_folders(output):  # a refused folder is not left behind, nor the parents made for it
            try:
                with probe.open("wb") as handle:
                    handle.write(b"x" * 4096)
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError("--output", f"cannot write results to {output} ({exc.strerror or exc}); choose a writable folder") from None
    return output / RESULTS_FILE
