"""The device a rank computes on, and waiting for it."""

from __future__ import annotations

import torch

from larsbench.core.errors import ConfigError


def pick_device(requested: str, local_rank: int, key: str = "device") -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda when present) → this rank's device."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(key, "cuda was requested but no CUDA device is visible; use --device cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def means_cpu(requested: str) -> bool:
    """Whether ``requested`` (``cpu``, ``cuda`` or ``auto``) is the CPU on this machine."""
    return requested == "cpu" or (requested == "auto" and not torch.cuda.is_available())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose work is never queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
