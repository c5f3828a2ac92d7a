"""Native PyTorch DistributedDataParallel: gloo on CPU, NCCL on GPU, started by torchrun.

``backend_config`` holds ``DistributedDataParallel`` keyword arguments (``bucket_cap_mb``, ...)
and, optionally, ``comm_hook``: ``"module:function"`` of a DDP communication hook
(``torch.distributed.algorithms.ddp_comm_hooks.default_hooks:fp16_compress_hook`` compresses
gradients to fp16 on the wire), registered on the wrapped model.

``optimizer_sharding: zero1`` steps the workload's optimizer through torch's
``ZeroRedundancyOptimizer``: gradients are still all-reduced whole by DDP, each rank keeps the
optimizer state of, and updates, only the whole parameters assigned to it, then every rank
broadcasts its updated parameters (timed as a collective the step waits on). A layer-wise
optimizer gets the layout of its parameters and reduces their norms over the ranks, so its
telemetry holds every layer. There is no ZeRO-2 here (DDP reduces whole gradients).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from larsbench.backends.base import Backend
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError
from larsbench.core.shards import Piece, ShardLayout


class DDPBackend(Backend):
    name = "ddp"
    # torchrun's agent notices a finished rank within its monitor interval, then shuts its
    # rendezvous down and unloads torch: 0.5 s after a finished rank here.
    launcher_stops_after_ranks = True
    _sync = True
    _loss_divisor = 1

    @classmethod
    def local_launch_command(cls, nprocs: int, worker: list[str]) -> list[str]:
        python, dash_m, module, *args = worker
        assert dash_m == "-m", worker
        # --standalone: a private rendezvous on a free local port, no port to pick or collide.
        return [
            python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={nprocs}", "--module", module, *args,
        ]

    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        self._init_torch_distributed(env, device, timeout_sec)

    @classmethod
    def check_options(cls, options, optimizer):
        accepted = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {"self", "module", "device_ids", "output_device", "process_group"}
        for key in options:
            if key == "comm_hook":
                _resolve_hook(options[key])
            elif key not in accepted:
                raise ConfigError(f"backend_config.{key}", f"not a DistributedDataParallel argument; valid: comm_hook, {', '.join(sorted(accepted))}")

    @classmethod
    def check_sharding(cls, sharding: str) -> None:
        if sharding == "zero2":
            raise ConfigError(
                "optimizer_sharding",
                "ddp shards optimizer state with torch's ZeroRedundancyOptimizer, which is ZeRO-1 (DDP all-reduces "
                "whole gradients); use zero1 with ddp, or zero2 with deepspeed",
            )

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None, sharding="none"):
        # fp16: the base class scales the loss, and unscales the all-reduced gradients
        # before the optimizer step (GradScaler's unscale_/step/update).
        self.accumulation_steps, self.precision = accumulation_steps, precision or self.precision
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        options = {k: v for k, v in self.options.items() if k != "comm_hook"}
        # DDP broadcasts rank 0's parameters and buffers at construction: identical start.
        wrapped = DistributedDataParallel(model, device_ids=device_ids, **options)
        # Every bucket goes through a communication hook that marks when its gradients were handed
        # to the all-reduce. With no hook DDP divides each gradient by the world size as it copies
        # it into its bucket (one pass); with a hook it copies only, and torch's allreduce_hook
        # divides the bucket in a second pass over every gradient (2.6% slower steps on ResNet-50
        # here). So the user's hook runs as given, and without one the ranks' losses are divided
        # by the world size instead (a scalar) and the hook sums: the same passes as DDP's own path.
        if "comm_hook" in self.options:
            hook, self._loss_divisor = _resolve_hook(self.options["comm_hook"]), 1
        else:
            hook, self._loss_divisor = _sum_allreduce, self.world_size
        wrapped.register_comm_hook(state=None, hook=self._timed(hook))
        if sharding == "zero1":
            optimizer = self._sharded(model, optimizer)
        return wrapped, optimizer

    def _sharded(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer rebuilt from its param groups as a ZeroRedundancyOptimizer (each rank's
        share of whole parameters in its own instance), with the broadcast of the updated
        parameters timed, and a layer-wise optimizer handed the layout of its share."""
        # Imported here: torch.distributed.optim takes about a second to import, in every DDP run.
        from torch.distributed.optim import ZeroRedundancyOptimizer

        zero = ZeroRedundancyOptimizer(optimizer.param_groups, optimizer_class=type(optimizer), **optimizer.defaults)
        zero._sync_params = self.comm_timer.waiting(zero._sync_params)
        if hasattr(zero.optim, "use_shards"):
            layers = tuple(p for p in model.parameters() if p.requires_grad)
            index = {id(p): i for i, p in enumerate(layers)}
            pieces = {id(p): (Piece(index[id(p)], 0, p.numel()),) for g in zero.optim.param_groups for p in g["params"]}
            reduce = self.comm_timer.waiting(lambda tensor: dist.all_reduce(tensor))
            zero.optim.use_shards(ShardLayout(layers, pieces, reduce, self.device))
        return zero

    def optimizer_state(self, optimizer):
        if type(optimizer).__name__ == "ZeroRedundancyOptimizer":  # _sharded's; its module is imported there
            return optimizer.optim, True  # this rank's parameters' state, in its own optimizer
        return optimizer, False

    def _timed(self, hook: Callable) -> Callable:
        timer = self.comm_timer

        def timed_hook(state, bucket):
            buffer = bucket.buffer()
            timer.launched(buffer.numel() * buffer.element_size())
            return hook(state, bucket)

        return timed_hook

    def accumulate(self, model, sync: bool) -> contextlib.AbstractContextManager:
        # Skipping the all-reduce on micro-batches that do not step: gradients accumulate
        # locally and the last micro-batch's backward reduces the sum once.
        self._sync = sync
        return contextlib.nullcontext() if sync else model.no_sync()

    def backward(self, loss) -> None:
        super().backward(loss / self._loss_divisor)
        if self._sync:  # DDP's backward returns once every bucket's reduction has finished
            self.comm_timer.finished()


def _sum_allreduce(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The bucket summed across ranks (the losses were divided by the world size already)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def _resolve_hook(target: object) -> Callable:
    """The function named by ``"module:function"`` (ConfigError naming the key otherwise)."""
    key = "backend_config.comm_hook"
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(key, f"must be 'module:function' naming a DDP communication hook (got {target!r})")
    module_name, _, name = target.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, f"cannot load {target} ({exc}); check the module path") from None
    if not callable(hook):
        raise ConfigError(key, f"{target} is not a function")
    return hook
