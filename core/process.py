"""Whether a process still runs, as a launcher watching its ranks needs to know."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited process not yet reaped by its parent (a zombie)
    counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
