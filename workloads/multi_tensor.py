"""What the layer-wise optimizers' multi-tensor steps share: per-tensor norms of many tensors at
once, and whether a fused kernel can walk w, g and a state buffer together."""

from __future__ import annotations

import itertools

import torch


def squared_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t‖² as a 0-dim tensor. On CPU a BLAS dot: about twice as fast as ``_foreach_norm``
    there, and closer to the exact value."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        flat = t.view(-1)
        return torch.dot(flat, flat)
    return torch.linalg.vector_norm(t).square()


def squared_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """‖t‖² for every tensor, stacked (one device tensor, no host read)."""
    if tensors[0].device.type == "cpu":
        return torch.stack([squared_norm(t) for t in tensors])
    return torch.stack(torch._foreach_norm(tensors)).square_()


def norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """‖t‖ for every tensor, stacked."""
    if tensors[0].device.type == "cpu":
        return torch.stack([squared_norm(t) for t in tensors]).sqrt_()
    return torch.stack(torch._foreach_norm(tensors))


def laid_out_alike(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None) -> bool:
    """Whether w, g and v of each tensor share a device, a dtype and one dense layout: what a
    fused kernel needs, walking the three buffers in memory order."""
    return all(
        g.device == p.device
        and g.dtype == p.dtype
        and g.stride() == p.stride()
        and (p.is_contiguous() or p.is_contiguous(memory_format=torch.channels_last))
        and (v is None or (v.device == p.device and v.dtype == p.dtype and v.stride() == p.stride()))
        for p, g, v in zip(params, grads, bufs or itertools.repeat(None))
    )
