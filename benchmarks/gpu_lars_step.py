"""LARS.step() against fused SGD's step on one device, on ResNet-50's parameters.

    python -m benchmarks.gpu_lars_step [--model resnet50] [--rounds 50] [--json FILE]

Each variant steps its own copy of the fp32 parameters with fixed gradients; rounds are
interleaved, the order rotating every round, so drift falls on every variant alike. On a GPU
each step is timed two ways:

- ``gpu``: CUDA events around the step, queued behind a spin kernel of about 2 ms, so the host
  has launched the whole step before the GPU reaches it: the step's time on the GPU, as in
  training, where the host runs ahead of the device;
- ``wall``: synchronise, step, synchronise: the host's launch overhead included.

The figure per variant is the median, and its ratio to fused SGD the median of per-round
ratios. Then each LARS variant steps twice under ``torch.cuda.set_sync_debug_mode("error")``:
a step that synchronises raises, and the variant is marked. On a CPU (a dry run) only the
wall clock exists and the GPU-only variants are skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model

LR, MOMENTUM, WEIGHT_DECAY, TRUST = 0.1, 0.9, 5e-5, 0.001
NUM_CLASSES = 1000
SPIN_CYCLES = 4_000_000  # about 2 ms at H200 clocks: longer than any step's launches take
# LARS variants: (LARS's fused option, the Triton kernels' chunk size in bytes or None for the default)
LARS_VARIANTS: dict[str, tuple[bool | None, int | None]] = {
    "lars": (None, None),  # the default path: the fused kernel on CPU, foreach on CUDA
    "lars-foreach": (False, None),
    "lars-triton": (True, None),
    "lars-triton-2MiB": (True, 2 << 20),
    "lars-triton-32MiB": (True, 32 << 20),
    "lars-triton-unchunked": (True, 1 << 40),
}
CUDA_ONLY = {name for name, (fused, _) in LARS_VARIANTS.items() if fused is True}


def model_with_grads(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator, device=device) * 1e-2
    return model


def sgd(params) -> torch.optim.SGD:
    """SGD with momentum, fused where this torch and device have it, else foreach."""
    try:
        return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, foreach=True)


def lars_step(model: nn.Module, fused: bool | None, chunk_bytes: int | None) -> Callable[[], object]:
    optimizer = LARS(lars_param_groups(model, WEIGHT_DECAY), lr=LR, momentum=MOMENTUM, trust_coefficient=TRUST, fused=fused)
    if chunk_bytes is None:
        return optimizer.step
    from larsbench.workloads import lars_triton

    default = lars_triton.CHUNK_BYTES

    def step() -> None:
        # the layout is cached per chunk size, so switching it between steps costs no rebuild
        lars_triton.CHUNK_BYTES = chunk_bytes
        try:
            optimizer.step()
        finally:
            lars_triton.CHUNK_BYTES = default

    return step


def variants(model_name: str, device: torch.device, names: list[str]) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """name → one step on its own parameters (already stepped twice: buffers and tables exist);
    and the variants skipped, with why."""
    steps: dict[str, Callable[[], object]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name in CUDA_ONLY and device.type != "cuda":
            skipped[name] = "needs CUDA (the Triton kernels)"
            continue
        model = model_with_grads(model_name, device)
        if name == "sgd":
            steps[name] = sgd(model.parameters()).step
        else:
            steps[name] = lars_step(model, *LARS_VARIANTS[name])
        steps[name]()
        steps[name]()
    return steps, skipped


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(steps: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per step per round, on each clock this device has."""
    names = list(steps)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "gpu": []} for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            synchronize(device)
            started = time.perf_counter()
            steps[name]()
            synchronize(device)
            times[name]["wall"].append(time.perf_counter() - started)
            if device.type == "cuda":
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(SPIN_CYCLES)  # the GPU is busy while the host queues the step
                begin.record()
                steps[name]()
                end.record()
                end.synchronize()
                times[name]["gpu"].append(begin.elapsed_time(end) / 1e3)
    return times


def sync_check(step: Callable[[], object]) -> str | None:
    """None when two steps run under the "error" sync debug mode; else the error's first line."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        step()
    except RuntimeError as exc:
        return str(exc).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return None


def summarise(times: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, dict[str, float | None]]:
    result: dict[str, dict[str, float | None]] = {}
    for name, clocks in times.items():
        row: dict[str, float | None] = {}
        for clock, values in clocks.items():
            base = times[baseline][clock]
            row[f"{clock}_ms"] = statistics.median(values) * 1e3 if values else None
            row[f"{clock}_ratio"] = statistics.median(a / b for a, b in zip(values, base)) if values else None
        result[name] = row
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_lars_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="whose parameters (default resnet50; tiny_cnn for a dry run)")
    parser.add_argument("--rounds", type=int, default=50, help="timed interleaved rounds (default 50)")
    parser.add_argument("--variants", nargs="+", default=["sgd", *LARS_VARIANTS], choices=["sgd", *LARS_VARIANTS])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.rounds < 2 or "sgd" not in args.variants:
        parser.error("--rounds must be at least 2, and the variants must include sgd (the baseline)")
    device = torch.device(args.device)
    steps, skipped = variants(args.model, device, args.variants)
    n_params = sum(p.numel() for p in build_model(args.model, NUM_CLASSES).parameters())
    times = timed_rounds(steps, device, args.rounds)
    figures = summarise(times, "sgd")
    syncs: dict[str, str | None] = {}
    for name, step in steps.items():
        if name != "sgd" and device.type == "cuda":
            syncs[name] = sync_check(step)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"optimizer step on {args.model}'s {n_params:,} fp32 parameters on {device_name}, {args.rounds} interleaved rounds "
          f"(ratios: median of per-round ratios to fused SGD):")  # fmt: skip
    for variant, row in figures.items():
        clocks = "  ".join(
            f"{clock} {row[f'{clock}_ms']:8.3f} ms ({row[f'{clock}_ratio']:.2f}x)" for clock in ("gpu", "wall") if row[f"{clock}_ms"] is not None
        )
        sync = "" if variant not in syncs else ("  no host sync" if syncs[variant] is None else f"  SYNCHRONISES: {syncs[variant]}")
        print(f"  {variant:22s} {clocks}{sync}")
    for variant, why in skipped.items():
        print(f"  {variant:22s} skipped: {why}")
    if device.type != "cuda":
        print("  sync check skipped: needs CUDA (torch.cuda.set_sync_debug_mode)")
    if args.json:
        result = {"device": device_name, "model": args.model, "parameters": n_params, "rounds": args.rounds,
                  "variants": {v: {**row, "sync_error": syncs.get(v), "sync_checked": v in syncs} for v, row in figures.items()},
                  "skipped": skipped}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
