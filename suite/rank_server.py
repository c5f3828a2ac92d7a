"""Local CPU ranks forked from a process that has imported torch already.

A rank started as a fresh interpreter imports torch, torchvision and ``torch._dynamo`` (which
torchvision and the first optimizer pull in) before it does anything: 3–4 s per rank on a
2-vCPU VM, paid again by every run of a grid (docs/performance.md). A rank server imports them
once; each rank is then a fork of it that takes the rank's environment, points its stdout and
stderr at the run's log and runs the rank's module as ``python -m`` would.

The server runs imports and nothing else: no tensor, no thread pool, no device. Every rank of
every run it serves is a fork of that same state, so a grid's later runs start as its first did;
nothing a run does reaches the server (docs/performance.md says why runs do not share processes).
What libraries read from the environment at import (``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY``
when libgomp loads, ``PYTHONHASHSEED``, torch's own switches) comes from the server's, so a
server serves only ranks whose environment, the variables each launch sets apart
(``LAUNCH_KEYS``), is the one it started with: ``server_for`` starts another where it differs.

Not served: CUDA runs (a driver initialised before a fork cannot be used after it, and what
torch's imports touch is not this module's to guarantee), and any launch while
``LARSBENCH_RANK_SERVER=0``, which starts every rank as a fresh interpreter.

The launcher and its server speak over a ``SOCK_SEQPACKET`` socket pair, one JSON message each:
a request carries the rank's argv and environment and, as ancillary data, its stdout and stderr;
the server answers with the rank's pid, and with its exit status when it has reaped it. The
server ends when its launcher closes the socket or exits; a launcher whose server goes away first
stops the ranks it can no longer hear from.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from larsbench.core.phases import LAUNCH_TIME_ENV, PRELOAD_ENV

SWITCH_ENV = "LARSBENCH_RANK_SERVER"  # "0": every local rank a fresh interpreter
# What a rank of any backend imports before its backend's own library (which stays the rank's:
# one backend's import side effects must not reach another backend's runs).
PRELOAD = ("torch", "torchvision", "torch._dynamo", "larsbench.suite.worker", "larsbench.suite.comm_worker")
LAUNCH_KEYS = frozenset(
    {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", LAUNCH_TIME_ENV, PRELOAD_ENV}
)
MAX_SERVERS = 2  # one per environment in use (1-rank and 2-rank runs differ in OMP_NUM_THREADS)
START_TIMEOUT_SEC = 300.0  # a cold server's imports on a loaded machine, with room to spare
_MESSAGE_BYTES = 1 << 20


class RankServerError(RuntimeError):
    """The server could not import its modules or went away: start the rank as an interpreter."""


class ServedProcess:
    """One rank forked by a server. Answers ``pid``, ``args``, ``returncode``, ``poll``,
    ``wait``, ``kill`` and ``send_signal`` as a ``subprocess.Popen`` does."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class RankServer:
    """A server process, started with ``env``, that forks ranks on request."""

    def __init__(self, env: Mapping[str, str], preload: Sequence[str] = PRELOAD) -> None:
        self.env = dict(env)
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "larsbench.suite.rank_server", str(theirs.fileno()), *preload], env=self.env,
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._ready: dict | None = None  # the server's first message
        self._started: dict[int, int | str] = {}  # request id -> pid, or why the fork failed
        self._processes: dict[int, ServedProcess] = {}
        self._early_exits: dict[int, int] = {}  # a rank reaped before its pid reached _processes
        self._gone = False
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read, name="rank-server", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._gone

    def wait_ready(self, timeout: float = START_TIMEOUT_SEC) -> dict:
        """The server's ready message once its imports are done. Raises RankServerError if
        they failed, took longer than ``timeout`` or the server went away."""
        with self._state:
            if not self._state.wait_for(lambda: self._ready is not None or self._gone, timeout):
                raise RankServerError(f"its imports took more than {timeout:.0f} s")
            if self._gone or not self._ready.get("ready"):
                raise RankServerError((self._ready or {}).get("error") or "the server exited")
            return self._ready

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int) -> ServedProcess:
        """Fork one rank running ``argv`` (``[python, "-m", module, *args]``) with exactly ``env``.
        Raises RankServerError if the server cannot."""
        if len(argv) < 3 or argv[1] != "-m":
            raise RankServerError(f"a rank server runs modules (python -m ...), not {list(argv[:2])}")
        ready = self.wait_ready()
        request_id = next(self._ids)
        preloaded = f"{ready['began']!r} {ready['done']!r}"
        message = json.dumps({"id": request_id, "argv": list(argv[1:]), "env": {**env, PRELOAD_ENV: preloaded}}).encode()
        try:
            with self._send_lock:
                socket.send_fds(self._socket, [message], [stdout, stderr])
        except OSError as exc:
            raise RankServerError(f"the server went away ({exc})") from None
        with self._state:
            if not self._state.wait_for(lambda: request_id in self._started or self._gone, START_TIMEOUT_SEC):
                raise RankServerError("the server did not answer")
            answer = self._started.pop(request_id, "the server exited")
            if isinstance(answer, str):
                raise RankServerError(answer)
            process = ServedProcess(answer, argv)
            self._processes[answer] = process
            if answer in self._early_exits:
                process._end(self._early_exits.pop(answer))
        return process

    def close(self) -> None:
        """Ends the server. Its ranks still running are stopped: nothing could report their end."""
        self.hang_up()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self._socket.close()

    def hang_up(self) -> None:
        """Tells the server to exit, without waiting for it."""
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read(self) -> None:
        while True:
            try:
                data = self._socket.recv(_MESSAGE_BYTES)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._state:
                if "exited" in message:
                    process = self._processes.pop(message["exited"], None)
                    if process is None:
                        self._early_exits[message["exited"]] = message["returncode"]
                    else:
                        process._end(message["returncode"])
                elif "id" in message:
                    self._started[message["id"]] = message.get("pid") or message.get("error", "fork failed")
                else:
                    self._ready = message
                self._state.notify_all()
        with self._state:
            self._gone = True
            # Ranks the server can no longer reap or report on: stopped, so that the launcher
            # sees them fail instead of waiting on them for ever.
            for process in self._processes.values():
                process.kill()
                process._end(-signal.SIGKILL)
            self._processes.clear()
            self._state.notify_all()


