"""The backend interface: start, wrap, backward/step, reduce, stop.

A backend knows nothing about models, datasets, metrics or reports. The training loop calls
the same verbs for every backend and never branches on which one it has.

Contract for gradient accumulation, decided here once: the loop hands ``backward`` the mean
loss of one micro-batch, and after ``accumulation_steps`` calls the optimizer must see the mean
gradient over the whole global batch (all ranks, all micro-batches), reduced exactly once.
Each adapter does whatever its library needs to meet that (divide the loss, skip the
all-reduce on non-stepping micro-batches, tell an engine where the boundary is).

Mixed precision (``larsbench.core.precision.Precision``, handed to ``wrap``): ``backward`` multiplies
the loss by the fp16 loss scale, and ``step`` unscales the reduced gradients before the
optimizer runs, so LARS's trust ratios see the true gradient. A library with its own mixed
precision (DeepSpeed) keeps ``precision.engine_managed()`` instead and lets its engine do both.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.util
import os
import socket
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from larsbench.backends.comm_timing import CommTimer
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError
from larsbench.core.precision import DTYPES, Precision, autocast_supported, unsupported_message


class Backend(ABC):
    name: ClassVar[str]
    # (importable module, how to install it) for a library outside larsbench's own dependencies
    requires: ClassVar[tuple[str, str] | None] = None

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.env: ClusterEnvironment | None = None
        self.device: torch.device = torch.device("cpu")
        self.accumulation_steps = 1
        self.precision = Precision()  # fp32; wrap() sets the run's
        # Marks on the library's own gradient reductions, for the step split (comm_timing).
        self.comm_timer = CommTimer()

    @classmethod
    def check_available(cls) -> None:
        """Raise a one-line ConfigError, before any rank starts, when the library is missing."""
        if cls.requires is None:
            return
        module, install = cls.requires
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError("backend", f"the {cls.name} backend needs {module.split('.')[0]}, which is not installed; install it with: {install}")

    @classmethod
    def load(cls) -> None:
        """Import the backend's library now (a rank times it with its other imports, apart from
        the rendezvous); its methods import it again where they use it, at no cost."""
        if cls.requires is not None:
            importlib.import_module(cls.requires[0])

    @classmethod
    def check_options(cls, options: dict[str, Any], optimizer: str) -> None:
        """Validate a run's ``backend_config`` (raise ConfigError naming the key) before start."""
        if options:
            raise ConfigError("backend_config", f"the {cls.name} backend takes no backend_config; remove it")

    @classmethod
    def check_sharding(cls, sharding: str, channels_last: bool = False) -> None:
        """Refuse (one-line ConfigError naming ``optimizer_sharding``) a way of sharding the
        optimizer state this backend has not (``none``, ``zero1``, ``zero2``), or not with
        ``channels_last`` weights, before start."""
        if sharding != "none":
            raise ConfigError(
                "optimizer_sharding",
                f"the {cls.name} backend cannot shard optimizer state; use none with {cls.name}, "
                "or ddp (zero1) or deepspeed (zero1, zero2)",
            )

    @classmethod
    def check_precision(cls, precision: str, channels_last: bool, device: str, options: dict[str, Any]) -> None:
        """Refuse (one-line ConfigError naming the setting) a precision or memory layout this
        backend cannot run on ``device`` (``cpu``, ``cuda`` or ``auto``), before any rank starts.
        By default the loop's torch autocast does mixed precision: it must support the dtype."""
        if precision in DTYPES and device == "cpu" and not autocast_supported("cpu", DTYPES[precision]):
            raise ConfigError("precision", unsupported_message(precision, "cpu"))

    @classmethod
    def host_staged_on_cuda(cls) -> str | None:
        """Why this backend's CUDA gradients would travel through host memory (a build without a
        GPU transport), or None when they stay on the GPU's own transport (NCCL)."""
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the libraries this backend runs on, for provenance."""
        return {"torch": torch.__version__}

    # -- lifecycle ---------------------------------------------------------------------------
    @abstractmethod
    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        """Initialise communication for this rank."""

    def teardown(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    # -- model and optimizer ----------------------------------------------------------------
    @abstractmethod
    def wrap(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        micro_batch_size: int,
        accumulation_steps: int,
        precision: Precision | None = None,
        sharding: str = "none",
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Make model and optimizer distributed; identical initial weights on every rank.
        Keeps ``precision`` (default fp32) for ``backward`` and ``step``. ``sharding``
        (``check_sharding`` allowed it): partition the optimizer state over the ranks, and
        hand a layer-wise optimizer the ``ShardLayout`` of its pieces (``use_shards``)."""

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> tuple[Any, bool]:
        """What a checkpoint saves of the wrapped ``optimizer`` (``state_dict`` and
        ``load_state_dict``), and whether each rank holds its own shard of it (saved by every
        rank) rather than the whole state (saved by rank 0)."""
        return optimizer, False

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain module inside a wrapper (for evaluation without collectives), also
        inside ``torch.compile``'s wrapper: its state_dict has the plain module's keys."""
        model = getattr(model, "module", model)
        return getattr(model, "_orig_mod", model)

    def accumulate(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-batch's forward+backward; ``sync=False`` may skip reduction."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.scale(loss / self.accumulation_steps).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        # The gradients are reduced by now (DDP all-reduces during the last backward).
        self.precision.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    # -- collectives (metrics, and larsbench comm), through the library's own API -------------
    def collectives(self) -> Any:
        """The module whose ``all_reduce``, ``broadcast`` and ``all_gather_into_tensor`` (and
        ``ReduceOp``) this backend's collectives go through: ``torch.distributed`` here."""
        return dist

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` in place across ranks (``sum`` or ``mean``) and return it."""
        if op not in ("sum", "mean"):
            raise ValueError(f"unsupported reduction {op!r}")
        if self.world_size > 1:
            api = self.collectives()
            api.all_reduce(tensor, op=api.ReduceOp.SUM)
        if op == "mean":
            tensor /= self.world_size
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` on every rank with rank ``src``'s copy."""
        if self.world_size > 1:
            self.collectives().broadcast(tensor, src=src)
        return tensor

    def all_gather(self, tensor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every rank's ``tensor``, concatenated along the first dimension in rank order, written
        into ``out`` when given (a caller that repeats the collective allocates it once, so a
        timing of the collective leaves the allocation out) and returned."""
        if out is None:
            out = tensor.new_empty((self.world_size * tensor.shape[0], *tensor.shape[1:]))
        if self.world_size > 1:
            self.collectives().all_gather_into_tensor(out, tensor)
        else:
            out.copy_(tensor)
        return out

    def transport(self) -> dict[str, Any]:
        """How this backend's collectives really travel (for fairness between backends):
        ``collectives`` is the transport its gradient all-reduce uses on this run's device."""
        return {"library": "torch.distributed", "collectives": dist.get_backend() if dist.is_initialized() else None}

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.env else 1

    # -- shared helper for torch.distributed-based backends ----------------------------------
    def _init_torch_distributed(
        self, env: ClusterEnvironment, device: torch.device, timeout_sec: float
    ) -> None:
        self.env, self.device = env, device
        self.comm_timer.cuda = device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if dist.is_initialized():
            return
        # env:// rather than tcp://: under torchrun the agent already serves the store on
        # MASTER_PORT and workers must join it as clients; srun-started ranks get the same
        # variables from the ClusterEnvironment.
        # DeepSpeed's engine also reads LOCAL_RANK from the environment, which srun does not set.
        for key, value in (
            ("MASTER_ADDR", env.master_addr), ("MASTER_PORT", env.master_port), ("RANK", env.rank),
            ("WORLD_SIZE", env.world_size), ("LOCAL_RANK", env.local_rank), ("LOCAL_WORLD_SIZE", env.local_world_size),
        ):  # fmt: skip
            os.environ.setdefault(key, str(value))
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(seconds=timeout_sec),
        )


def free_port() -> int:
    """A TCP port free on this machine right now (for launchers that need one named)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
