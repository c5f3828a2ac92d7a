"""DeepSpeed: ``deepspeed.initialize`` with the workload's optimizer as the client optimizer,
started locally by DeepSpeed's own launcher.

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
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gc
import json
import os
from collections.abc import Iterator
from typing import Any

import torch

from larsbench.backends.base import Backend, free_port
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError
from larsbench.core.precision import DTYPES

# Settings larsbench derives from the run; a user's deepspeed_config may not override them.
RUN_OWNED_KEYS = (
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "optimizer", "scheduler",
)  # fmt: skip


def zero_stage(user_config: dict[str, Any] | None) -> int:
    return int(((user_config or {}).get("zero_optimization") or {}).get("stage", 0))


# What larsbench's precision becomes in the engine config (the engine's own autocast + scaler).
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
# A user's DeepSpeed config may not switch mixed precision on itself: the run's precision does.
PRECISION_KEYS = ("torch_autocast", "bf16", "fp16", "bfloat16", "amp")


def engine_config(
    micro_batch: int, accumulation: int, world_size: int, user_config: dict[str, Any] | None, precision: str = "fp32"
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "zero_optimization": {"stage": 0},
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
    )
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


def build_cpu_ops() -> None:
    """Compile DeepSpeed's CPU communication op now (``.ci/install.sh`` does, so that the first
    run on a fresh machine does not): what ``deepspeed.init_distributed`` loads on a CPU."""
    use_environment_extension_dir()
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    # What deepspeed.comm.torch.build_shm_op does, without the print.
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        builder.load(verbose=False)


def shm_buffer_path(rank: int) -> str:
    """The shared-memory file DeepSpeed's CPU all-reduce creates for ``rank`` (its shm.cpp names
    it from the user id and the rendezvous address and port DeepSpeed read at start-up)."""
    address, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{address}_{port}_{rank}"


class DeepSpeedBackend(Backend):
    name = "deepspeed"
    requires = ("deepspeed", "pip install 'larsbench[deepspeed]'")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)  # a DeepSpeed config dict, merged into the generated one
        self.engine = None

    @classmethod
    def check_options(cls, options: dict[str, Any], optimizer: str) -> None:
        for key in RUN_OWNED_KEYS:
            if key in options:
                raise ConfigError(f"backend_config.{key}", "larsbench sets this from the run's batch and optimizer settings; remove it")
        stage = zero_stage(options)
        if stage >= 1 and optimizer == "lars":
            raise ConfigError(
                "backend_config.zero_optimization.stage",
                f"LARS needs per-layer norms, but ZeRO stage {stage} hands the optimizer flattened, "
                "partitioned parameters (one norm per partition, not per layer); use stage 0 with LARS",
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
    def local_launch_command(cls, nprocs: int, worker: list[str]) -> list[str]:
        """DeepSpeed's per-node launcher, ``deepspeed.launcher.launch``: the process that starts
        a node's ranks, sets their environment and watches them. Its front end (``deepspeed``,
        ``deepspeed.launcher.runner``) on a single machine only encodes the node's ranks and
        starts this same command, from one more interpreter that imports torch and DeepSpeed
        first (1.8 s here); the command is the one it builds (runner.py's local branch)."""
        python, dash_m, module, *args = worker
        assert dash_m == "-m", worker
        world = base64.urlsafe_b64encode(json.dumps({"localhost": list(range(nprocs))}).encode()).decode()
        return [
            python, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={world}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", "--no_local_rank", "--module", module, *args,
        ]  # fmt: skip

    @classmethod
    def versions(cls) -> dict[str, str]:
        import deepspeed

        return {**super().versions(), "deepspeed": deepspeed.__version__}

    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        import deepspeed

        use_environment_extension_dir()  # before DeepSpeed loads (or builds) its CPU op
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
        # With every rank on one machine, DeepSpeed's CPU all-reduce maps one shared-memory file
        # per rank and never removes it: every run left 2 × 66 MiB in /dev/shm here (194 files,
        # 12 GiB, after a day of test runs), and a full /dev/shm kills later runs with SIGBUS.
        # Once every rank has mapped every peer's file the names can go; the memory itself lives
        # until the last process exits, even one that is killed. Only DeepSpeed's CPU
        # accelerator has this all-reduce.
        if device.type == "cpu":
            torch.distributed.barrier()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(shm_buffer_path(env.rank))

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None):
        import deepspeed

        self.accumulation_steps = accumulation_steps
        self.precision = (precision or self.precision).engine_managed()  # the engine autocasts and scales
        config = engine_config(micro_batch_size, accumulation_steps, self.world_size, self.options, self.precision.name)
        self.engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        self._time_reductions(self.engine)
        return self.engine, ds_optimizer

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
            try:
                return reduce(*args, **kwargs)
            finally:
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
