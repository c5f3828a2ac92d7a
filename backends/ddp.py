"""Native PyTorch DistributedDataParallel: gloo on CPU, NCCL on GPU; the ranks are started
by larsbench on one machine (``suite.local_ranks``, torchrun's variables) and by srun on Slurm.

``backend_config`` holds ``DistributedDataParallel`` keyword arguments (``bucket_cap_mb``, ...)
and, optionally, ``comm_hook``: ``"module:function"`` of a DDP communication hook
(``torch.distributed.algorithms.ddp_comm_hooks.default_hooks:fp16_compress_hook`` compresses
gradients to fp16 on the wire), registered on the wrapped model.

Without ``comm_hook`` no communication hook is registered: DDP's built-in path, whose all-reduce
never leaves C++ and which divides each gradient by the world size as it copies it into its
bucket. A Python hook on every bucket (DDP hands each bucket's future back to Python) cost about
3% of a ResNet-50 step on 2 CPU ranks whatever the hook did. The step split still needs when
each bucket's all-reduce was launched (``comm_timing``): DDP launches bucket b, in bucket order,
once the last of its gradients has been accumulated, so a post-accumulate-grad hook on every
parameter marks each gradient and, after backward, bucket b counts as launched at the last mark
among the members of buckets 0..b (``_BucketMarks``). With ``comm_hook`` the user's hook runs
wrapped in one that marks each bucket as DDP hands it over.

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
import itertools
import weakref
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from larsbench.backends.base import Backend
from larsbench.backends.comm_timing import CommTimer
from larsbench.core.clock import Mark, mark
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError
from larsbench.core.shards import Piece, ShardLayout


class DDPBackend(Backend):
    name = "ddp"
    _sync = True
    _bucket_marks: _BucketMarks | None = None

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
    def check_sharding(cls, sharding: str, channels_last: bool = False) -> None:
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
        # A user's hook replaces DDP's reduction whole: it divides by the world size itself (as
        # torch's allreduce_hook does), and the wrapper around it marks each bucket. Without one,
        # DDP's own path divides as it fills its buckets and the gradients are marked instead.
        if "comm_hook" in self.options:
            wrapped.register_comm_hook(state=None, hook=self._timed(_resolve_hook(self.options["comm_hook"])))
            self._bucket_marks = None
        else:
            self._bucket_marks = _BucketMarks(wrapped, self)
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
        super().backward(loss)
        if self._sync:  # DDP's backward returns once every bucket's reduction has finished
            self.comm_timer.finished()
            # After the done mark: reading the gradients' marks is bookkeeping, not waiting.
            if self._bucket_marks is not None:
                self._bucket_marks.report(self.comm_timer)


class _BucketMarks:
    """When DDP launched each bucket's all-reduce, from marks on the gradients, with no
    communication hook.

    A post-accumulate-grad hook on every parameter DDP reduces marks, on the micro-batch that
    synchronises only, when that parameter's gradient was accumulated, and numbers the calls.
    DDP's own autograd hook for the same gradient runs right after it and launches a bucket's
    all-reduce once all of that bucket's gradients are in and every earlier bucket has been
    launched, so bucket b went out at the mark of the member of buckets 0..b called last. The
    call numbers, not the marks, say which came last: on CUDA the marks are events, readable
    only after the step.

    Buckets and their sizes come from DDP's logging data once it reports its rebuilt buckets
    (rebuilt before the second iteration's forward in the order the first iteration's gradients
    were ready, reported from the next synchronising forward on). Until then the gradients count
    as one message from the first gradient to the last.
    """

    # DDP refreshes its logging data on iterations 1 to 10 only (then every 100th): a rebuild
    # not reported by then is not coming (find_unused_parameters never rebuilds).
    LOOKS = 10

    def __init__(self, wrapped: DistributedDataParallel, backend: DDPBackend) -> None:
        # Weak: the backend outlives the model, and a reducer still alive when the process group
        # is destroyed can abort the process at exit (suite.worker frees the model first).
        self.wrapped, self.backend = weakref.ref(wrapped), backend
        # The reducer's own parameter list (trainable, not ignored, shared ones once, in
        # model.parameters() order): DDP's bucket indices index this list.
        params = wrapped._build_params_for_reducer()[0]
        self.marks: list[Mark | None] = [None] * len(params)
        self.calls: list[int] = [-1] * len(params)  # call number of each parameter's last mark
        self.counter = itertools.count()
        self.before = -1  # call numbers up to this one belong to earlier steps
        self.buckets: list[tuple[list[int], int]] | None = None  # (members, bytes) in launch order
        self.looks = 0
        sizes = wrapped._get_ddp_logging_data().get("bucket_sizes")
        self.total = sum(_numbers(sizes)) if sizes else sum(p.numel() * p.element_size() for p in params)
        for index, param in enumerate(params):
            param.register_post_accumulate_grad_hook(self._hook(index))

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        backend, marks, calls, counter = self.backend, self.marks, self.calls, self.counter
        cuda = backend.comm_timer.cuda  # set by setup, before wrap

        def accumulated(_param: torch.Tensor) -> None:
            if backend._sync:  # a no_sync micro-batch launches nothing
                marks[index] = mark(cuda)
                calls[index] = next(counter)

        return accumulated

    def _rebuilt(self) -> list[tuple[list[int], int]] | None:
        self.looks += 1
        wrapped = self.wrapped()
        data = wrapped._get_ddp_logging_data() if wrapped is not None else {}
        if data.get("has_rebuilt_buckets") != 1:
            return None
        members = [[int(i) for i in bucket.split()] for bucket in data["rebuilt_per_bucket_param_indices"].split(",")]
        return list(zip(members, _numbers(data["rebuilt_bucket_sizes"])))

    def report(self, timer: CommTimer) -> None:
        """Hand ``timer`` this step's bucket launches, in order."""
        before, self.before = self.before, next(self.counter)
        calls, marks = self.calls, self.marks
        if self.buckets is None and self.looks < self.LOOKS:
            self.buckets = self._rebuilt()
        fired = [i for i, call in enumerate(calls) if call > before]
        if not fired:
            return
        earliest = min(fired, key=calls.__getitem__)
        if self.buckets is None:
            timer.launched_at(marks[max(fired, key=calls.__getitem__)], self.total, first=marks[earliest])
            return
        last = before
        # Buckets ahead of every gradient of this step (all unused: DDP marks those ready at the
        # end of forward) count as launched with the first gradient, the earliest mark there is.
        when = marks[earliest]
        for members, nbytes in self.buckets:
            for i in members:
                if calls[i] > last:
                    last, when = calls[i], marks[i]
            timer.launched_at(when, nbytes)


def _numbers(joined: str) -> list[int]:
    """DDP's ", "-joined integers."""
    return [int(n) for n in joined.split(",")]


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
