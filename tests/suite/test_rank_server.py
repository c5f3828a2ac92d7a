"""Ranks forked from a rank server (suite.rank_server): each runs its module as ``python -m``
would, with exactly its own environment and output, its exit status reported as Popen reports
it; nothing one rank does reaches the next; a server that cannot serve leaves the ranks to start
as interpreters, and one that dies ends its ranks instead of leaving their launcher waiting."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from larsbench.core.phases import PRELOAD_ENV, preload_times
from larsbench.core.process import alive
from larsbench.suite import rank_server
from larsbench.suite.local_ranks import LocalRanks
from larsbench.suite.rank_server import RankServer, RankServerError, ServedProcess

pytestmark = pytest.mark.multiprocess

# Writes what a rank sees to the file named by its first argument, then exits with $CODE.
PROBE = """
import json, os, sys, time
report = {"argv": sys.argv[1:], "env": dict(os.environ), "name": __name__}
if os.environ.get("WITH_TORCH"):
    import torch
    report.update(dtype=str(torch.get_default_dtype()), seed=torch.initial_seed(), threads=torch.get_num_threads(),
                  grad=torch.is_grad_enabled(), planted=getattr(torch, "_planted_by_a_rank", None))
    if os.environ.get("MESS"):  # what a careless run might leave behind in its process
        torch.set_default_dtype(torch.float64); torch.manual_seed(5); torch.set_num_threads(3)
        torch.set_grad_enabled(False); torch._planted_by_a_rank = os.getpid()
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
if os.environ.get("RAISE"):
    raise ValueError("planted")
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(os.environ.get("CODE") and (int(os.environ["CODE"]) if os.environ["CODE"].isdigit() else os.environ["CODE"]))
"""


@pytest.fixture(autouse=True)
def no_servers_but_this_tests():
    """Servers another test of this process left (a launch in-process) are none of this test's."""
    rank_server.close_all()
    yield
    rank_server.close_all()


