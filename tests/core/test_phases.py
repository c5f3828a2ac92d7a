"""A run's phases around its clock: the launch stamp, the process's own start, the named phases
and the remainder of setup."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from larsbench.core.phases import LAUNCH_TIME_ENV, PHASES, PRELOAD_ENV, SETUP_PHASES, Phases, launch_time, process_start_time, summary


def test_a_process_start_is_read_from_the_kernel_to_the_clock_tick():
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = process_start_time(child.pid)
    finally:
        child.communicate(b"")
    assert started is not None
    # created after ``before`` (less the kernel's 10 ms tick), and not in the future
    assert before - 0.02 <= started <= time.time()
    assert process_start_time("self") <= before
    assert process_start_time(2**22 + 12345) is None  # no such process


@pytest.mark.parametrize("value, expected", [("1796480669.95", 1796480669.95), ("", None), ("soon", None), ("-1", None)])
def test_the_launch_stamp_is_read_or_ignored(value, expected):
    assert launch_time({LAUNCH_TIME_ENV: value}) == expected
    assert launch_time({}) is None


def test_setup_is_the_launch_to_the_clock_and_its_remainder_is_named():
    phases = Phases(launched=time.time() - 3.0, process_started=time.time() - 2.0)
    phases.add("launcher", 1.0)
    phases.add("imports", 1.2)
    with phases.timed("data"):
        time.sleep(0.01)
    phases.add("model", 0.3)
    phases.start_clock()
    assert phases.setup_sec == pytest.approx(3.0, abs=0.1)
    named = sum(phases.sec.get(name, 0.0) for name in SETUP_PHASES if name != "setup_other")
    assert phases.sec["setup_other"] == pytest.approx(phases.setup_sec - named, abs=1e-6)
    assert sum(phases.as_dict()[name] for name in SETUP_PHASES if name in phases.sec) == pytest.approx(phases.setup_sec, abs=1e-3)
    phases.add("evaluation", 0.5)
    phases.add("evaluation", 0.25)  # every evaluation adds up
    phases.end_loop()
    phases.end_record()
    assert phases.as_dict()["evaluation"] == 0.75
    assert 0 <= phases.as_dict()["record"] < 1
    assert list(phases.as_dict()) == [name for name in PHASES if name in phases.sec]  # in the order a run meets them
    with pytest.raises(KeyError, match="unknown phase"):
        phases.add("lunch", 1.0)


def test_without_a_launch_stamp_setup_counts_from_the_process_start():
    phases = Phases(launched=None, process_started=time.time() - 2.0)
    assert phases.setup_sec is None  # the clock has not started
    phases.start_clock()
    assert phases.setup_sec == pytest.approx(2.0, abs=0.1)
    assert Phases().setup_sec is None


def test_this_process_measures_its_launcher_and_imports(monkeypatch):
    monkeypatch.setenv(LAUNCH_TIME_ENV, repr(process_start_time() - 0.5))
    phases = Phases.of_this_process()
    assert phases.sec["launcher"] == pytest.approx(0.5, abs=0.02)
    assert phases.sec["imports"] > 0  # this interpreter started some time ago


def test_a_forked_rank_counts_what_it_waited_for_of_its_servers_imports_as_imports(monkeypatch):
    started = process_start_time()
    # launched 3 s before this process; its server imported from 2.5 s to 0.5 s before it forked this one
    monkeypatch.setenv(LAUNCH_TIME_ENV, repr(started - 3.0))
    monkeypatch.setenv(PRELOAD_ENV, f"{started - 2.5!r} {started - 0.5!r}")
    first = Phases.of_this_process()
    assert first.sec["launcher"] == pytest.approx(1.0, abs=0.02)
    assert first.sec["imports"] == pytest.approx(2.0 + time.time() - started, abs=0.05)
    # a later run of that server: its imports were over before the launch, none of them waited for
    monkeypatch.setenv(PRELOAD_ENV, f"{started - 60!r} {started - 50!r}")
    later = Phases.of_this_process()
    assert later.sec["launcher"] == pytest.approx(3.0, abs=0.02)
    assert later.sec["imports"] == pytest.approx(time.time() - started, abs=0.05)


def test_the_console_line_names_every_phase_it_has():
    line = summary(3.25, {"launcher": 1.0, "imports": 1.5, "setup_other": 0.75, "first_step": 0.1, "record": 0.2})
    assert line == "setup 3.25 s (launcher 1.00, imports 1.50, setup other 0.75); first step 0.10 s; record 0.20 s"
    assert summary(None, None) == "setup ? s"