_servers: OrderedDict[frozenset, RankServer] = OrderedDict()
_servers_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1") != "0"


def _own(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in LAUNCH_KEYS}


def start_servers(envs: Sequence[Mapping[str, str]]) -> None:
    """Starts the servers for the first ``MAX_SERVERS`` distinct environments of ``envs`` (the
    launches a command will make, in order) side by side, and waits until their imports are done:
    before a command's first run, where no run's window can feel them. A server that fails is
    left to its launch, which then starts its ranks as interpreters."""
    distinct = list({frozenset(_own(env).items()): env for env in envs}.values())[:MAX_SERVERS]
    servers = [server_for(env) for env in distinct]
    for server in servers:
        try:
            server.wait_ready()
        except RankServerError:
            pass


def server_for(env: Mapping[str, str]) -> RankServer:
    """The server for ranks with environment ``env`` (the variables in ``LAUNCH_KEYS`` aside),
    started on first use; at most ``MAX_SERVERS`` are kept, the least recently used ended."""
    own = _own(env)
    key = frozenset(own.items())
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.alive:
            _servers.move_to_end(key)
            return server
        if server is not None:
            _servers.pop(key).close()
        while len(_servers) >= MAX_SERVERS:
            _servers.popitem(last=False)[1].close()
        server = _servers[key] = RankServer(own, PRELOAD)
        return server


@atexit.register
def close_all() -> None:
    with _servers_lock:
        for server in _servers.values():
            server.hang_up()  # all at once, then each waited for
        while _servers:
            _servers.popitem()[1].close()


# ---- the server process ------------------------------------------------------------------


def serve(channel: socket.socket, preload: Sequence[str]) -> int:
    # Ctrl-C in a terminal reaches the whole process group: it is for the ranks and their
    # launcher, and the server ends when the launcher does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    began = time.time()
    try:
        for name in preload:
            importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - told to the launcher, which starts its ranks itself
        _send(channel, {"ready": False, "error": f"importing failed: {exc!r}"})
        return 1
    _send(channel, {"ready": True, "began": began, "done": time.time()})
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is not None:  # a rank's pidfd: it has exited
                selector.unregister(key.fileobj)
                os.close(key.fd)
                _, status = os.waitpid(key.data, 0)
                _send(channel, {"exited": key.data, "returncode": os.waitstatus_to_exitcode(status)})
                continue
            try:
                data, fds, _, _ = socket.recv_fds(channel, _MESSAGE_BYTES, 2)
            except OSError:
                data, fds = b"", []
            if not data:
                return 0  # the launcher is gone
            request = json.loads(data)
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                _send(channel, {"id": request["id"], "error": f"fork failed: {exc.strerror or exc}"})
                continue
            if pid == 0:
                try:  # the fork must never return to this loop
                    for other in {channel.fileno(), selector.fileno(), *(k.fd for k in selector.get_map().values())} - set(fds):
                        os.close(other)
                    _become_rank(request["argv"], request["env"], fds)
                finally:
                    os._exit(1)
            for fd in fds:
                os.close(fd)
            selector.register(os.pidfd_open(pid), selectors.EVENT_READ, pid)
            _send(channel, {"id": request["id"], "pid": pid})


def _send(channel: socket.socket, message: dict) -> None:
    try:
        channel.send(json.dumps(message).encode())
    except OSError:
        pass  # the launcher is gone; the next read ends the server


def _become_rank(argv: list[str], env: dict[str, str], fds: list[int]) -> None:
    """In the fork: run ``python -m MODULE ARGS`` (``argv``: ``["-m", MODULE, *ARGS]``) as a
    fresh interpreter would, and exit with its status. Never returns."""
    code = 1
    try:
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in set(fds):
            if fd not in (1, 2):
                os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(env)
        _reseed()
        module = argv[1]
        sys.argv = [module, *argv[2:]]  # runpy puts the module's file first, as -m does
        sys.modules.pop(module, None)  # preloaded: run afresh as __main__, as -m runs it
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_status(exc.code)
        except BaseException:  # noqa: BLE001 - printed and exited with, as the interpreter does
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, then atexit: an interpreter's exit
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        os._exit(code)


def _reseed() -> None:
    """Generators an interpreter seeds from entropy at its start, seeded afresh: without this
    every fork would draw what the server would have drawn (``random`` reseeds itself in a fork;
    ``PYTHONHASHSEED``'s string hashing stays the server's, the same in every rank)."""
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    status = serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2:])
    os._exit(status)  # nothing to flush or free: unloading torch would only keep the launcher waiting
