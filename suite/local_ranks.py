"""A local run's ranks, started the way srun starts them on a cluster: one process per rank with
torch.distributed's env:// variables, watched until they end.

DDP and DeepSpeed need nothing more on one machine; Horovod's rank 0 serves the rendezvous its
gloo ranks join, as under srun (``backends.horovod``). torchrun's elastic agent (restarts,
changing membership), DeepSpeed's per-node launcher and horovodrun set the same variables, but
each is one more interpreter that imports its library before the first rank starts: 1.5–2.5 s of
every local run on a 2-vCPU VM (docs/performance.md).

What those launchers do beyond that, this does too: a rank that fails stops the others
(SIGTERM, then SIGKILL after a grace period), so a dead rank ends the run instead of leaving
its peers in a collective until their timeout. Ranks that exit preempted are not stopped
early: their peers got the same signal and may still be writing their part of the checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import IO

from larsbench.backends.base import free_port
from larsbench.core.environment import LAUNCHER_ENV
from larsbench.core.preemption import EXIT_PREEMPTED
from larsbench.suite import rank_server

STOP_GRACE_SEC = 10.0  # after SIGTERM, before SIGKILL (a rank saying why it stopped, then exiting)


class LocalRanks:
    """``nprocs`` processes running ``worker``, ranks 0..nprocs-1 of one world on this machine.
    Answers ``poll``, ``wait`` and ``kill`` as a ``subprocess.Popen`` does. ``served``: fork the
    ranks from a rank server that has imported torch already (``suite.rank_server``; CPU runs
    only), unless ``LARSBENCH_RANK_SERVER=0``; a server that cannot serve leaves the ranks to
    start as interpreters."""

    def __init__(self, nprocs: int, worker: list[str], env: dict[str, str], output: IO | None, served: bool = False) -> None:
        shared = {
            **common_environment(env), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs),
        }  # fmt: skip
        self.returncode: int | None = None
        self.processes: list[subprocess.Popen | rank_server.ServedProcess] = []
        envs = [{**shared, "RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in range(nprocs)]
        try:
            if served and rank_server.enabled():
                try:
                    server = rank_server.server_for(shared)
                    for rank_env in envs:
                        self.processes.append(_served(server, worker, rank_env, output))
                    return
                except rank_server.RankServerError:
                    self.kill()  # the ranks of one run start alike
                    self.processes = []
            for rank_env in envs:
                self.processes.append(subprocess.Popen(
                    worker, env=rank_env, stdout=output, stderr=subprocess.STDOUT if output is not None else None,
                ))  # fmt: skip
        except BaseException:
            self.kill()
            raise

    def poll(self) -> int | None:
        """None while the ranks run; then the first failing rank's status, or 0. A failed rank
        stops the others before this returns."""
        if self.returncode is not None:
            return self.returncode
        codes = [process.poll() for process in self.processes]
        failed = [code for code in codes if code not in (None, 0, EXIT_PREEMPTED)]
        if failed:
            self._stop_the_rest()
            self.returncode = failed[0]
        elif all(code is not None for code in codes):
            self.returncode = next((code for code in codes if code != 0), 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired([str(p.args) for p in self.processes], timeout)
            time.sleep(0.02)
        return code

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()

    def _stop_the_rest(self) -> None:
        running = [process for process in self.processes if process.poll() is None]
        for process in running:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_SEC
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def common_environment(env: dict[str, str]) -> dict[str, str]:
    """What every rank of a launch with environment ``env`` gets, before the variables that name
    the launch and the rank."""
    return {
        **env, LAUNCHER_ENV: "larsbench",
        "PYTHONUNBUFFERED": "1",  # a rank killed outright still leaves all it printed in the log
    }  # fmt: skip


def start_servers(envs: list[dict[str, str]]) -> None:
    """Rank servers for launches with these environments, started side by side now, before any
    run (``rank_server.start_servers``); nothing with ``LARSBENCH_RANK_SERVER=0``."""
    if rank_server.enabled():
        rank_server.start_servers([common_environment(env) for env in envs])


def _served(server: rank_server.RankServer, worker: list[str], env: dict[str, str], output: IO | None) -> rank_server.ServedProcess:
    """One rank forked by ``server``, its stdout and stderr where a Popen'd rank's would go."""
    if output is None:
        return server.spawn(worker, env, 1, 2)
    return server.spawn(worker, env, output.fileno(), output.fileno())
