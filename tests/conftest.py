import contextlib
import fcntl
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# --- two tests at a time (pytest -n 2, the default) ------------------------------------------------
# Each test file runs on one xdist worker (--dist loadfile), so its module fixtures are made once.
# While tests run beside each other: a test marked ``timed`` judges measured times, so it waits for
# the test beside it to end and runs alone; two tests never use one local Slurm at once (their jobs
# would queue behind each other's, and some stop its controller). The files that use a cluster go
# first, the two clusters' files taking turns, so each worker starts on a different cluster; timed
# files go last, where the worker beside them has least left to do.

CLUSTERS = ("slurm_nodes", "slurm_cluster")  # fixtures (tests/slurm/conftest.py)


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _cluster(item: pytest.Item) -> str | None:
    return next((fixture for fixture in CLUSTERS if fixture in item.fixturenames), None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    by_cluster: dict[str, list[str]] = {fixture: [] for fixture in CLUSTERS}
    for item in items:
        cluster = _cluster(item)
        if cluster is not None and _file(item) not in by_cluster[cluster]:
            by_cluster[cluster].append(_file(item))
    timed = {_file(item) for item in items if item.get_closest_marker("timed") is not None}
    turns = [f for pair in itertools.zip_longest(*by_cluster.values()) for f in pair if f is not None and f not in timed]
    rank = {f: i for i, f in enumerate(dict.fromkeys(turns))}
    items.sort(key=lambda item: (_file(item) in timed, rank.get(_file(item), len(rank))))


@contextlib.contextmanager
def _held(folder: Path, name: str, mode: int) -> Iterator[None]:
    with open(folder / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _turn(config: pytest.Config, alone: bool, cluster: str | None) -> Iterator[None]:
    """A readers-writer lock over the run's workers (every test holds the room shared, a timed
    test holds it alone; the door lets a waiting timed test in before the next shared one), then
    the test's cluster, always in that order. The lock files live in the run's own temporary
    folder (each worker's is ``popen-gwN`` inside it), which pytest removes with old runs."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: nothing runs beside anything
        yield
        return
    folder = Path(config.option.basetemp).parent / "locks"
    folder.mkdir(exist_ok=True)
    with contextlib.ExitStack() as held:
        door = held.enter_context(open(folder / "door.lock", "a"))
        fcntl.flock(door, fcntl.LOCK_EX)
        held.callback(fcntl.flock, door, fcntl.LOCK_UN)
        held.enter_context(_held(folder, "room", fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        if not alone:
            fcntl.flock(door, fcntl.LOCK_UN)
        if cluster is not None:
            held.enter_context(_held(folder, cluster, fcntl.LOCK_EX))
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Around setup, call and teardown: a module fixture that runs ranks is inside the lock too.
    with _turn(item.config, alone=item.get_closest_marker("timed") is not None, cluster=_cluster(item)):
        yield


@pytest.fixture(autouse=True)
def _isolated_data_cache(tmp_path_factory, monkeypatch):
    # Generated data sets land in a per-session folder, never in the user's cache.
    monkeypatch.setenv("LARSBENCH_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))
    # FLOP counts and measured peaks too (``core.cache``): measured once per test session.
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``larsbench ARGS`` in a fresh process, exactly as a user runs it (``env``: variables to add)."""
    return subprocess.run(
        [sys.executable, "-m", "larsbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def larsbench(*args: str) -> subprocess.CompletedProcess:
    """``larsbench ARGS`` in this process (``larsbench.main.main``): the same parser, handlers and
    exit codes without a fresh interpreter's start-up, for tests of validation and messages.
    Warnings are off, as ``run_cli`` turns them off."""
    import contextlib
    import io
    import warnings

    from larsbench.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["larsbench", *args], code, out.getvalue(), err.getvalue())