@pytest.fixture(scope="module")
def probe_env(tmp_path_factory):
    """An environment whose PYTHONPATH holds the probe module (``rank_probe``)."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "rank_probe.py").write_text(PROBE)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1", "PYTHONSAFEPATH": "1"}


@pytest.fixture(scope="module")
def light_server(probe_env):
    """A server that preloads nothing heavy: the protocol and the fork, quickly."""
    server = RankServer(probe_env, preload=("json",))
    yield server
    server.close()


PROBE_ARGV = [sys.executable, "-m", "rank_probe"]


def run_probe(server: RankServer, out_folder, env: dict, name: str = "report") -> tuple[int, dict, str]:
    out, log = out_folder / f"{name}.json", out_folder / f"{name}.log"
    with log.open("ab") as handle:
        process = server.spawn([*PROBE_ARGV, str(out), "second"], env, handle.fileno(), handle.fileno())
    code = process.wait(timeout=120)
    return code, json.loads(out.read_text()) if out.exists() else {}, log.read_text()


def test_a_served_rank_runs_its_module_with_exactly_its_environment_argv_and_output(light_server, probe_env, tmp_path):
    env = {**probe_env, "RANK": "1", "ONLY_HERE": "yes", "CODE": "4"}
    code, seen, log = run_probe(light_server, tmp_path, env)
    assert code == 4
    assert seen["argv"] == [str(tmp_path / "report.json"), "second"] and seen["name"] == "__main__"
    began, done = preload_times(seen["env"])
    assert done is not None and began <= done <= time.time()
    assert {k: v for k, v in seen["env"].items() if k != PRELOAD_ENV} == env  # not the server's: ONLY_HERE came with the request
    assert log.splitlines() == ["to stdout", "to stderr"]


@pytest.mark.parametrize(
    ("planted", "status", "said"),
    [({"CODE": "boom"}, 1, "boom"), ({"RAISE": "1"}, 1, "ValueError: planted"), ({"CODE": "0"}, 0, "to stderr")],
)
def test_a_served_rank_exits_as_an_interpreter_would(light_server, probe_env, tmp_path, planted, status, said):
    code, _, log = run_probe(light_server, tmp_path, {**probe_env, **planted})
    assert code == status
    assert log.strip().splitlines()[-1].endswith(said)


def test_a_rank_killed_outright_reports_the_signal_as_popen_does(light_server, probe_env, tmp_path):
    with (tmp_path / "log").open("ab") as handle:
        process = light_server.spawn([*PROBE_ARGV, str(tmp_path / "r.json")], {**probe_env, "SLEEP": "60"}, handle.fileno(), handle.fileno())
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_nothing_one_rank_does_reaches_the_next_and_a_rank_sees_what_a_fresh_interpreter_sees(probe_env, tmp_path):
    env = {**probe_env, "WITH_TORCH": "1"}
    server = RankServer(env, preload=("torch",))
    try:
        code, messy, _ = run_probe(server, tmp_path, {**env, "MESS": "1"}, "messy")
        assert code == 0
        code, served, _ = run_probe(server, tmp_path, env, "served")
        assert code == 0
    finally:
        server.close()
    out = tmp_path / "fresh.json"
    subprocess.run([*PROBE_ARGV, str(out)], env=env, check=True, capture_output=True, timeout=120)
    fresh = json.loads(out.read_text())
    keys = ("dtype", "threads", "grad", "planted")
    assert [served[k] for k in keys] == [fresh[k] for k in keys] == ["torch.float32", 1, True, None]
    # torch's default generator is seeded from entropy in every process, as in a fresh interpreter
    assert len({messy["seed"], served["seed"], fresh["seed"], 5}) == 4


def test_a_server_that_cannot_import_leaves_the_ranks_to_start_as_interpreters(probe_env, tmp_path, monkeypatch):
    (tmp_path / "broken_preload.py").write_text("raise ImportError('planted')\n")
    env = {**probe_env, "PYTHONPATH": f"{probe_env['PYTHONPATH']}:{tmp_path}"}
    server = RankServer(env, preload=("broken_preload",))
    with pytest.raises(RankServerError, match="planted"):
        server.spawn([*PROBE_ARGV, str(tmp_path / "x.json")], env, 1, 2)
    server.close()
    monkeypatch.setattr(rank_server, "PRELOAD", ("broken_preload",))
    launched = LocalRanks(2, [*PROBE_ARGV, str(tmp_path / "rank.json")], env, None, served=True)
    assert launched.wait(timeout=120) == 0
    assert all(isinstance(process, subprocess.Popen) for process in launched.processes)
    rank_server.close_all()


def test_a_server_that_dies_ends_its_ranks_and_their_launcher_sees_them_fail(probe_env, tmp_path, monkeypatch):
    monkeypatch.setattr(rank_server, "PRELOAD", ("json",))
    try:
        launched = LocalRanks(2, [*PROBE_ARGV, str(tmp_path / "rank.json")], {**probe_env, "SLEEP": "60"}, None, served=True)
        assert all(isinstance(process, ServedProcess) for process in launched.processes)
        [server] = rank_server._servers.values()
        server.process.kill()
        began = time.monotonic()
        assert launched.wait(timeout=60) == -signal.SIGKILL
        assert time.monotonic() - began < 30
        deadline = time.monotonic() + 30
        while any(alive(process.pid) for process in launched.processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(process.pid) for process in launched.processes)
    finally:
        rank_server.close_all()


def test_one_server_per_environment_launch_variables_aside(probe_env, monkeypatch):
    monkeypatch.setattr(rank_server, "PRELOAD", ())
    try:
        first = rank_server.server_for({**probe_env, "RANK": "0", "MASTER_PORT": "1234"})
        assert rank_server.server_for({**probe_env, "RANK": "1", "MASTER_PORT": "999"}) is first
        assert "RANK" not in first.env and first.env == probe_env
        other = rank_server.server_for({**probe_env, "OMP_NUM_THREADS": "2"})
        assert other is not first
        third = rank_server.server_for({**probe_env, "OMP_NUM_THREADS": "3"})  # at most MAX_SERVERS: the oldest goes
        assert rank_server.MAX_SERVERS == 2 and first.process.poll() is not None  # closed: its process has exited
        assert rank_server.server_for({**probe_env, "OMP_NUM_THREADS": "2"}) is other and third.alive
    finally:
        rank_server.close_all()


def test_runs_forked_from_a_server_train_exactly_as_runs_of_fresh_interpreters(tmp_path):
    # one command, two runs of one shape (the server's first run and a later one), then the same
    # run with every rank a fresh interpreter: the same weights at the end, to the bit
    run = ["run", "--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--micro-batch", "8", "--steps", "6",
           "--synthetic-samples", "128", "--device", "cpu", "--world-size", "2", "--compute-probe-steps", "0", "--no-report",
           "--seed", "3", "--repeats", "2", "--hold-seed"]  # fmt: skip
    for folder, switch in (("served", "1"), ("fresh", "0")):
        done = subprocess.run([sys.executable, "-m", "larsbench", *run, "--output", str(tmp_path / folder)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore", rank_server.SWITCH_ENV: switch})  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    found = {folder: [json.loads(line) for line in (tmp_path / folder / "results.jsonl").read_text().splitlines()]
             for folder in ("served", "fresh")}  # fmt: skip
    assert [r["status"] for r in found["served"] + found["fresh"]] == ["ok"] * 4
    assert len({r["param_checksum"] for r in found["served"] + found["fresh"]}) == 1


def test_a_commands_servers_start_side_by_side_before_its_first_run(probe_env, monkeypatch, tmp_path):
    monkeypatch.setattr(rank_server, "PRELOAD", ())
    try:
        launches = [{**probe_env, "RANK": "0"}, {**probe_env, "RANK": "1"}, {**probe_env, "OMP_NUM_THREADS": "2"},
                    {**probe_env, "OMP_NUM_THREADS": "3"}]  # fmt: skip
        rank_server.start_servers(launches)
        servers = list(rank_server._servers.values())
        assert [server.env for server in servers] == [probe_env, {**probe_env, "OMP_NUM_THREADS": "2"}]  # the first two
        assert all(server._ready and server._ready["ready"] for server in servers)  # imports done before it returned
        monkeypatch.setattr(rank_server, "PRELOAD", ("no_such_module_anywhere",))
        rank_server.close_all()
        rank_server.start_servers([probe_env])  # a server that cannot import is left to its launch
        with pytest.raises(RankServerError, match="no_such_module_anywhere"):
            rank_server.server_for(probe_env).spawn([*PROBE_ARGV, str(tmp_path / "x.json")], probe_env, 1, 2)
    finally:
        rank_server.close_all()
