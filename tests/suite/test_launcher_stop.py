"""A local run stops its backend's launcher once the record is written and every rank has
exited (the launcher has nothing left to report), and only then; a backend that does not
allow it is always waited for."""

import io
import os
import subprocess
import sys

from rich.console import Console

from larsbench.backends.registry import get_backend
from larsbench.core.layout import RunFiles
from larsbench.suite.launch import _finished, _follow


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def run_files(tmp_path, pids: list[int], recorded: bool) -> RunFiles:
    files = RunFiles.of(tmp_path / "results.jsonl", "run-1")
    for rank, pid in enumerate(pids):
        files.pid(rank).parent.mkdir(parents=True, exist_ok=True)
        files.pid(rank).write_text(f"{pid} localhost\n")
    if recorded:
        files.recorded.parent.mkdir(parents=True, exist_ok=True)
        files.recorded.write_text("run-1\n")
    return files


def follow(files: RunFiles, world_size: int, backend: str, launcher: list[str]) -> int:
    process = subprocess.Popen(launcher)
    try:
        return _follow(process, files, Console(file=io.StringIO()), show=False, done=_finished(files, world_size, get_backend(backend)))
    finally:
        process.kill()
        process.wait()


LINGERING = [sys.executable, "-c", "import time; time.sleep(60)"]
QUICK = [sys.executable, "-c", "import time; time.sleep(0.5)"]


def test_a_launcher_whose_ranks_finished_after_the_record_is_stopped(tmp_path):
    files = run_files(tmp_path, [exited_pid(), exited_pid()], recorded=True)
    assert follow(files, 2, "deepspeed", LINGERING) == -9


def test_without_the_record_the_launcher_is_waited_for(tmp_path):
    files = run_files(tmp_path, [exited_pid(), exited_pid()], recorded=False)
    assert follow(files, 2, "ddp", QUICK) == 0


def test_a_rank_still_running_or_never_started_keeps_the_launcher(tmp_path):
    assert follow(run_files(tmp_path / "a", [exited_pid(), os.getpid()], recorded=True), 2, "ddp", QUICK) == 0
    assert follow(run_files(tmp_path / "b", [exited_pid()], recorded=True), 2, "ddp", QUICK) == 0


def test_a_backend_that_does_not_allow_it_is_always_waited_for(tmp_path):
    files = run_files(tmp_path, [exited_pid()], recorded=True)
    assert not get_backend("horovod").launcher_stops_after_ranks
    assert follow(files, 1, "horovod", QUICK) == 0
