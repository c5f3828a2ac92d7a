"""A history's records: result files of many nights, as nights and per-setting runs.

Sources. Each RESULTS argument is a results file, a folder holding ``results.jsonl``, or a
folder of such folders (searched recursively: one folder per night, as the nightly recipe
keeps them). A missing, unreadable or empty source is bad input.

Nights. A record belongs to a night by its ``provenance.timestamp_utc``: a night ends at
``night_ends`` o'clock UTC (default 12:00) and is named by the date it ends on, so a grid that
starts at 23:00 and finishes at 03:00 is one night, and a cron job at 02:00 local time gets its
local date as the night's name anywhere from UTC−10 to UTC+12. ``night_ends=0`` makes nights
UTC calendar days.

Points. One point of a series is one source on one night: one folder per night gives one point
per night, one growing file one point per night, and two grids run into different folders on
the same night (before and after a driver upgrade) two points, ordered by their first record.

Settings. Records group by ``reports.load.settings``, the like-for-like key of ``compare``:
every ``measure`` field of the run spec, device, hardware signature and node count, so
clusters whose hardware or node counts differ live side by side and never mix. A resumed run
counts once (its last record in its file, ``latest_per_run``).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from larsbench.core.errors import ConfigError
from larsbench.core.files import not_a_file
from larsbench.core.layout import RESULTS_FILE
from larsbench.core.results import latest_per_run
from larsbench.reports.load import key_of, read_results_file, setting_label, settings

NIGHT_ENDS = 12
FIX = "give results.jsonl files that larsbench run or slurm wrote, or folders holding them"
# Per-step arrays a history never reads: left undecoded (see ``core.files.scan_lines``).
SKIPPED_ARRAYS = ("loss_curve",)


@dataclass(frozen=True)
class Night:
    index: int  # position in time, 0 = oldest
    date: str  # YYYY-MM-DD, the date the night ends on
    source: Path  # the results file its records came from
    label: str  # the date, with the source's name when the date has several sources
    first_utc: str  # its earliest record's timestamp


@dataclass
class SettingRuns:
    """Every run of one setting, by night index."""

    key: str
    settings: dict[str, Any]
    label: str
    by_night: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Store:
    sources: list[Path]
    nights: list[Night]
    settings: list[SettingRuns]
    records: int
    statuses: Counter
    unreadable: dict[Path, int]  # unreadable lines skipped, per file that had some
    undated: int  # records without a usable timestamp, left out


def find_sources(paths: Iterable[str | Path], option: str = "RESULTS") -> list[Path]:
    """The results files the arguments name (see module docstring), each once, in order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif (path / RESULTS_FILE).is_file():
            found.append(path / RESULTS_FILE)
        elif path.is_dir():
            nested = sorted(p for p in _walk(path) if p.name == RESULTS_FILE and p.is_file())
            if not nested:
                raise ConfigError(option, f"{path}: no {RESULTS_FILE} in this folder or below it; {FIX}")
            found += nested
        else:
            why = not_a_file(path)
            raise ConfigError(option, f"{path}: {'no such results file or folder' if why == 'no such file' else why}; {FIX}")
    if not found:
        raise ConfigError(option, f"no result files given; {FIX}")
    unique: dict[Path, Path] = {}
    for path in found:  # each file once, named as the arguments name it
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _walk(folder: Path) -> list[Path]:
    """Every file below ``folder``, following no symbolic link to a folder (a link loop would
    never end), skipping folders that cannot be listed."""
    files = []
    for root, _, names in os.walk(folder, onerror=lambda exc: None):
        files += [Path(root) / name for name in names]
    return files


def night_date(timestamp: datetime.datetime, night_ends: int = NIGHT_ENDS) -> str:
    """The name of the night a UTC time falls in (see module docstring)."""
    shift = datetime.timedelta(hours=24 - night_ends) if night_ends else datetime.timedelta(0)
    return (timestamp + shift).date().isoformat()


def parse_timestamp(record: dict[str, Any]) -> datetime.datetime | None:
    text = (record.get("provenance") or {}).get("timestamp_utc")
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.astimezone(datetime.timezone.utc)


@contextlib.contextmanager
def _without_gc():
    # Reading builds millions of small objects that all stay alive: the cyclic collector would
    # rescan them again and again (measured: 40% of the load time of 10,000 records), and
    # JSON objects hold no cycles for it to find.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_store(paths: Iterable[str | Path], night_ends: int = NIGHT_ENDS, option: str = "RESULTS") -> Store:
    """Read and group every record of the history (see module docstring)."""
    with _without_gc():
        return _load(find_sources(paths, option), night_ends, option)


def _load(sources: list[Path], night_ends: int, option: str) -> Store:
    unreadable: dict[Path, int] = {}
    points: dict[tuple[str, Path], list[tuple[datetime.datetime, dict[str, Any]]]] = {}
    statuses: Counter = Counter()
    undated = 0
    for source in sources:
        found, skipped = read_results_file(source, option, SKIPPED_ARRAYS, FIX)
        if skipped:
            unreadable[source] = skipped
        for record in latest_per_run(found):
            stamp = parse_timestamp(record)
            if stamp is None:
                undated += 1
                continue
            statuses[str(record.get("status"))] += 1
            points.setdefault((night_date(stamp, night_ends), source), []).append((stamp, record))
    nights = _nights(points)
    groups: dict[str, SettingRuns] = {}
    for night in nights:
        for _, record in points[(night.date, night.source)]:
            s = settings(record)
            key = key_of(s)
            runs = groups.get(key)
            if runs is None:
                runs = groups[key] = SettingRuns(key, s, setting_label(s))
            runs.by_night.setdefault(night.index, []).append(record)
    records = sum(statuses.values())
    return Store(sources, nights, sorted(groups.values(), key=lambda g: g.label), records, statuses, unreadable, undated)


def _nights(points: dict[tuple[str, Path], list[tuple[datetime.datetime, dict[str, Any]]]]) -> list[Night]:
    order = sorted(points, key=lambda key: (min(stamp for stamp, _ in points[key]), str(key[1])))
    per_date = Counter(date for date, _ in order)
    nights: list[Night] = []
    used: set[str] = set()
    for index, (date, source) in enumerate(order):
        label = date if per_date[date] == 1 else f"{date} {source_name(source)}"
        if label in used:  # two sources whose folders share a name
            label += f" #{index + 1}"
        used.add(label)
        first = min(stamp for stamp, _ in points[(date, source)])
        nights.append(Night(index, date, source, label, first.isoformat(timespec="seconds")))
    return nights


def source_name(path: Path) -> str:
    """A short name for a results file: its folder's name for ``…/NAME/results.jsonl``."""
    return path.parent.name if path.name == RESULTS_FILE else path.stem
