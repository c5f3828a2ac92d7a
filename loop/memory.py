"""Memory per rank: what the optimizer's state holds, and the process's peaks.

- optimizer state: bytes of every tensor in the state of the optimizer that really steps
  (momentum, Adam's moments), behind the backend's wrappers: under ZeRO-1/2 or torch's
  ZeroRedundancyOptimizer, this rank's shard only. DeepSpeed's fp32 copy of the partition it
  steps is its master weights, not optimizer state, and is not counted.
- peak host RSS: the rank process's peak resident set (``getrusage``: the kernel's high-water
  mark since the process started; data-loader workers are processes of their own).
- peak CUDA memory: the most torch's allocator held for tensors on the rank's device
  (``torch.cuda.max_memory_allocated``); none on a CPU.
"""

from __future__ import annotations

import resource
import sys

import torch


def innermost(optimizer: object) -> object:
    """The optimizer that keeps the state, behind DeepSpeed's (``.optimizer``) or torch's
    ZeroRedundancyOptimizer's (``.optim``) wrapper; Horovod's subclasses it."""
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "optim", None)
        if inner is None:
            return optimizer
        optimizer = inner
    return optimizer


def optimizer_state_bytes(optimizer: object) -> int:
    """Bytes of the tensors in the optimizer's state (each storage counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for state in getattr(innermost(optimizer), "state", {}).values():
        for value in state.values() if isinstance(state, dict) else ():
            if isinstance(value, torch.Tensor):
                key = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
                if key not in seen:
                    seen.add(key)
                    total += value.untyped_storage().nbytes()
    return total


def peak_host_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_cuda_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
