"""Where a run's time goes around its training clock, phase by phase.

A run costs more than its on-clock time (``wall_time_sec``): the backend's launcher starts the
ranks, each imports torch and the backend's library, joins the rendezvous, builds its data and
model, runs the compute probe; after training it gathers the per-step series and writes the
record. On a short run these cost more than the training itself, so every record carries them.

The launcher stamps the wall-clock time just before it starts the backend's launcher
(``LARSBENCH_LAUNCH_TIME``: ``suite.launch`` locally, the batch script under Slurm, before its
own helpers run); a rank knows when its own process was created (Linux ``/proc``) and times the
rest itself on ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping

LAUNCH_TIME_ENV = "LARSBENCH_LAUNCH_TIME"
# A rank forked from a rank server (suite.rank_server) did its imports there: "BEGAN DONE", when
# the server's imports began and ended (Unix seconds).
PRELOAD_ENV = "LARSBENCH_PRELOADED"

# In the order a run meets them; the first seven come before the run's clock starts, the
# other three are inside it (first_step, evaluation) or after it (record).
SETUP_PHASES = ("launcher", "imports", "rendezvous", "data", "model", "probe", "setup_other")
PHASES = (*SETUP_PHASES, "first_step", "evaluation", "record")

PHASE_DOCS = {
    "launcher": "launch stamp to the rank's process start: the backend's launcher, or the batch script and srun",
    "imports": "interpreter start and imports, the backend's library included (a forked rank: what it waited for of its rank server's)",
    "rendezvous": "the backend's setup, joining the process group",
    "data": "the rank's data set and loaders",
    "model": "model, optimizer, checkpoint restore and the backend's wrap",
    "probe": "FLOP count, matrix-product peak and compute probe; cached figures cost a file read",
    "setup_other": "the rest of setup: hosts gathered, the event log, the barrier that starts the clock",
    "first_step": "the first optimizer step, inside the clock; data-loader workers start here",
    "evaluation": "every evaluation, inside the clock",
    "record": "end of training to the record: per-step series gathered, provenance",
}


def launch_time(environ: Mapping[str, str] | None = None) -> float | None:
    """The launcher's stamp (Unix seconds), or None when the ranks were started without one."""
    value = (os.environ if environ is None else environ).get(LAUNCH_TIME_ENV, "")
    try:
        stamp = float(value)
    except ValueError:
        return None
    return stamp if stamp > 0 else None


def preload_times(environ: Mapping[str, str] | None = None) -> tuple[float, float | None]:
    """When this rank's server began and ended its imports, or (0, None) for a rank that did its own."""
    try:
        began, done = map(float, (os.environ if environ is None else environ).get(PRELOAD_ENV, "").split())
    except ValueError:
        return 0.0, None
    return began, done


def process_start_time(pid: int | str = "self") -> float | None:
    """When process ``pid`` was created, in Unix seconds (to the kernel's clock tick), or None
    where ``/proc`` cannot say. The kernel counts a process's start on the boot-time clock;
    the process's age on that clock, taken from now, gives its wall-clock start."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
        # Field 22 (starttime); the command name (field 2) may hold spaces, so count from its ')'.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


class Phases:
    """One rank's phase durations (seconds, by name in ``PHASES``) and the wall-clock points
    the record needs: the launch, the process start, the start of the run's clock."""

    def __init__(self, launched: float | None = None, process_started: float | None = None) -> None:
        self.sec: dict[str, float] = {}
        self.launched = launched
        self.process_started = process_started
        self.clock_started: float | None = None  # Unix seconds
        self._loop_ended: float | None = None  # perf_counter

    @classmethod
    def of_this_process(cls) -> Phases:
        """Phases of a rank whose imports have just finished: launcher and imports from the
        launch stamp and this process's start."""
        now = time.time()
        phases = cls(launch_time(), process_start_time())
        started = phases.process_started
        if started is not None:
            # A forked rank's imports were its server's: what of them this launch waited for
            # (a server's first run) counts as imports, not as the launcher's.
            began, done = preload_times()
            waited = 0.0 if done is None else max(0.0, min(done, started) - max(began, phases.launched or began))
            if phases.launched is not None:
                phases.sec["launcher"] = max(0.0, started - phases.launched - waited)
            phases.sec["imports"] = max(0.0, now - started) + waited
        return phases

    def add(self, name: str, seconds: float) -> None:
        if name not in PHASES:
            raise KeyError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        self.sec[name] = self.sec.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def start_clock(self) -> None:
        """The run's clock starts now: the rest of setup is what the named phases left."""
        self.clock_started = time.time()
        setup = self.setup_sec
        if setup is not None:
            named = sum(self.sec.get(name, 0.0) for name in SETUP_PHASES if name != "setup_other")
            self.sec["setup_other"] = max(0.0, setup - named)

    @property
    def setup_sec(self) -> float | None:
        """From the launch (else the process start) to the start of the run's clock."""
        origin = self.launched if self.launched is not None else self.process_started
        if origin is None or self.clock_started is None:
            return None
        return max(0.0, self.clock_started - origin)

    def end_loop(self) -> None:
        self._loop_ended = time.perf_counter()

    def end_record(self) -> None:
        """The record is being built now: what passed since the loop ended is its phase."""
        if self._loop_ended is not None:
            self.sec["record"] = time.perf_counter() - self._loop_ended

    def as_dict(self) -> dict[str, float]:
        return {name: round(self.sec[name], 4) for name in PHASES if name in self.sec}


def summary(setup_sec: float | None, phases: Mapping[str, float] | None) -> str:
    """One console line: ``setup 3.1 s (launcher 0.4, imports 1.6, ...); first step 0.2 s, ...``."""
    phases = phases or {}
    parts = [f"{name.replace('_', ' ')} {phases[name]:.2f}" for name in SETUP_PHASES if name in phases]
    text = f"setup {setup_sec:.2f} s" if setup_sec is not None else "setup ? s"
    if parts:
        text += f" ({', '.join(parts)})"
    after = [f"{name.replace('_', ' ')} {phases[name]:.2f} s" for name in PHASES[len(SETUP_PHASES):] if name in phases]
    return "; ".join([text, *after])
