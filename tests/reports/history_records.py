"""Nightly histories for tests: one results folder per night of records made by the suite's record
builder (``report_records.record``), with noisy throughput and planted steps."""

from __future__ import annotations

import datetime
import hashlib
import itertools
from pathlib import Path

import numpy as np

from tests.reports.report_records import record, write

_ids = itertools.count()
START = datetime.datetime(2026, 1, 1, 2, 0, tzinfo=datetime.timezone.utc)


def night_stamp(night: int, minutes: int = 0) -> str:
    return (START + datetime.timedelta(days=night, minutes=minutes)).isoformat(timespec="seconds")


def nightly_record(night: int, throughput: float, nccl: str = "2.27.3", repeat: int = 0, **overrides) -> dict:
    """One run of night ``night`` (0 = 2026-01-01 at 02:00 UTC), repeat ``repeat`` of its setting."""
    fields = {
        "run_id": f"night{night}-{next(_ids)}", "throughput_images_per_sec": throughput, "seed": repeat, "repeat": repeat,
        "timestamp_utc": night_stamp(night, minutes=repeat), "versions": {"python": "3.11", "torch": "2.13.0", "nccl": nccl},
        "git_commit": hashlib.sha1(str(night).encode()).hexdigest(),
    }  # fmt: skip
    return record(**{**fields, **overrides})


def write_history(
    root: Path,
    nights: int = 30,
    seed: int = 0,
    cv: float = 0.02,
    level: float = 100.0,
    drop_at: int | None = None,
    drop: float = 0.10,
    outliers: dict[int, float] | None = None,
    repeats: int = 1,
    **overrides,
) -> Path:
    """``root/night-NN/results.jsonl`` for ``nights`` nights of one setting: throughput with
    normal noise of ``cv``, a ``drop`` from night ``drop_at`` on (NCCL 2.27.3 → 2.28.1 on that
    night), ``outliers``: night → factor on that night's throughput."""
    rng = np.random.default_rng(seed)
    for night in range(nights):
        mean = level * (1 - drop if drop_at is not None and night >= drop_at else 1)
        mean *= (outliers or {}).get(night, 1.0)
        nccl = "2.28.1" if drop_at is not None and night >= drop_at else "2.27.3"
        runs = [
            nightly_record(night, float(mean * (1 + cv * rng.standard_normal())), nccl, repeat, **overrides)
            for repeat in range(repeats)
        ]  # fmt: skip
        write(root / f"night-{night:02d}" / "results.jsonl", runs)
    return root
