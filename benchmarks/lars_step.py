"""Optimizer steps on ResNet-50's parameters (CPU, fp32): LARS, foreach SGD and a plain
per-parameter LARS loop, each on its own copy of the parameters with fixed gradients."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from workloads.lars import LARS, lars_param_groups
from workloads.models import build_model

LR, MOMENTUM, WEIGHT_DECAY, TRUST, EPS = 0.1, 0.9, 5e-4, 0.001, 0.0
NUM_CLASSES = 1000  # ImageNet head: fc is one of the largest tensors


def resnet50_with_grads(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet50", NUM_CLASSES)
    generator = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return model


class LoopLARS:
    """LARS written as a plain per-parameter loop, the paper's Algorithm 1 line by line (as
    ``ReferenceLARS`` in tests/workloads/test_lars.py): ``.norm()`` per tensor read on the host,
    ``update = lr·λ·(g + β·w)`` and ``v = m·v + update`` as new tensors, ``w.sub_(v)``.

    ``in_place=True`` is the tuned variant, written as torch.optim's single-tensor SGD is:
    ``v.mul_(m).add_(g + β·w, alpha=lr·λ)``."""

    def __init__(self, groups: list[dict], in_place: bool = False):
        self.groups = groups
        self.in_place = in_place
        self.buffers: dict[nn.Parameter, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            beta = group["weight_decay"]
            for p in group["params"]:
                g = p.grad
                if group["lars_exclude"]:
                    direction, scale = g, LR
                else:
                    w_norm, g_norm = p.norm().item(), g.norm().item()
                    trust = TRUST * w_norm / (g_norm + beta * w_norm + EPS) if w_norm > 0 and g_norm > 0 else 1.0
                    direction, scale = g + beta * p, LR * trust
                v = self.buffers.get(p)
                if v is None:
                    v = scale * direction
                elif self.in_place:
                    v.mul_(MOMENTUM).add_(direction, alpha=scale)
                else:
                    v = MOMENTUM * v + scale * direction
                self.buffers[p] = v
                p.sub_(v)


def steppers() -> dict[str, Callable[[], None]]:
    """name -> one optimizer step; each already stepped twice (momentum buffers exist)."""
    sgd = torch.optim.SGD(resnet50_with_grads().parameters(), lr=LR, momentum=MOMENTUM, foreach=True)
    lars = LARS(
        lars_param_groups(resnet50_with_grads(), WEIGHT_DECAY), lr=LR, momentum=MOMENTUM,
        trust_coefficient=TRUST, eps=EPS,
    )  # fmt: skip
    loop = LoopLARS(lars_param_groups(resnet50_with_grads(), WEIGHT_DECAY))
    loop_in_place = LoopLARS(lars_param_groups(resnet50_with_grads(), WEIGHT_DECAY), in_place=True)
    steps = {"sgd_foreach": sgd.step, "lars": lars.step, "lars_loop": loop.step, "lars_loop_in_place": loop_in_place.step}
    for step in steps.values():
        step()
        step()
    return steps


def interleaved_times(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Per-step seconds, one step of each in turn per round (the order rotating every round),
    so that load from other processes falls on every side alike."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times
