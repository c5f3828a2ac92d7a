"""The suite's training step against a bare hand-written DDP loop, in one torchrun launch.

Run by ``benchmarks.run`` as
``python -m torch.distributed.run --standalone --nproc-per-node=2 --module benchmarks.harness_ddp``.
Both sides train ResNet-50 (32 px, synthetic data, LARS, same micro-batch) in DDP over gloo
(``--device cuda``: over NCCL, one GPU per rank), each on its own model built from the same seed; the suite's side is the real ``Trainer``. They alternate in blocks of 5 steps, in the
order A B B A (the suite's side pays its loss reduction every 10 steps, its default
``log_every_steps``, as in a real run), so that drift and load from other processes hit both
sides alike. Rank 0 prints
one JSON line: per-block seconds of each side.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from larsbench.backends.ddp import DDPBackend
from larsbench.core import environment
from larsbench.loop.trainer import RunContext, Trainer
from larsbench.suite.config import build_spec
from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model


class SuiteSide:
    """The suite's own loop: a ``Trainer`` (the object ``larsbench run`` trains with), stepped
    with ``Trainer.advance``, the very code a run executes per optimizer step: schedule write,
    step clock, the backend's verbs, loss kept on the device and reduced every
    ``log_every_steps``, telemetry and preemption checks."""

    def __init__(self, spec, backend, device, rank, world_size):
        self.trainer = Trainer(spec, backend, device, rank, world_size, RunContext())
        self.trainer.window_first_step = 0  # the benchmark times from the first block on

    def run(self, steps: int) -> None:
        trainer = self.trainer
        for _ in range(steps):
            if trainer.step % trainer.steps_per_epoch == 0:
                trainer.start_epoch()
                trainer.epoch += 1
            trainer.advance()
            if trainer.metrics.status != "ok":
                raise RuntimeError(f"the suite's side stopped: {trainer.metrics.status} at step {trainer.step}")


class BareSide:
    """A hand-written DDP loop doing the same work: same model, LARS with the same groups and
    hyperparameters, the same synthetic tensors, micro-batch and ``no_sync`` accumulation."""

    def __init__(self, spec, images: torch.Tensor, labels: torch.Tensor):
        self.spec = spec
        torch.manual_seed(spec.seed)
        module = build_model(spec.model, spec.num_classes).to(images.device)
        self.model = DistributedDataParallel(module, device_ids=[images.device.index] if images.device.type == "cuda" else None)
        lr = spec.lr  # scaling_rule "none": the peak LR is the base LR
        self.optimizer = LARS(
            lars_param_groups(module, spec.weight_decay), lr=lr, momentum=spec.momentum,
            trust_coefficient=spec.trust_coefficient, eps=spec.lars_eps,
        )  # fmt: skip
        self.images, self.labels = images, labels
        self.order = torch.randperm(len(labels), device=labels.device)
        self.position = 0

    def _batch(self):
        mb = self.spec.micro_batch_size
        if self.position + mb > len(self.order):
            self.order, self.position = torch.randperm(len(self.labels), device=self.labels.device), 0
        index = self.order[self.position : self.position + mb]
        self.position += mb
        return self.images[index], self.labels[index]

    def run(self, steps: int) -> None:
        accumulation = self.spec.accumulation_steps
        for _ in range(steps):
            for micro in range(accumulation):
                images, labels = self._batch()
                if micro < accumulation - 1:
                    with self.model.no_sync():
                        (nn.functional.cross_entropy(self.model(images), labels) / accumulation).backward()
                else:
                    (nn.functional.cross_entropy(self.model(images), labels) / accumulation).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def timed(side, steps: int, device: torch.device) -> float:
    finish(device)
    start = time.perf_counter()
    side.run(steps)
    finish(device)  # the block ends when the slowest rank's GPU is done
    return time.perf_counter() - start


def finish(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.barrier()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.harness_ddp")
    parser.add_argument("--rounds", type=int, default=4, help="A B B A rounds after warm-up")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: one GPU per rank, NCCL")
    args = parser.parse_args(argv)

    env = environment.detect()
    device = torch.device("cuda", env.local_rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    block = 5  # steps per timed block
    total_steps = block * (2 * args.rounds + 1)
    spec = build_spec([("harness", {
        "backend": "ddp", "model": args.model, "dataset": "synthetic", "image_size": args.image_size,
        "world_size": env.world_size, "micro_batch_size": args.micro_batch,
        "accumulation_steps": args.accumulation, "optimizer": "lars", "device": args.device,
        "steps": total_steps,
        "synthetic_samples": env.world_size * args.micro_batch * args.accumulation * 80,
    })])  # fmt: skip
    backend = DDPBackend(spec.backend_config)
    backend.setup(env, device, spec.collective_timeout_sec)
    try:
        suite = SuiteSide(spec, backend, device, env.rank, env.world_size)
        train = suite.trainer.data.train
        bare = BareSide(spec, train.images, train.labels)
        sides = {"suite": suite, "bare": bare}
        for side in sides.values():  # warm-up: allocator, momentum buffers, gloo buffers, cuDNN's choices
            timed(side, block, device)
        seconds: dict[str, list[float]] = {"suite": [], "bare": []}
        for _ in range(args.rounds):
            for name in ("suite", "bare", "bare", "suite"):
                seconds[name].append(timed(sides[name], block, device))
        suite.trainer.progress.close()
        steps = suite.trainer.clock.finish()
        if env.rank == 0:
            result = {
                "steps_per_block": block, "world_size": env.world_size,
                "global_batch": spec.global_batch_size, "seconds": seconds,
                "data_wait_sec": sum(s.data_wait for s in steps), "suite_step_sec": sum(s.step for s in steps),
            }  # fmt: skip
            print("HARNESS " + json.dumps(result), flush=True)
    finally:
        backend.teardown()


if __name__ == "__main__":
    main()
