"""ResNet-50 training throughput on one device with the fast-path settings, and LARS's optimizer
step against fused SGD's on the same device.

    python benchmarks/gpu_throughput.py --batch 256 --precision bf16 --channels-last [--compile] --optimizer lars

1. Training: synthetic ImageNet-shaped batches already on the device (no input pipeline), the
   suite's ``Precision`` (autocast, fp16 loss scaling with unscaling before the optimizer,
   channels_last), ``--warmup`` steps left out (cuDNN autotuning, torch.compile's compile),
   then ``--steps`` timed steps between two ``torch.cuda.synchronize()``: images/s.
2. Optimizer step: LARS and SGD with momentum (``fused=True`` where this torch has it, else
   ``foreach``) on two copies of ResNet-50's fp32 parameters with fixed gradients, stepped in
   alternation (interleaved rounds, each timed between synchronizations): median ms per step
   and the median per-round ratio LARS / SGD.

It runs on the CPU too (slowly: use a small ``--batch``, ``--image-size`` and ``--steps``),
which is how its test checks it; the numbers that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from larsbench.core.precision import PRECISIONS, Precision
from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model

LR, MOMENTUM, WEIGHT_DECAY, TRUST = 0.1, 0.9, 5e-5, 0.001
NUM_CLASSES = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="a workloads model (default resnet50; tiny_cnn for a smoke test)")
    parser.add_argument("--batch", type=int, default=256, help="images per step (default 256)")
    parser.add_argument("--image-size", type=int, default=224, help="square input size in px (default 224)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16", help="default bf16")
    parser.add_argument("--channels-last", action="store_true", help="weights and inputs in channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time is in warm-up)")
    parser.add_argument("--optimizer", choices=("lars", "sgd"), default="lars", help="for the training run (default lars)")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps first (default 10)")
    parser.add_argument("--optimizer-rounds", type=int, default=50, help="timed LARS/SGD step pairs (default 50; 0 skips)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when present")
    args = parser.parse_args(argv)
    if min(args.batch, args.image_size, args.steps) < 1 or args.warmup < 0 or args.optimizer_rounds < 0:
        parser.error("--batch, --image-size and --steps must be positive; --warmup and --optimizer-rounds non-negative")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd(params, fused_ok: bool = True) -> torch.optim.SGD:
    """SGD with momentum, fused where this torch and device have it, else foreach."""
    if fused_ok:
        try:
            return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, foreach=True)


def build_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "lars":
        return LARS(lars_param_groups(model, WEIGHT_DECAY), lr=LR, momentum=MOMENTUM, trust_coefficient=TRUST)
    return sgd(model.parameters())


def training_throughput(args: argparse.Namespace, device: torch.device) -> float:
    """Images per second of forward, backward and optimizer step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = Precision(args.precision, device.type, channels_last=args.channels_last)
    torch.manual_seed(0)
    model = precision.convert_model(build_model(args.model, NUM_CLASSES).to(device))
    optimizer = build_optimizer(args.optimizer, model)
    forward = torch.compile(model) if args.compile else model
    criterion = nn.CrossEntropyLoss()
    images = precision.convert_input(torch.randn(args.batch, 3, args.image_size, args.image_size, device=device))
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)

    def step() -> None:
        with precision.autocast():
            loss = criterion(forward(images).float(), labels)
        precision.scale(loss).backward()
        precision.optimizer_step(optimizer)  # unscales first under fp16
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    print(f"warm-up: {args.warmup} steps in {time.perf_counter() - started:.1f} s (not timed)")
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - started
    return args.steps * args.batch / elapsed


def model_with_grads(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator, device=device) * 1e-2
    return model


def optimizer_steps(name: str, device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of LARS and of SGD, ``rounds`` interleaved pairs after 3 untimed ones."""
    lars_model, sgd_model = model_with_grads(name, device), model_with_grads(name, device)
    optimizers: dict[str, torch.optim.Optimizer] = {
        "lars": build_optimizer("lars", lars_model),
        "sgd": sgd(sgd_model.parameters()),
    }
    steps: dict[str, Callable[[], object]] = {kind: opt.step for kind, opt in optimizers.items()}
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for round_ in range(rounds + 3):
        for kind, step in steps.items():
            synchronize(device)
            started = time.perf_counter()
            step()
            synchronize(device)
            if round_ >= 3:
                times[kind].append(time.perf_counter() - started)
    sgd_kind = "fused" if optimizers["sgd"].defaults.get("fused") else "foreach"
    print(f"optimizer step on {name}'s {sum(p.numel() for p in lars_model.parameters()):,} fp32 parameters "
          f"({len(list(lars_model.parameters()))} tensors), SGD {sgd_kind}, {rounds} interleaved rounds:")  # fmt: skip
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model} on {name} (torch {torch.__version__}): batch {args.batch}, {args.image_size} px, "
          f"{args.precision}{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}, "
          f"{args.optimizer}")  # fmt: skip
    throughput = training_throughput(args, device)
    print(f"training: {throughput:.1f} images/s over {args.steps} steps ({args.batch / throughput * 1e3:.1f} ms/step)")
    if args.optimizer_rounds:
        times = optimizer_steps(args.model, device, args.optimizer_rounds)
        for kind, values in times.items():
            print(f"  {kind:5s} {statistics.median(values) * 1e3:8.3f} ms/step (median)")
        ratios = [a / b for a, b in zip(times["lars"], times["sgd"])]
        print(f"  LARS / SGD step time: {statistics.median(ratios):.2f}x (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
