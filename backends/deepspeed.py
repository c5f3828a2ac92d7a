"""DeepSpeed: ``deepspeed.initialize`` with the workload's optimizer as the client optimizer,
its ranks started by larsbench on one machine (``suite.local_ranks``: the variables DeepSpeed's
per-node launcher sets, without its extra interpreter) and by srun on Slurm.

Accumulation follows DeepSpeed's documented manual-boundary pattern: before each micro-batch
the engine is told whether it is the accumulation boundary; ``engine.backward`` divides the
loss by ``gradient_accumulation_steps`` itself (so the loop's mean micro-batch loss is passed
unscaled) and all-reduces only at the boundary; ``engine.step`` runs once per optimizer step.

Mixed precision is DeepSpeed's own, in its ``torch_autocast`` mode: ``precision: bf16`` /
``fp16`` becomes ``{"torch_autocast": {"enabled": true, "dtype": "bfloat16" / "float16"}}``;
the engine runs forward under ``torch.autocast`` and, for fp16 at ZeRO stage 0, scales the loss
in ``engine.backward`` and steps through its own ``torch.amp.GradScaler`` (whose ``step``
unscales the reduced gradients before the client optimizer runs: LARS sees true gradients).
larsbench adds no scaler of its own. DeepSpeed's ``bf16``/``fp16`` sections are not used: at
stage 0 with a client optimizer they wrap it in ``FP16_UnfusedOptimizer``, which (DeepSpeed
0.19.8) takes a real optimizer step with zero gradients at construction (LARS's weight decay
moves every weight before training starts) and, under fp16, divides gradients by a loss scale
``engine.backward`` never applied (deepspeedai/DeepSpeed PR #8393): updates ~65536× too small.

``optimizer_sharding: zero1`` / ``zero2`` runs ZeRO stage 1 / 2 (``zero_optimization.stage``
comes from that setting alone). Each parameter group is flattened into one buffer cut into
equal partitions across layer boundaries; the client optimizer steps this rank's fp32
partition (its ``param_groups`` hold one flat tensor per group). A layer-wise optimizer gets
the ``ShardLayout`` of the layer slices in its partitions, read from the fragment map DeepSpeed
keeps for its own universal checkpoints (each parameter's ``_hp_mapping``), and reduces its
layers' norms over the ranks. Timed for the step split: the gradient reduction in
``allreduce_gradients`` (``launched``/``finished``), ZeRO-2's bucket reductions made inside
backward, the all-gather of the updated partitions (DeepSpeed's own ``optimizer_allgather``
timer points) and the norm reduction (each ``waited``).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator
from typing import Any

import torch

from larsbench.backends.base import Backend
from larsbench.core.clock import mark
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError
from larsbench.core.precision import DTYPES
from larsbench.core.shards import Piece, ShardLayout

# Settings larsbench derives from the run; a user's deepspeed_config may not override them.
RUN_OWNED_KEYS = (
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer", "scheduler",
)  # fmt: skip


# optimizer_sharding → ZeRO stage
ZERO_STAGES = {"none": 0, "zero1": 1, "zero2": 2}


# What larsbench's precision becomes in the engine config (the engine's own autocast + scaler).
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
# A user's DeepSpeed config may not switch mixed precision on itself: the run's precision does.
PRECISION_KEYS = ("torch_autocast", "bf16", "fp16", "bfloat16", "amp")


def engine_config(
    micro_batch: int, accumulation: int, world_size: int, user_config: dict[str, Any] | None, precision: str = "fp32",
    sharding: str = "none", device_type: str = "cuda",
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # DeepSpeed clips gradients to global norm 1.0 unless told otherwise: that would make it
        # a different optimizer from the one the other backends run. Clipping is opt-in here.
        "gradient_clipping": 0.0,
        # DeepSpeed's own periodic logging and timers would add prints and synchronisation.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        **(user_config or {}),
    }
    config.update(
        train_micro_batch_size_per_gpu=micro_batch,
        gradient_accumulation_steps=accumulation,
        train_batch_size=micro_batch * accumulation * world_size,
        zero_optimization={**(config.get("zero_optimization") or {}), "stage": ZERO_STAGES[sharding]},
    )
    if ZERO_STAGES[sharding]:
        # DeepSpeed asks for this with any client optimizer under ZeRO; larsbench's optimizers
        # are checked to train identically sharded (tests/backends/test_sharding_integration.py).
        config["zero_allow_untested_optimizer"] = True
        if device_type == "cpu":
            # Over gloo, ZeRO's default gradient path ("reduce_scatter") is one reduce per
            # destination rank, one after the other; its all-reduce path moves the same bytes per
            # rank in one ring collective and then keeps this rank's partition (measured on 2 CPU
            # ranks, ResNet-50: 45 ms less per step). A user's own setting wins.
            config["zero_optimization"].setdefault("reduce_scatter", False)
    if precision in AUTOCAST_DTYPES:
        config["torch_autocast"] = {"enabled": True, "dtype": AUTOCAST_DTYPES[precision]}
    return config


def use_environment_extension_dir() -> str:
    """Point torch's JIT extension builds at a folder of this Python environment's own (unless
    ``TORCH_EXTENSIONS_DIR`` is set) and return it.

    torch keeps JIT-compiled ops in one folder per Python and CUDA version, named by the op
    alone, but each build compiles against the environment's own torch and DeepSpeed headers.
    Two environments on one machine (two checkouts' virtualenvs, a CI clone) therefore rebuilt
    DeepSpeed's CPU communication op over each other: 20 to 80 s on 2 cores each time a run
    followed one from the other environment, on a machine where it was built long before.
    """
    import hashlib
    import sys

    from torch.utils.cpp_extension import get_default_build_root

    if not os.environ.get("TORCH_EXTENSIONS_DIR"):
        tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
        python = f"py{sys.version_info.major}{sys.version_info.minor}"
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(get_default_build_root(), f"{python}-larsbench-{tag}")
    return os.environ["TORCH_EXTENSIONS_DIR"]


def skip_inference_all_reduce() -> None:
    """Keep ``deepspeed.init_distributed`` from loading and setting up DeepSpeed's CPU
    shared-memory all-reduce, which only its inference path calls (``inference_all_reduce``):
    training reduces through ``torch.distributed`` (gloo) either way. Loading it compiles a JIT
    op on a fresh machine (about a minute on 2 cores, which every new environment paid at
    install) and checks it on every start after (30 ms here), and setting it up maps a 66 MiB
    ``/dev/shm`` file per rank that DeepSpeed never removes (a full ``/dev/shm`` kills later runs
    with SIGBUS). DeepSpeed asks ``deepspeed.ops.__compatible_ops__`` whether the op may be built
    at all, and does without it where it may not."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


class DeepSpeedBackend(Backend):
    name = "deepspeed"
    requires = ("deepspeed", "pip install 'larsbench[deepspeed]'")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)  # a DeepSpeed config dict, merged into the generated one
        self.engine = None
        self._reducing = False  # inside the engine's allreduce_gradients

    @classmethod
    def check_options(cls, options: dict[str, Any], optimizer: str) -> None:
        for key in RUN_OWNED_KEYS:
            if key in options:
                raise ConfigError(f"backend_config.{key}", "larsbench sets this from the run's batch and optimizer settings; remove it")
        if "stage" in (options.get("zero_optimization") or {}):
            raise ConfigError(
                "backend_config.zero_optimization.stage",
                "larsbench sets ZeRO's stage from optimizer_sharding (none, zero1, zero2); remove it and set "
                "optimizer_sharding (ZeRO-3, which partitions the parameters too, is not supported)",
            )

    @classmethod
    def check_sharding(cls, sharding: str, channels_last: bool = False) -> None:
        if sharding not in ZERO_STAGES:
            raise ConfigError("optimizer_sharding", f"{sharding!r} is not one of {', '.join(ZERO_STAGES)}")
        if ZERO_STAGES[sharding] and channels_last:
            raise ConfigError(
                "optimizer_sharding",
                "DeepSpeed's ZeRO keeps every weight in its flat, contiguous partition buffers, so the weights cannot be "
                "channels_last; use optimizer_sharding none with channels_last, or drop channels_last",
            )

    @classmethod
    def check_precision(cls, precision, channels_last, device, options):
        for key in PRECISION_KEYS:
            if key in options:
                raise ConfigError(
                    f"backend_config.{key}",
                    "larsbench sets DeepSpeed's mixed precision from the run's precision (fp32, bf16, fp16); remove it",
                )
        super().check_precision(precision, channels_last, device, options)  # torch autocast, as the engine's
        if precision in DTYPES and device == "cpu":
            from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

            if DTYPES[precision] not in CPU_Accelerator().supported_dtypes():
                raise ConfigError("precision", f"DeepSpeed's CPU accelerator cannot run {precision} on this machine; use fp32 or bf16 with deepspeed on the CPU")

    @classmethod
    def versions(cls) -> dict[str, str]:
        import deepspeed

        return {**super().versions(), "deepspeed": deepspeed.__version__}

    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        import deepspeed

        use_environment_extension_dir()  # before DeepSpeed loads (or builds) an op
        if device.type == "cpu":
            skip_inference_all_reduce()
        self._init_torch_distributed(env, device, timeout_sec)
        # Adopts the process group created above instead of creating its own.
        deepspeed.init_distributed(
            dist_backend="nccl" if device.type == "cuda" else "gloo",
            auto_mpi_discovery=False,
            verbose=False,
            timeout=datetime.timedelta(seconds=timeout_sec),
            rank=env.rank,
            world_size=env.world_size,
        )

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None, sharding="none"):
        import deepspeed

        self.accumulation_steps = accumulation_steps
        self.precision = (precision or self.precision).engine_managed()  # the engine autocasts and scales
        config = engine_config(
            micro_batch_size, accumulation_steps, self.world_size, self.options, self.precision.name, sharding,
            self.device.type,
        )
        # initialize broadcasts each parameter viewed as bytes (``p.data.view(torch.uint8)`` in
        # the engine's _broadcast_model, DeepSpeed 0.19.8), which a channels_last weight is not
        # laid out for: the model goes in contiguous and back after. Module.to keeps the
        # Parameter objects, which the engine and the optimizer hold (check_sharding refuses
        # ZeRO here: it rebinds every weight into its flat buffers).
        channels_last = self.precision.channels_last
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        self.engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        if channels_last:
            self.engine.module.to(memory_format=torch.channels_last)
        self._time_reductions(self.engine)
        if ZERO_STAGES[sharding]:
            self._shard(self.engine, optimizer)
        return self.engine, ds_optimizer

    def _shard(self, engine, client: torch.optim.Optimizer) -> None:
        """Time ZeRO's own collectives, and hand a layer-wise client optimizer the layout of the
        layer slices in its flat partitions."""
        zero = engine.optimizer
        timer = self.comm_timer
        zero.timers = _AllGatherMarks(zero.timers, timer)
        reduce_buckets = zero.reduce_ipg_grads
        waiting = timer.waiting(reduce_buckets)

        def timed_buckets(*args, **kwargs):
            # Inside allreduce_gradients the reduction is timed already (launched/finished);
            # elsewhere (ZeRO-2's buckets during backward) the step waits on it whole.
            return (reduce_buckets if self._reducing else waiting)(*args, **kwargs)

        zero.reduce_ipg_grads = timed_buckets
        if hasattr(client, "use_shards"):
            client.use_shards(self._layout(engine))

    def _layout(self, engine) -> ShardLayout:
        """Where each parameter's slice lies in this rank's flat fp32 partitions, from the
        fragment map DeepSpeed links for every parameter that overlaps them (``_hp_mapping``)."""
        import deepspeed.comm as ds_comm

        zero = engine.optimizer
        layers = tuple(p for p in engine.module.parameters() if p.requires_grad)
        index = {id(p): i for i, p in enumerate(layers)}
        pieces: dict[int, tuple[Piece, ...]] = {}
        for flat, group in zip(zero.single_partition_of_fp32_groups, zero.bit16_groups):
            found = []
            for param in group:
                mapping = getattr(param, "_hp_mapping", None)
                if mapping is not None:
                    address = mapping.get_hp_fragment_address()
                    found.append(Piece(index[id(param)], address.start, address.numel))
            pieces[id(flat)] = tuple(found)
        reduce = self.comm_timer.waiting(lambda tensor: ds_comm.all_reduce(tensor, group=zero.dp_process_group))
        return ShardLayout(layers, pieces, reduce, zero.single_partition_of_fp32_groups[0].device)

    def optimizer_state(self, optimizer):
        if self.engine is not None and self.engine.zero_optimization_stage() >= 1:
            return _RankShard(optimizer), True
        return optimizer, False

    def _time_reductions(self, engine) -> None:
        """The engine reduces every gradient in ``allreduce_gradients`` after backward, at the
        accumulation boundary (stage 0 buckets them and all-reduces each bucket): mark around it."""
        reduce = engine.allreduce_gradients
        timer = self.comm_timer
        gradient_bytes = sum(p.numel() * p.element_size() for p in engine.module.parameters() if p.requires_grad)

        def timed_allreduce(*args, **kwargs):
            if not engine.is_gradient_accumulation_boundary():
                return reduce(*args, **kwargs)
            timer.launched(gradient_bytes)
            self._reducing = True
            try:
                return reduce(*args, **kwargs)
            finally:
                self._reducing = False
                timer.finished()

        engine.allreduce_gradients = timed_allreduce

    def teardown(self) -> None:
        # The engine holds the process group through its reducers: freed first, while Python runs.
        self.engine = None
        gc.collect()
        super().teardown()

    def accumulate(self, model, sync: bool) -> contextlib.AbstractContextManager:
        return self._boundary(sync)

    @contextlib.contextmanager
    def _boundary(self, sync: bool) -> Iterator[None]:
        self.engine.set_gradient_accumulation_boundary(sync)
        yield

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # divides by gradient_accumulation_steps itself

    def step(self, optimizer) -> None:
        self.engine.step()  # optimizer step at the boundary, then zero_grad

    def collectives(self) -> Any:
        import deepspeed.comm as ds_comm  # DeepSpeed's own communication API

        return ds_comm

    def transport(self) -> dict[str, Any]:
        from deepspeed.comm import comm  # its module global: the package re-exports a stale None

        backend = comm.cdb.get_backend() if comm.cdb is not None else None
        return {"library": "deepspeed.comm", "collectives": backend, "deepspeed_comm_backend": type(comm.cdb).__name__}


