"""The planting tool (benchmarks/calibration/plant.py) really stops what it says, for as long as
it says: a process that notes the time every 5 ms shows the gaps; and a CPU quota holds a process
and its children to their share: spinning processes show the CPU time they got."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.calibration.plant import CpuQuota, Planter, Throttle, _CpuGroup, excess_share
from larsbench.core.layout import RunFiles

pytestmark = [pytest.mark.multiprocess, pytest.mark.timed]

TICKER = "import time\nend = time.monotonic() + {sec}\nwhile time.monotonic() < end:\n    print(time.monotonic(), flush=True)\n    time.sleep(0.005)\n"


def gaps(seconds: float, throttle: Throttle, tmp_path) -> tuple[list[float], object]:
    """The gaps between a ticking process's ticks while ``throttle`` runs on it as rank 0."""
    files = RunFiles.of(tmp_path, "run")
    child = subprocess.Popen([sys.executable, "-c", TICKER.format(sec=seconds)], stdout=subprocess.PIPE, text=True)
    files.pid(0).parent.mkdir(parents=True, exist_ok=True)
    files.pid(0).write_text(f"{child.pid} here\n")
    with Planter(files, throttle) as planter:
        out, _ = child.communicate(timeout=seconds + 30)
    ticks = [float(x) for x in out.split()]
    return [b - a for a, b in zip(ticks, ticks[1:])], planter.log


def test_a_pause_of_one_rank_stops_it_once_for_that_long(tmp_path):
    found, log = gaps(2.0, Throttle.pause(rank=0, seconds=0.6, start_after_sec=0.3), tmp_path)
    long = [g for g in found if g > 0.1]
    assert len(long) == 1 and 0.55 <= long[0] <= 0.9, long
    assert log.stops == 1 and log.stopped_sec[0] == pytest.approx(0.6, abs=0.1)


def test_a_duty_cycle_takes_its_share_of_wall_time_and_leaves_the_process_running(tmp_path):
    found, log = gaps(3.0, Throttle(0.3, period_sec=0.2, duration_sec=2.0), tmp_path)
    stopped = sum(g for g in found if g > 0.03)
    assert 0.45 <= stopped <= 0.8, stopped  # 30% of 2 s
    assert 8 <= log.stops <= 11 and log.ended is not None
    assert excess_share([0.1] * 8 + [0.15] * 2, 0.1) == pytest.approx(0.1 / 1.1)


# A process and the child it forks spin for SECONDS and print the CPU time each used.
SPINNERS = """import os, time
child = os.fork()
end = time.monotonic() + {sec}
while time.monotonic() < end:
    pass
os.write(1, f"{{time.process_time()}}\\n".encode())  # one write each: a pipe keeps it whole
if child:
    os.waitpid(child, 0)
"""


def test_a_cpu_quota_holds_a_rank_and_its_children_to_their_cpus_and_is_removed(tmp_path):
    files = RunFiles.of(tmp_path, "run")
    seconds = 2.0
    child = subprocess.Popen([sys.executable, "-c", SPINNERS.format(sec=seconds)], stdout=subprocess.PIPE, text=True)
    files.pid(0).parent.mkdir(parents=True, exist_ok=True)
    files.pid(0).write_text(f"{child.pid} here\n")
    with Planter(files, CpuQuota(0.3, ranks=(0,))) as planter:
        out, _ = child.communicate(timeout=seconds + 30)
    spun = [float(x) for x in out.split()]
    assert len(spun) == 2, out  # both spinners ran to their end and said so
    used = sum(spun)
    # Unheld, two spinners on two cores use about 4 CPU seconds in 2 s; held, 0.6 and what the
    # interpreter's start used before the planter found the pid.
    assert used < 0.3 * seconds + 0.4, out
    assert planter.log.throttled_sec[0] > 0.5 and planter.log.note is None
    root, _ = _CpuGroup.controller()
    assert not list(root.glob(f"larsbench-plant-{os.getpid()}-*")), "the cgroup was left behind"


def test_a_cpu_quota_refuses_what_the_kernel_would():
    with pytest.raises(ValueError, match="cpus"):
        CpuQuota(0.05, period_sec=0.01)  # a 0.5 ms quota: the kernel's least is 1 ms
