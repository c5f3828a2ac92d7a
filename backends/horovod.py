"""Horovod: ``hvd.DistributedOptimizer`` around the workload's optimizer, gloo on CPU and NCCL
on GPU. Its ranks are started as every backend's are, by larsbench locally and by ``srun`` on
Slurm (no horovodrun, no MPI, no ssh: rank 0 serves the rendezvous, ``_gloo_rendezvous``);
ranks a user starts with ``horovodrun`` themselves use horovodrun's.

Accumulation: ``backward_passes_per_step`` = accumulation steps, so Horovod all-reduces each
gradient once, on the last micro-batch; the loss is divided by the accumulation count (the
base class's ``backward``) and Horovod averages over ranks, giving the mean gradient of the
global batch, as DDP does.

Mixed precision (fp16): Horovod all-reduces gradients asynchronously and ``step`` normally
waits for them itself, so the scaler needs the documented pattern
(``DistributedOptimizer.skip_synchronize``): ``synchronize()`` first, then unscale the reduced
gradients, then ``scaler.step`` inside ``skip_synchronize()`` so the step does not wait twice.

Waiting: Horovod's ``synchronize`` waits for a collective by spinning (``std::this_thread::yield``
in a loop, Horovod 0.28.1), which keeps one core busy while its background thread does the
work. A node with cores to spare pays nothing for it; a node held to less than one CPU (the
local N-node Slurm's cgroup quota) spends its quota on the spin and its background thread waits
for the next quota period at every message, so collectives take tens of milliseconds where they
take one. ``LARSBENCH_HOROVOD_WAIT=sleep`` waits by polling every ``SLEEP_POLL_SEC`` instead: the
spare core's effect on such a node. Default ``spin``: Horovod as it comes. The variable is
recorded with the run's environment.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import torch

from larsbench.backends.base import Backend
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError

INSTALL_HINT = "bash .ci/install_horovod.sh .venv/bin/python (Horovod 0.28.1 builds from source; see README)"
WAIT_VARIABLE, WAITS = "LARSBENCH_HOROVOD_WAIT", ("spin", "sleep")
SLEEP_POLL_SEC = 0.0002


class HorovodBackend(Backend):
    name = "horovod"
    requires = ("horovod.torch", INSTALL_HINT)

    @classmethod
    def check_precision(cls, precision, channels_last, device, options):
        super().check_precision(precision, channels_last, device, options)
        if channels_last:
            raise ConfigError(
                "channels_last",
                "Horovod all-reduces and broadcasts only contiguous tensors, and channels_last weights and "
                "gradients are not; drop channels_last with horovod (ddp and deepspeed take it)",
            )

    @classmethod
    def host_staged_on_cuda(cls) -> str | None:
        import horovod.torch as hvd

        if hvd.nccl_built():
            return None
        return "this Horovod was built without NCCL: its CUDA gradients would go through host memory and gloo"

    @classmethod
    def versions(cls) -> dict[str, str]:
        import horovod

        return {**super().versions(), "horovod": horovod.__version__}

    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        self.wait = os.environ.get(WAIT_VARIABLE, "spin")
        if self.wait not in WAITS:
            raise ConfigError(WAIT_VARIABLE, f"{self.wait!r}: use spin (Horovod's own wait, the default) or sleep (poll every {SLEEP_POLL_SEC * 1e3:g} ms)")
        # Horovod reads its timeouts from the environment at init.
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(int(timeout_sec)))
        import horovod.torch as hvd

        self.hvd = hvd
        self.env, self.device = env, device
        self.comm_timer.cuda = device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if env.source in ("slurm", "larsbench"):  # no horovodrun set the ranks up
            self._rendezvous = _gloo_rendezvous(env, timeout_sec)
        hvd.init()
        if (hvd.rank(), hvd.size()) != (env.rank, env.world_size):
            raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()}, the environment {env.rank}/{env.world_size}")

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None, sharding="none"):
        hvd = self.hvd
        self.accumulation_steps, self.precision = accumulation_steps, precision or self.precision
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # Horovod rebuilds the optimizer from its param_groups: LARS keeps every
        # hyperparameter there for this reason.
        distributed = hvd.DistributedOptimizer(
            optimizer,
            named_parameters=model.named_parameters(),
            backward_passes_per_step=accumulation_steps,
            op=hvd.Average,
        )
        # Each gradient's all-reduce is launched from Horovod's own hook: mark it there.
        launch = distributed._allreduce_grad_async
        timer = self.comm_timer

        def timed_launch(p):
            timer.launched(p.grad.numel() * p.grad.element_size() if p.grad is not None else p.numel() * p.element_size())
            return launch(p)

        distributed._allreduce_grad_async = timed_launch
        # broadcast_optimizer_state would initialise an empty state by taking a real step with
        # zero gradients, which moves the weights wherever weight decay is non-zero. A fresh
        # optimizer is identical on every rank already; only a restored one needs the broadcast.
        if distributed.state_dict()["state"]:
            hvd.broadcast_optimizer_state(distributed, root_rank=0)
        return model, distributed

    def step(self, optimizer) -> None:
        # Horovod's documented pattern: wait for the all-reduces, then step without waiting twice.
        if self.wait == "sleep":  # synchronize() then finds them done and does not spin
            # _handles: Horovod's own map (0.28.1) of parameter or group to (handle, context)
            self._sleep_until_done([handle for handle, _ in optimizer._handles.values() if handle is not None])
        optimizer.synchronize()  # the gradients are final now
        self.comm_timer.finished()
        scaler = self.precision.scaler
        with optimizer.skip_synchronize():
            if scaler is None:
                optimizer.step()
            else:
                scaler.unscale_(optimizer)  # true gradients for LARS's norms
                scaler.step(optimizer)  # skipped when the gradients hold inf/NaN
                scaler.update()
        optimizer.zero_grad()  # Horovod's override takes no set_to_none (None is torch's default)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op not in ("sum", "mean"):
            raise ValueError(f"unsupported reduction {op!r}")
        op = self.hvd.Sum if op == "sum" else self.hvd.Average
        if self.wait == "spin":
            return self.hvd.allreduce_(tensor, op=op)
        return self._sleep_then_synchronize(self.hvd.allreduce_async_(tensor, op=op))

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.wait == "spin":
            return self.hvd.broadcast_(tensor, root_rank=src)
        return self._sleep_then_synchronize(self.hvd.broadcast_async_(tensor, root_rank=src))

    def all_gather(self, tensor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # Horovod's allgather allocates its own output: ``out`` cannot be filled without a copy.
        if self.wait == "spin":
            return self.hvd.allgather(tensor)
        return self._sleep_then_synchronize(self.hvd.allgather_async(tensor))

    def _sleep_until_done(self, handles: list[int]) -> None:
        for handle in handles:
            while not self.hvd.poll(handle):
                time.sleep(SLEEP_POLL_SEC)

    def _sleep_then_synchronize(self, handle: int) -> torch.Tensor:
        self._sleep_until_done([handle])
        return self.hvd.synchronize(handle)  # done: returns the output without spinning

    def transport(self) -> dict[str, Any]:
        hvd = self.hvd
        built = {"nccl": hvd.nccl_built(), "gloo": hvd.gloo_built(), "mpi": hvd.mpi_built(), "cuda": hvd.cuda_built()}
        # CUDA tensors go through NCCL when it is built in; otherwise Horovod stages them through
        # host memory and its CPU operations (gloo here).
        if self.device.type == "cuda":
            collectives = "nccl" if built["nccl"] else "gloo (CUDA tensors through host memory)"
        else:
            collectives = "mpi" if hvd.mpi_enabled() else "gloo"
        return {"library": "horovod", "collectives": collectives, "built": built}

    def barrier(self) -> None:
        self.hvd.barrier()

    def teardown(self) -> None:
        if getattr(self, "hvd", None) is not None and self.hvd.is_initialized():
            self.hvd.shutdown()
        if getattr(self, "_rendezvous", None) is not None:
            self._rendezvous.shutdown()
            self._rendezvous.server_close()
            self._rendezvous = None


def _gloo_rendezvous(env: ClusterEnvironment, timeout_sec: float):
    """Do for ranks started by srun or by larsbench what ``horovodrun --gloo`` does for its own
    (``horovod/runner/gloo_run.py``): rank 0 serves the HTTP rendezvous that Horovod's gloo
    controller joins, on ``env.master_port`` (under srun derived from the job id, locally the
    free port larsbench picked: the other ranks know it without being told), and every rank
    gets the ``HOROVOD_*`` variables horovodrun would have set, from the ClusterEnvironment.
    Returns rank 0's server (None elsewhere); ``teardown`` stops it. Locally this saves
    horovodrun's own interpreter, which imported Horovod's launcher before any rank started
    (docs/performance.md).

    Assumes the same number of ranks on every node (what ``larsbench slurm`` asks for with
    ``--ntasks-per-node``): the cross-node communicator of local rank r has one member per node.
    """
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    if env.world_size != env.num_nodes * env.local_world_size:
        raise RuntimeError(
            f"Horovod without horovodrun needs the same number of ranks on every node; got {env.world_size} ranks "
            f"on {env.num_nodes} node(s) with {env.local_world_size} on this one (use --ntasks-per-node)"
        )
    address = socket.gethostbyname(env.master_addr)
    port = env.master_port
    # Scope names only: HOROVOD_HOSTNAME is the label of a node's local communicator.
    hostname = f"node{env.node_rank}"
    server = None
    if env.rank == 0:
        plan = get_host_assignments([HostInfo(f"node{n}", env.local_world_size) for n in range(env.num_nodes)], env.world_size)
        try:
            server = RendezvousHTTPServer(("", port), RendezvousHandler, False)
        except OSError as exc:
            raise RuntimeError(f"Horovod rendezvous: cannot listen on port {port} (MASTER_PORT, or derived from the job id): {exc}") from None
        server.init(plan)
        # serve_forever notices teardown's shutdown() only at its next poll (0.5 s by default,
        # which every run's exit waited for); a tenth of a second costs nothing in between.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="horovod-rendezvous", daemon=True).start()
    else:
        _wait_for_port(address, port, timeout_sec)
    os.environ.update(
        HOROVOD_RANK=str(env.rank),
        HOROVOD_SIZE=str(env.world_size),
        HOROVOD_LOCAL_RANK=str(env.local_rank),
        HOROVOD_LOCAL_SIZE=str(env.local_world_size),
        HOROVOD_CROSS_RANK=str(env.node_rank),
        HOROVOD_CROSS_SIZE=str(env.num_nodes),
        HOROVOD_HOSTNAME=hostname,
        HOROVOD_GLOO_RENDEZVOUS_ADDR=address,
        HOROVOD_GLOO_RENDEZVOUS_PORT=str(port),
        HOROVOD_CONTROLLER="gloo",
        HOROVOD_CPU_OPERATIONS="gloo",
    )
    # The interface gloo binds to: the one this node reaches rank 0 through (a user's own
    # HOROVOD_GLOO_IFACE wins, as with horovodrun --network-interface).
    os.environ.setdefault("HOROVOD_GLOO_IFACE", _interface_towards(address))
    return server


def _wait_for_port(address: str, port: int, timeout_sec: float) -> None:
    """Horovod's gloo client gives up after a few quick retries; rank 0 may still be importing."""
    deadline = time.monotonic() + timeout_sec
    while True:
        try:
            with socket.create_connection((address, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Horovod rendezvous at {address}:{port} (rank 0) not reachable after {timeout_sec:.0f} s: {exc}") from None
            time.sleep(0.2)


def _interface_towards(address: str) -> str:
    import psutil

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))  # UDP: picks the route, sends nothing
        local = probe.getsockname()[0]
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local for a in addresses):
            return name
    raise RuntimeError(f"no network interface holds {local}, the address that reaches {address}; set HOROVOD_GLOO_IFACE")
