"""Horovod: ``hvd.DistributedOptimizer`` around the workload's optimizer, gloo on CPU and NCCL
on GPU, started locally by ``horovodrun --gloo``.

Accumulation: ``backward_passes_per_step`` = accumulation steps, so Horovod all-reduces each
gradient once, on the last micro-batch; the loss is divided by the accumulation count (the
base class's ``backward``) and Horovod averages over ranks, giving the mean gradient of the
global batch, as DDP does.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from backends.base import Backend
from suite.environment import ClusterEnvironment

INSTALL_HINT = "bash .ci/install_horovod.sh .venv/bin/python (Horovod 0.28.1 builds from source; see README)"


class HorovodBackend(Backend):
    name = "horovod"
    requires = ("horovod.torch", INSTALL_HINT)

    @classmethod
    def local_launch_command(cls, nprocs: int, worker: list[str]) -> list[str]:
        horovodrun = str(Path(worker[0]).with_name("horovodrun"))
        return [horovodrun, "-np", str(nprocs), "-H", f"localhost:{nprocs}", "--gloo", *worker]

    @classmethod
    def versions(cls) -> dict[str, str]:
        import horovod

        return {**super().versions(), "horovod": horovod.__version__}

    def setup(self, env: ClusterEnvironment, device: torch.device, timeout_sec: float) -> None:
        # Horovod reads its timeouts from the environment at init.
        os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(int(timeout_sec)))
        import horovod.torch as hvd

        self.hvd = hvd
        self.env, self.device = env, device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        hvd.init()
        if (hvd.rank(), hvd.size()) != (env.rank, env.world_size):
            raise RuntimeError(f"Horovod sees rank {hvd.rank()}/{hvd.size()}, the environment {env.rank}/{env.world_size}")

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps):
        hvd = self.hvd
        self.accumulation_steps = accumulation_steps
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # Horovod rebuilds the optimizer from its param_groups: LARS keeps every
        # hyperparameter there for this reason.
        distributed = hvd.DistributedOptimizer(
            optimizer,
            named_parameters=model.named_parameters(),
            backward_passes_per_step=accumulation_steps,
            op=hvd.Average,
        )
        # broadcast_optimizer_state would initialise an empty state by taking a real step with
        # zero gradients, which moves the weights wherever weight decay is non-zero. A fresh
        # optimizer is identical on every rank already; only a restored one needs the broadcast.
        if distributed.state_dict()["state"]:
            hvd.broadcast_optimizer_state(distributed, root_rank=0)
        return model, distributed

    def step(self, optimizer) -> None:
        optimizer.step()
        optimizer.zero_grad()  # Horovod's override takes no set_to_none (None is torch's default)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op not in ("sum", "mean"):
            raise ValueError(f"unsupported reduction {op!r}")
        return self.hvd.allreduce_(tensor, op=self.hvd.Sum if op == "sum" else self.hvd.Average)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        return self.hvd.broadcast_(tensor, root_rank=src)

    def barrier(self) -> None:
        self.hvd.barrier()

    def teardown(self) -> None:
        if getattr(self, "hvd", None) is not None and self.hvd.is_initialized():
            self.hvd.shutdown()
