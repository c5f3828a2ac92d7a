"""larsbench's local launcher (suite.local_ranks): every rank gets torch.distributed's env://
variables, a failing rank stops the others and its status is the run's, ranks that exit
preempted are waited for. Tiny Python ranks, no torch: the launcher's own behaviour."""

import json
import subprocess
import sys
import time

import pytest

from larsbench.core.environment import detect
from larsbench.core.preemption import EXIT_PREEMPTED
from larsbench.suite.local_ranks import LocalRanks


def ranks(tmp_path, program: str, nprocs: int = 3) -> LocalRanks:
    """``program`` run by every rank, with ``out`` (a folder) and ``rank`` defined."""
    code = f"import os, sys, time, json, signal; out = {str(tmp_path)!r}; rank = int(os.environ['RANK'])\n{program}"
    return LocalRanks(nprocs, [sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, None)


def test_every_rank_gets_the_variables_that_name_it_and_the_world(tmp_path):
    launched = ranks(tmp_path, "json.dump(dict(os.environ), open(f'{out}/{rank}.json', 'w'))")
    assert launched.wait(timeout=60) == 0
    envs = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(3)]
    assert [detect(env).rank for env in envs] == [0, 1, 2]
    for env in envs:
        found = detect(env)
        assert (found.source, found.world_size, found.local_world_size, found.num_nodes) == ("larsbench", 3, 3, 1)
        assert found.master_addr == "127.0.0.1" and found.master_port == int(envs[0]["MASTER_PORT"]) > 0
        assert found.local_rank == found.rank


def test_a_failing_rank_stops_the_others_and_its_status_is_the_runs(tmp_path):
    # rank 1 fails once the others listen for SIGTERM; they would sleep for a minute
    program = (
        "signal.signal(signal.SIGTERM, lambda *a: (open(f'{out}/{rank}.term', 'w').close(), os._exit(143)))\n"
        "open(f'{out}/{rank}.up', 'w').close()\n"
        "while rank == 1 and len(os.listdir(out)) < 3: time.sleep(0.01)\n"
        "sys.exit(7) if rank == 1 else time.sleep(60)"
    )
    launched = ranks(tmp_path, program)
    began = time.monotonic()
    assert launched.wait(timeout=60) == 7
    assert time.monotonic() - began < 30
    assert sorted(p.name for p in tmp_path.glob("*.term")) == ["0.term", "2.term"]
    assert all(process.poll() is not None for process in launched.processes)


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr("larsbench.suite.local_ranks.STOP_GRACE_SEC", 0.5)
    program = (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); open(f'{out}/{rank}.up', 'w').close()\n"
        "while rank == 0 and len(os.listdir(out)) < 2: time.sleep(0.01)\n"
        "sys.exit(3) if rank == 0 else time.sleep(60)"
    )
    launched = ranks(tmp_path, program, 2)
    assert launched.wait(timeout=60) == 3
    assert launched.processes[1].returncode == -9


def test_ranks_exiting_preempted_are_waited_for_not_stopped(tmp_path):
    # rank 0 exits preempted first; rank 1 is still saving its part and must be let finish
    program = f"time.sleep(0 if rank == 0 else 1.0); open(f'{{out}}/{{rank}}.done', 'w').close(); sys.exit({EXIT_PREEMPTED})"
    launched = ranks(tmp_path, program, 2)
    assert launched.wait(timeout=60) == EXIT_PREEMPTED
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["0.done", "1.done"]


def test_wait_times_out_and_kill_ends_every_rank(tmp_path):
    launched = ranks(tmp_path, "time.sleep(60)", 2)
    with pytest.raises(subprocess.TimeoutExpired):
        launched.wait(timeout=0.2)
    launched.kill()
    assert [process.returncode for process in launched.processes] == [-9, -9]