class _AllGatherMarks:
    """DeepSpeed's ZeRO optimizer brackets the all-gather of the updated partitions with its
    ``optimizer_allgather`` timer; this stands in for its timers object and adds that span to
    the step split as a collective waited on (every other timer goes to the original)."""

    def __init__(self, timers, comm_timer) -> None:
        self._timers, self._comm = timers, comm_timer
        self._marked: _Marked | None = None

    def __call__(self, name: str):
        from deepspeed.runtime.zero.stage_1_and_2 import OPTIMIZER_ALLGATHER_TIMER

        if name != OPTIMIZER_ALLGATHER_TIMER:
            return self._timers(name)
        if self._marked is None:  # one object: start() and stop() come through separate calls
            self._marked = _Marked(self._timers(name), self._comm)
        return self._marked

    def __getattr__(self, name: str):
        return getattr(self._timers, name)


class _Marked:
    def __init__(self, inner, comm_timer) -> None:
        self._inner, self._comm, self._start = inner, comm_timer, None

    def start(self, *args, **kwargs):
        self._start = mark(self._comm.cuda)
        return self._inner.start(*args, **kwargs)

    def stop(self, *args, **kwargs):
        if self._start is not None:
            self._comm.waited(self._start)
            self._start = None
        return self._inner.stop(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class _RankShard:
    """A ZeRO optimizer's state as one rank's checkpoint part: its own partition's optimizer
    state and fp32 weights (DeepSpeed's ``state_dict``); ``load_state_dict`` hands it back to
    the same rank of a run with the same world size (DeepSpeed's rigid checkpoint path)."""

    def __init__(self, zero) -> None:
        self.zero = zero

    def state_dict(self) -> dict[str, Any]:
        return self.zero.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import deepspeed.comm as ds_comm

        rank = ds_comm.get_rank(group=self.zero.dp_process_group)
        states = [None] * ds_comm.get_world_size(group=self.zero.dp_process_group)
        states[rank] = state
        self.zero.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=True)
