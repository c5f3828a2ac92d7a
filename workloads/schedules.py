"""Learning-rate scaling rules and the per-step warm-up + polynomial-decay schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALING_RULES = ("none", "linear", "sqrt")


def scaled_lr(base_lr: float, rule: str, global_batch: int, reference_batch: int = 256) -> float:
    """Peak LR for a global batch: ``linear`` base·B/ref (Goyal et al.), ``sqrt`` base·√(B/ref)."""
    ratio = global_batch / reference_batch
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"unknown scaling rule {rule!r}; choose one of {', '.join(SCALING_RULES)}")


@dataclass(frozen=True)
class WarmupPolySchedule:
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then
    ``end_lr + (peak_lr − end_lr)·(1 − progress)^power`` until ``total_steps`` (the LARS
    paper's poly(2) policy). ``step`` is the 0-based index of the optimizer step about to run."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    end_lr: float = 0.0
    power: float = 2.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}), got {self.warmup_steps}"
            )

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - progress) ** self.power

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for index, group in enumerate(optimizer.param_groups):
            if "lr" not in group:
                raise KeyError(f"param group {index} has no 'lr' entry to schedule")
            group["lr"] = lr
        return lr
