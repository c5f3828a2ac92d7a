"""Figures that depend only on the code and the machine, measured once and kept between runs.

``larsbench`` keeps two kinds here: the FLOPs of a model's training step (a property of the model
definition, the input size and torch's counting rules) and a device's measured matrix-product peak
(a property of the hardware, the precision, the threads a rank has and how many ranks share the
node). Neither changes from one run to the next, so measuring them in every run only added seconds
before training and noise to MFU's denominator. Each entry is keyed by everything it depends on,
including larsbench's and torch's versions; a stale entry is never read, it is simply not found.

The cache is one JSON file per kind under ``$LARSBENCH_CACHE`` (default
``$XDG_CACHE_HOME/larsbench``, else ``~/.cache/larsbench``); delete it to measure again. A cache
that cannot be read or written is not an error: the figure is measured, as without a cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from larsbench.core.files import atomic_write


def cache_dir() -> Path:
    base = os.environ.get("LARSBENCH_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "larsbench"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(kind: str, key: dict[str, Any], measure: Callable[[], float]) -> tuple[float, bool]:
    """``measure()``'s value for ``key`` in the ``kind`` cache, measuring and keeping it when
    absent. Returns (value, whether it came from the cache)."""
    path = cache_dir() / f"{kind}.json"
    name = json.dumps(key, sort_keys=True, separators=(",", ":"))
    found = _read(path).get(name)
    if isinstance(found, (int, float)) and not isinstance(found, bool):
        return float(found), True
    value = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Ranks may add entries at once: re-read just before the atomic replace, so the window in
        # which one rank's entry can be lost is tiny, and a lost entry is only measured again.
        atomic_write(path, json.dumps({**_read(path), name: value}, indent=1, sort_keys=True), sync=False)
    except OSError:
        pass
    return value, False
