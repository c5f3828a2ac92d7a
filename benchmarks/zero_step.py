"""DeepSpeed's LARS training step with the optimizer state sharded (ZeRO-1) against the same
step unsharded (ZeRO-0), on the same ranks, in one torchrun launch.

Run by ``benchmarks.run`` as
``python -m torch.distributed.run --standalone --nproc-per-node=2 --module benchmarks.zero_step``.
Each side is a ``Trainer`` (the object ``larsbench run`` trains with) over its own DeepSpeed
engine, both built from the same seed, stepped with ``Trainer.advance``: forward, backward, the
gradient reduction (all-reduce at ZeRO-0; reduce-scatter at ZeRO-1), LARS (at ZeRO-1 on this
rank's partition, its layer norms reduced over the ranks in one collective), and at ZeRO-1 the
all-gather of the updated partitions. The sides alternate in blocks of 5 steps, in the order
A B B A. Rank 0 prints one JSON line: per-block seconds of each side, and each side's optimizer
state bytes per rank.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.harness_ddp import SuiteSide, timed
from larsbench.backends.deepspeed import DeepSpeedBackend
from larsbench.core import environment
from larsbench.loop import memory
from larsbench.loop.probe import gather_rows
from larsbench.suite.config import build_spec

SIDES = ("none", "zero1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.zero_step")
    parser.add_argument("--rounds", type=int, default=4, help="A B B A rounds after warm-up")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args(argv)

    env = environment.detect()
    device = torch.device("cpu")
    block = 5  # steps per timed block
    sides, backends = {}, []
    for sharding in SIDES:
        spec = build_spec([("zero", {
            "backend": "deepspeed", "optimizer_sharding": sharding, "model": args.model, "dataset": "synthetic",
            "image_size": args.image_size, "world_size": env.world_size, "micro_batch_size": args.micro_batch,
            "optimizer": "lars", "device": "cpu", "steps": block * (2 * args.rounds + 1),
            "synthetic_samples": env.world_size * args.micro_batch * 80,
        })])  # fmt: skip
        backend = DeepSpeedBackend(spec.backend_config)
        backend.setup(env, device, spec.collective_timeout_sec)  # the first side's process group serves both
        backends.append(backend)
        sides[sharding] = SuiteSide(spec, backend, device, env.rank, env.world_size)
    try:
        for side in sides.values():  # warm-up: allocator, optimizer state, communication buffers
            timed(side, block, device)
        seconds: dict[str, list[float]] = {name: [] for name in SIDES}
        for _ in range(args.rounds):
            for name in (SIDES[0], SIDES[1], SIDES[1], SIDES[0]):
                seconds[name].append(timed(sides[name], block, device))
        state = {
            name: [int(row[0]) for row in gather_rows(backends[0], [memory.optimizer_state_bytes(side.trainer.optimizer)],
                                                      env.rank, env.world_size, device)]
            for name, side in sides.items()
        }  # fmt: skip
        for side in sides.values():
            side.trainer.progress.close()
        if env.rank == 0:
            result = {"steps_per_block": block, "world_size": env.world_size, "model": args.model,
                      "image_size": args.image_size, "micro_batch": args.micro_batch, "seconds": seconds,
                      "optimizer_state_bytes": state}  # fmt: skip
            print("ZERO " + json.dumps(result), flush=True)
    finally:
        backends[0].teardown()


if __name__ == "__main__":
    main()
