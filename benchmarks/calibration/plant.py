"""Plant a slowdown into a running larsbench run from outside, so its settings stay identical.

A SIGSTOP/SIGCONT duty cycle on the run's rank processes (their pids are in
``OUTPUT/.larsbench/pids/``, ``core.layout.RunFiles``) and, by default, their children (data
loader workers): stopped for ``stop_fraction`` of every ``period_sec``, a rank loses that share
of its wall time, so a duty cycle of 10% makes the run about 10% slower, whatever else the
machine does. (A competing busy process does not: the scheduler decides how much it takes,
see /work/shared/ENVIRONMENT.md.) What one may plant with it:

- the run slower throughout: ``Throttle(stop_fraction=0.1)`` (every rank);
- a slowdown from the middle of the window: ``Throttle(0.1, start_at_step=30)`` (rank 0's
  progress file says which optimizer step the run is at);
- one rank stopped for 2 seconds: ``Throttle.pause(rank=1, seconds=2.0, start_at_step=20)``;
- one throttled rank of two (a straggler): ``Throttle(0.3, ranks=(1,))``.

A duty cycle takes a share of the rank's *wall* time; on a machine whose cores the ranks share,
the stopped rank makes up for it on the cores its waiting peers leave idle, so a 30% duty
cycle can leave it barely behind them. ``CpuQuota(0.7, ranks=(1,))`` holds the rank and its
children to 0.7 of a CPU through the cgroup ``cpu`` controller's quota (v1 at
``/sys/fs/cgroup/cpu``, or v2; as root), whatever the other ranks leave free: a rank on a core
it shares with another job, as a cluster has it.

``Planter(files, throttle)`` runs the cycle in a thread beside the run (``with`` it, or
``start``/``stop``): it waits for the ranks' pid files, then for the start condition, and
always leaves every process it stopped running again. ``Planter.log`` says how long each rank
was stopped, and when.

Before a detector is judged on a planted run, check in the run's own per-step data that the
slowdown landed in its measured window (``excess_share`` against the run's own median step: a
stop lengthens the steps it falls into, not the median): a stop that fell into start-up or
evaluation slows nothing that was measured.

``python -m benchmarks.calibration.plant OUTPUT RUN_ID --stop-fraction 0.1`` does the same from
a shell, beside a ``larsbench run --output OUTPUT --run-id RUN_ID``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from larsbench.core.layout import RunFiles
from larsbench.core.process import alive
from larsbench.loop.progress import read_status


@dataclass(frozen=True)
class Throttle:
    stop_fraction: float  # share of each period the ranks spend stopped (1.0: stopped throughout)
    period_sec: float = 0.5
    ranks: tuple[int, ...] | None = None  # None: every rank that started
    start_at_step: int | None = None  # rank 0's optimizer step to start at (None: once the ranks are up)
    start_after_sec: float = 0.0  # and this long after that
    duration_sec: float | None = None  # None: until the run ends
    children: bool = True  # stop the ranks' child processes (data loader workers) with them

    def __post_init__(self) -> None:
        if not 0 < self.stop_fraction <= 1 or self.period_sec <= 0:
            raise ValueError("stop_fraction must be in (0, 1] and period_sec positive")

    @classmethod
    def pause(cls, rank: int, seconds: float, start_at_step: int | None = None, start_after_sec: float = 0.0) -> Throttle:
        """One stop of ``rank`` for ``seconds``."""
        return cls(1.0, seconds, (rank,), start_at_step, start_after_sec, duration_sec=seconds)


@dataclass(frozen=True)
class CpuQuota:
    cpus: float  # CPU seconds per second each rank (with its children) may use
    ranks: tuple[int, ...] | None = None  # None: every rank that started
    period_sec: float = 0.01  # short: a throttled rank waits at most this long for its next slice
    start_at_step: int | None = None
    start_after_sec: float = 0.0
    duration_sec: float | None = None

    def __post_init__(self) -> None:
        if self.cpus <= 0 or not 0.001 <= self.period_sec <= 1 or self.cpus * self.period_sec < 0.001:
            raise ValueError("cpus must be positive and period_sec within [0.001, 1] s, with cpus * period_sec >= 1 ms (the kernel's least quota)")


@dataclass
class PlantLog:
    started: float | None = None  # time.time() of the first stop
    ended: float | None = None
    stopped_sec: dict[int, float] = field(default_factory=dict)  # rank → seconds stopped
    stops: int = 0
    throttled_sec: dict[int, float] = field(default_factory=dict)  # rank → seconds held back by its quota
    note: str | None = None  # why nothing (or less) was planted


class Planter:
    def __init__(self, files: RunFiles, throttle: Throttle | CpuQuota, wait_sec: float = 300.0):
        self.files, self.throttle, self.wait_sec = files, throttle, wait_sec
        self.log = PlantLog()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Planter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if isinstance(self.throttle, CpuQuota):
            _CpuGroup.controller()  # fails here, not in the thread, where nobody would see it
        self._thread.start()

    def stop(self) -> PlantLog:
        self._done.set()
        self._thread.join()
        return self.log

    def _ranks(self) -> dict[int, int]:
        pids = self.files.rank_pids()
        wanted = self.throttle.ranks
        return {rank: pid for rank, pid in pids.items() if wanted is None or rank in wanted}

    def _run(self) -> None:
        t = self.throttle
        deadline = time.monotonic() + self.wait_sec
        ranks: dict[int, int] = {}
        while not self._done.is_set() and time.monotonic() < deadline:  # the ranks' pid files
            ranks = {r: p for r, p in self._ranks().items() if alive(p)}
            if ranks and (t.ranks is None or set(t.ranks) <= set(ranks)):
                break
            self._done.wait(0.05)
        else:
            self.log.note = "the ranks never started"
            return
        if t.start_at_step is not None:
            while not self._done.is_set():
                status = read_status(self.files.progress)
                if status and status.get("step", 0) >= t.start_at_step:
                    break
                if not any(alive(p) for p in ranks.values()):
                    self.log.note = f"the run ended before step {t.start_at_step}"
                    return
                self._done.wait(0.02)
        if self._done.wait(t.start_after_sec):
            return
        self.log.started = time.time()
        if isinstance(t, CpuQuota):
            self._hold(t, ranks)
            return
        end = None if t.duration_sec is None else time.monotonic() + t.duration_sec
        stopped: set[int] = set()
        resumed = None  # when the ranks were last continued
        try:
            while not self._done.is_set() and (end is None or time.monotonic() < end):
                pids = {r: p for r, p in ranks.items() if alive(p)}
                if not pids:
                    break
                down = time.monotonic()
                targets = {r: [p, *(_children(p) if t.children else [])] for r, p in pids.items()}
                for procs in targets.values():
                    for pid in procs:
                        _signal(pid, signal.SIGSTOP, stopped)
                stop_for = t.stop_fraction * t.period_sec
                if resumed is not None and t.stop_fraction < 1:
                    # This thread shares the cores with the ranks and may wake late: the stop
                    # keeps its share of the whole cycle, however long the ranks just ran.
                    stop_for = max(stop_for, (down - resumed) * t.stop_fraction / (1 - t.stop_fraction))
                if end is not None:
                    stop_for = min(stop_for, max(0.0, end - time.monotonic()))
                time.sleep(stop_for)  # not interruptible: a stop is never cut short
                for pid in list(stopped):
                    _signal(pid, signal.SIGCONT, stopped)
                resumed = time.monotonic()
                held = resumed - down
                for rank in pids:
                    self.log.stopped_sec[rank] = self.log.stopped_sec.get(rank, 0.0) + held
                self.log.stops += 1
                if t.stop_fraction < 1:
                    self._done.wait((1 - t.stop_fraction) * t.period_sec)
        finally:
            for pid in list(stopped):  # never leave a process stopped
                _signal(pid, signal.SIGCONT, stopped)
            self.log.ended = time.time()

    def _hold(self, quota: CpuQuota, ranks: dict[int, int]) -> None:
        groups: dict[int, _CpuGroup] = {}
        end = None if quota.duration_sec is None else time.monotonic() + quota.duration_sec
        try:
            for rank in ranks:
                groups[rank] = _CpuGroup(f"larsbench-plant-{os.getpid()}-{rank}", quota)
            while not self._done.is_set() and (end is None or time.monotonic() < end):
                pids = {r: p for r, p in ranks.items() if alive(p)}
                if not pids:
                    break
                for rank, pid in pids.items():  # children forked before the move are moved too
                    groups[rank].add([pid, *_children(pid)])
                self._done.wait(0.05 if end is None else max(0.0, min(0.05, end - time.monotonic())))
        finally:
            for rank, group in groups.items():
                self.log.throttled_sec[rank] = group.close()
            self.log.ended = time.time()


class _CpuGroup:
    """A cgroup holding its processes to ``quota.cpus`` CPUs; ``close`` moves them back to the
    root group, removes it and says how long the kernel held them back."""

    def __init__(self, name: str, quota: CpuQuota):
        period_us = round(quota.period_sec * 1e6)
        limit_us = round(quota.cpus * period_us)
        self.root, v1 = self.controller()
        self.path = self.root / name
        if v1:
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(f"{period_us}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{limit_us}\n")
        else:
            control = self.root / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu\n")
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{limit_us} {period_us}\n")
        self.moved: set[int] = set()

    @staticmethod
    def controller() -> tuple[Path, bool]:
        """The cpu controller's root folder, and whether it is cgroup v1."""
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        if os.access(v1 / "cgroup.procs", os.W_OK):
            return v1, True
        if (v2 / "cgroup.controllers").exists() and os.access(v2 / "cgroup.procs", os.W_OK):
            return v2, False
        raise PermissionError("CpuQuota needs the cgroup cpu controller, writable (v1 at /sys/fs/cgroup/cpu, or cgroup v2): run as root")

    def add(self, pids: list[int]) -> None:
        for pid in pids:
            if pid in self.moved:
                continue
            try:
                (self.path / "cgroup.procs").write_text(f"{pid}\n")
                self.moved.add(pid)
            except OSError:
                pass  # it ended between listing and moving

    def close(self) -> float:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        # v1 counts nanoseconds (throttled_time), v2 microseconds (throttled_usec).
        held = int(stat.get("throttled_time", 0)) / 1e9 + int(stat.get("throttled_usec", 0)) / 1e6
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (self.root / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                pass
        for _ in range(50):  # an exiting process leaves the group a moment later
            try:
                self.path.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        return held


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux: /proc/PID/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(x) for x in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            queue += kids
    return found


def _signal(pid: int, sig: int, stopped: set[int]) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        stopped.discard(pid)
        return
    if sig == signal.SIGSTOP:
        stopped.add(pid)
    else:
        stopped.discard(pid)


# --- checking that it landed ----------------------------------------------------------------------


def step_times(steps_file: Path, rank: int | None = None) -> list[float]:
    """The measured window's step times of ``rank`` (default: the slowest rank's mean: what the
    others waited for) from a run's ``steps/<run_id>.jsonl``."""
    rows = [json.loads(line) for line in Path(steps_file).read_text().splitlines() if line.strip()]
    series = {row["rank"]: [float(x) for x in row["step_sec"]] for row in rows}
    if rank is None:
        rank = max(series, key=lambda r: statistics.fmean(series[r]) if series[r] else 0.0)
    return series[rank]


def excess_share(times: list[float], reference_step_sec: float) -> float:
    """The share of the window spent beyond ``reference_step_sec`` per step (the run's own
    median step time, say): about the stopped share plus the run's own jitter for a
    duty-cycled run, the jitter alone for an idle one. Steps faster than the reference count
    nothing, so it measures added time only."""
    total = sum(times)
    return sum(max(0.0, t - reference_step_sec) for t in times) / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration.plant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("output", type=Path, help="the run's results folder (larsbench run --output)")
    parser.add_argument("run_id", help="the run's id (larsbench run --run-id)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--stop-fraction", type=float, help="share of each period the ranks are stopped")
    how.add_argument("--cpus", type=float, help="hold each rank to this many CPUs (a cgroup CPU quota) instead")
    parser.add_argument("--period", type=float, help="seconds per stop-and-run cycle (default 0.5) or quota period (default 0.01)")
    parser.add_argument("--rank", type=int, action="append", help="only this rank (repeatable; default every rank)")
    parser.add_argument("--start-at-step", type=int, help="start when rank 0 reaches this optimizer step")
    parser.add_argument("--start-after", type=float, default=0.0, help="and this many seconds after that")
    parser.add_argument("--duration", type=float, help="stop planting after this many seconds (default: the run's end)")
    args = parser.parse_args(argv)
    ranks = tuple(args.rank) if args.rank else None
    if args.cpus is not None:
        throttle = CpuQuota(args.cpus, ranks, args.period or 0.01, args.start_at_step, args.start_after, args.duration)
    else:
        throttle = Throttle(args.stop_fraction, args.period or 0.5, ranks, args.start_at_step, args.start_after, args.duration)
    planter = Planter(RunFiles.of(args.output, args.run_id), throttle)
    planter.start()
    try:
        planter._thread.join()
    except KeyboardInterrupt:
        planter.stop()
    print(json.dumps(asdict(planter.log)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
