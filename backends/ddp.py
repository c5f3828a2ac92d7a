"""Native PyTorch DistributedDataParallel: gloo on CPU, NCCL on GPU, started by torchrun."""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch.nn.parallel import DistributedDataParallel

from larsbench.backends.base import Backend
from larsbench.core.environment import ClusterEnvironment
from larsbench.core.errors import ConfigError


class DDPBackend(Backend):
    name = "ddp"

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
        # backend_config holds DistributedDataParallel keyword arguments (bucket_cap_mb, ...).
        accepted = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {"self", "module", "device_ids", "output_device", "process_group"}
        for key in options:
            if key not in accepted:
                raise ConfigError(f"backend_config.{key}", f"not a DistributedDataParallel argument; valid: {', '.join(sorted(accepted))}")

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None):
        # fp16: the base class scales the loss, and unscales the all-reduced gradients
        # before the optimizer step (GradScaler's unscale_/step/update).
        self.accumulation_steps, self.precision = accumulation_steps, precision or self.precision
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's parameters and buffers at construction: identical start.
        return DistributedDataParallel(model, device_ids=device_ids, **self.options), optimizer

    def accumulate(self, model, sync: bool) -> contextlib.AbstractContextManager:
        # Skipping the all-reduce on micro-batches that do not step: gradients accumulate
        # locally and the last micro-batch's backward reduces the sum once.
        return contextlib.nullcontext() if sync else model.no_sync()
