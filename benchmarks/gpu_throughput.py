"""ResNet-50 training throughput on one device with the fast-path settings, and LARS's optimizer
step against fused SGD's on the same device.

    python benchmarks/gpu_throughput.py --batch 256 --precision bf16 --channels-last \
        [--modes eager compiled] [--optimizers sgd lars lars-triton] [--json FILE]

1. Training: synthetic ImageNet-shaped batches already on the device (no input pipeline), the
   suite's ``Precision`` (autocast, fp16 loss scaling with unscaling before the optimizer,
   channels_last), for every mode (eager, ``torch.compile``d) and optimizer asked for. Each
   mode builds and compiles the model once and trains it with each optimizer in turn:
   ``--warmup`` steps left out (cuDNN autotuning, the compile, the first optimizer steps), then
   ``--steps`` timed steps between two ``torch.cuda.synchronize()``: images/s.
2. Optimizer step (``--optimizer-rounds``): LARS's default path against SGD with momentum
   (fused where this torch has it) on copies of the model's fp32 parameters, interleaved
   rounds (``benchmarks.gpu_lars_step`` measures every GPU variant).

It runs on the CPU too (slowly: use a small ``--batch``, ``--image-size`` and ``--steps``),
which is how its test checks it; the numbers that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks.gpu_lars_step import LR, MOMENTUM, NUM_CLASSES, TRUST, WEIGHT_DECAY, sgd, timed_rounds, variants
from larsbench.core.precision import PRECISIONS, Precision
from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model

OPTIMIZERS = ("sgd", "lars", "lars-triton")  # lars: the default path; lars-triton: LARS(fused=True), CUDA only
MODES = ("eager", "compiled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="a workloads model (default resnet50; tiny_cnn for a smoke test)")
    parser.add_argument("--batch", type=int, default=256, help="images per step (default 256)")
    parser.add_argument("--image-size", type=int, default=224, help="square input size in px (default 224)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16", help="default bf16")
    parser.add_argument("--channels-last", action="store_true", help="weights and inputs in channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (same as --modes compiled)")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="eager and/or compiled (default: --compile's)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lars", help="for the training run (default lars)")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, help="several, each on the same model (default: --optimizer)")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps first (default 10)")
    parser.add_argument("--optimizer-rounds", type=int, default=50, help="timed LARS/SGD step pairs (default 50; 0 skips)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when present")
    parser.add_argument("--json", type=Path, help="also write the training figures here")
    args = parser.parse_args(argv)
    if min(args.batch, args.image_size, args.steps) < 1 or args.warmup < 0 or args.optimizer_rounds < 0:
        parser.error("--batch, --image-size and --steps must be positive; --warmup and --optimizer-rounds non-negative")
    args.modes = args.modes or ["compiled" if args.compile else "eager"]
    args.optimizers = args.optimizers or [args.optimizer]
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return sgd(model.parameters())
    fused = True if name == "lars-triton" else None
    return LARS(lars_param_groups(model, WEIGHT_DECAY), lr=LR, momentum=MOMENTUM, trust_coefficient=TRUST, fused=fused)


def training_throughputs(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Images per second of forward, backward and optimizer step, per mode and optimizer."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = Precision(args.precision, device.type, channels_last=args.channels_last)
    criterion = nn.CrossEntropyLoss()
    images = precision.convert_input(torch.randn(args.batch, 3, args.image_size, args.image_size, device=device))
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    results = []
    for mode in args.modes:
        torch.manual_seed(0)
        model = precision.convert_model(build_model(args.model, NUM_CLASSES).to(device))
        # compiled once per mode: every optimizer trains the same compiled graph
        forward = torch.compile(model) if mode == "compiled" else model
        for name in args.optimizers:
            if name == "lars-triton" and device.type != "cuda":
                print(f"{mode} {name}: skipped: needs CUDA (the Triton kernels)")
                results.append({"mode": mode, "optimizer": name, "skipped": "needs CUDA (the Triton kernels)"})
                continue
            optimizer = build_optimizer(name, model)

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
            warmup_sec = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize(device)
            throughput = args.steps * args.batch / (time.perf_counter() - started)
            print(f"{mode} {name}: warm-up {args.warmup} steps in {warmup_sec:.1f} s (not timed); training: "
                  f"{throughput:.1f} images/s over {args.steps} steps ({args.batch / throughput * 1e3:.1f} ms/step)",
                  flush=True)  # fmt: skip
            results.append({"mode": mode, "optimizer": name, "images_per_sec": throughput, "warmup_sec": warmup_sec})
    return results


def optimizer_ratio(model: str, device: torch.device, rounds: int) -> None:
    """LARS's default path against fused SGD, interleaved, on the wall clock."""
    steps, _ = variants(model, device, ["sgd", "lars"])
    times = timed_rounds(steps, device, rounds)
    n_params = sum(p.numel() for p in build_model(model, NUM_CLASSES).parameters())
    print(f"optimizer step on {model}'s {n_params:,} fp32 parameters, SGD fused where this torch has it, "
          f"{rounds} interleaved rounds:")  # fmt: skip
    for kind in steps:
        print(f"  {kind:5s} {statistics.median(times[kind]['wall']) * 1e3:8.3f} ms/step (median)")
    ratios = [a / b for a, b in zip(times["lars"]["wall"], times["sgd"]["wall"])]
    print(f"  LARS / SGD step time: {statistics.median(ratios):.2f}x (median of per-round ratios)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    modes = "" if args.modes == ["eager"] else ", " + " and ".join(args.modes)
    print(f"{args.model} on {name} (torch {torch.__version__}): batch {args.batch}, {args.image_size} px, "
          f"{args.precision}{', channels_last' if args.channels_last else ''}{modes}, {', '.join(args.optimizers)}")  # fmt: skip
    results = training_throughputs(args, device)
    if args.json:
        settings = {k: getattr(args, k) for k in ("model", "batch", "image_size", "precision", "channels_last", "steps", "warmup")}
        args.json.write_text(json.dumps({"device": name, **settings, "runs": results}, indent=1) + "\n")
    if args.optimizer_rounds:
        optimizer_ratio(args.model, device, args.optimizer_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
