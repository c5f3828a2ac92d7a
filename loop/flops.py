"""FLOPs of a training step and the peaks to hold them against (model FLOPs utilisation).

- ``training_flops_per_image``: forward and backward FLOPs of one image, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the model built on the meta device (no
  arithmetic runs: matrix products and convolutions, 2 FLOPs per multiply-add). ResNet-50 at
  224 px counts 24.3 GFLOP, within 1% of 3 × 2 × 4.09 GMAC (the published forward count,
  backward counted as twice forward), and a test holds it and AlexNet's to those counts.
- Two denominators, both recorded and labelled: ``table_peak_tflops``, the vendor's published
  dense peak for the exact GPU model torch reports (None for CPUs and for GPUs the table does
  not list: a near name is not the same GPU), and ``measured_peak_tflops``, what square
  matrix products achieve on this device at the run's precision after a warm-up (the "maximum
  achievable matmul FLOPs" method), so MFU exists on CPUs too.
- Both the count and the measured peak are kept in larsbench's cache (``core.cache``), keyed by
  everything they depend on: a run does not pay for them again, and MFU's denominator does not
  move with one probe's noise.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from larsbench import __version__
from larsbench.core.cache import cached
from larsbench.core.device import synchronize
from larsbench.workloads.models import build_model

# Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by the
# exact name torch.cuda.get_device_name reports. fp32 training runs convolutions in TF32 by
# default (torch.backends.cudnn.allow_tf32), so "tf32" is their denominator; "fp32" is for
# code that turns TF32 off. GPUs whose datasheet figures are ambiguous (H100 NVL, A10G) are left
# out on purpose: their runs report the measured peak only.
_HOPPER_SXM = {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}
_A100 = {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H100 80GB HBM3": _HOPPER_SXM,
    "NVIDIA H200": _HOPPER_SXM,
    "NVIDIA GH200 480GB": _HOPPER_SXM,
    "NVIDIA H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "NVIDIA A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "NVIDIA L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "Tesla V100-SXM2-16GB": {"fp16": 125.0, "fp32": 15.7},
    "Tesla V100-SXM2-32GB": {"fp16": 125.0, "fp32": 15.7},
    "Tesla V100-PCIE-16GB": {"fp16": 112.0, "fp32": 14.0},
    "Tesla V100-PCIE-32GB": {"fp16": 112.0, "fp32": 14.0},
}


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
    return PEAK_TFLOPS.get(" ".join(gpu_name.split()), {}).get(key)


def count_training_flops(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, images: int = 2) -> float:
    """Forward + backward FLOPs per image of ``model`` (already on the meta device)."""
    # Imported here: it loads triton (a third of a second), and a cached count never needs it.
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        inputs = torch.empty((images, *input_shape))
        labels = torch.zeros(images, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(inputs), labels).backward()
    return counter.get_total_flops() / images


def training_flops_per_image(model_name: str, num_classes: int, image_size: int) -> float:
    """FLOPs of one image's forward and backward pass through ``model_name`` (cached)."""

    def count() -> float:
        with torch.device("meta"):
            model = build_model(model_name, num_classes)
        return count_training_flops(model, (3, image_size, image_size), num_classes)

    key = {"model": model_name, "classes": num_classes, "image_size": image_size, "torch": torch.__version__,
           "larsbench": __version__}  # fmt: skip
    return cached("flops", key, count)[0]


def measure_matmul_tflops(device: torch.device, key: str, seconds: float = 2.0, warmup: float = 0.5) -> float:
    """TFLOP/s of square matrix products at the run's precision on this device: ``warmup``
    seconds untimed (clocks and caches settle), then batches for ``seconds``; the 90th percentile
    of the batches' rates (what the device sustains at its best, not one lucky batch)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(key, torch.float32)
    size = 8192 if device.type == "cuda" else 1024
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = key == "tf32"
    try:
        rates: list[float] = []
        started = time.perf_counter()
        while True:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            synchronize(device)
            end = time.perf_counter()
            if end - started > warmup:
                rates.append(4 * 2 * size**3 / (end - start) / 1e12)
            if end - started > warmup + seconds and len(rates) >= 5:
                break
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return statistics.quantiles(rates, n=10)[-1]


def measured_peak_tflops(device: torch.device, key: str, device_name: str, ranks_on_node: int) -> tuple[float, bool]:
    """This device's matrix-product peak at ``key`` (cached per machine): the device's model,
    the precision, torch's threads and how many ranks share the node (on a CPU they measure
    at once and split its cores, as they do in the run). Returns (TFLOP/s, from the cache)."""
    cache_key = {"device": device.type, "name": device_name, "precision": key, "threads": torch.get_num_threads(),
                 "ranks_on_node": ranks_on_node, "torch": torch.__version__, "larsbench": __version__}  # fmt: skip
    return cached("peaks", cache_key, lambda: measure_matmul_tflops(device, key))
