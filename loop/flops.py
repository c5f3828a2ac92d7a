"""FLOPs of a training step and the peaks to hold them against (model FLOPs utilisation).

- ``training_flops_per_image``: forward and backward FLOPs of one micro-batch, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the model itself (matrix products and
  convolutions, 2 FLOPs per multiply-add), divided by the images in it.
- Two denominators, both recorded and labelled: ``table_peak_tflops``, the vendor's published
  dense peak of the GPU model at the run's precision (None for CPUs and GPUs the table lacks),
  and ``measured_peak_tflops``, what a short matrix-product probe achieves on this device at
  the run's precision (the "maximum achievable matmul FLOPs" method), so MFU exists on CPUs too.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from larsbench.core.device import synchronize

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by the
# name torch.cuda.get_device_name reports. fp32 training runs convolutions in TF32 by default
# (torch.backends.cudnn.allow_tf32), so "tf32" is their denominator; "fp32" is for code that
# turns TF32 off. Longer names first: "A100" must not match "A10".
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("GH200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)


def peak_key(precision: str, device: torch.device) -> str:
    """Which peak a run's arithmetic runs at: its autocast dtype, else fp32 or TF32."""
    if precision in ("bf16", "fp16"):
        return precision
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"


def table_peak_tflops(gpu_name: str | None, key: str) -> float | None:
    if not gpu_name:
        return None
    for name, peaks in PEAK_TFLOPS:
        if name in gpu_name:
            return peaks.get(key)
    return None


def training_flops_per_image(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast, criterion: nn.Module
) -> float:
    """Forward + backward FLOPs per image of one micro-batch (gradients are left on ``model``;
    call it on a copy)."""
    with FlopCounterMode(display=False) as counter:
        with autocast():
            loss = criterion(model(images).float(), labels)
        loss.backward()
    return counter.get_total_flops() / len(images)


def measured_peak_tflops(device: torch.device, key: str, seconds: float = 0.5) -> float:
    """TFLOP/s of square matrix products at the run's precision on this device (the best of a
    few timed batches after one untimed product)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(key, torch.float32)
    size = 8192 if device.type == "cuda" else 1024
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = key == "tf32"
    try:
        torch.mm(a, b)
        best = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == 0.0:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            synchronize(device)
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start) / 1e12)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return best
