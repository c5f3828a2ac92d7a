"""Optimizer steps on ResNet-50's parameters (CPU, fp32): LARS, foreach and fused SGD, and a
plain per-parameter LARS loop, each on its own copies of the parameters with fixed gradients."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model

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


def _optimizers(kind: str) -> Callable[[], None]:
    """One step of ``kind`` on a fresh copy of the parameters, already stepped twice (momentum
    buffers exist)."""
    if kind in ("sgd_foreach", "sgd_fused"):
        fused = {"fused": True} if kind == "sgd_fused" else {"foreach": True}
        step = torch.optim.SGD(resnet50_with_grads().parameters(), lr=LR, momentum=MOMENTUM, **fused).step
    elif kind == "lars":
        step = LARS(
            lars_param_groups(resnet50_with_grads(), WEIGHT_DECAY), lr=LR, momentum=MOMENTUM,
            trust_coefficient=TRUST, eps=EPS,
        ).step  # fmt: skip
    else:
        step = LoopLARS(lars_param_groups(resnet50_with_grads(), WEIGHT_DECAY), in_place=kind.endswith("in_place")).step
    step()
    step()
    return step


KINDS = ("sgd_foreach", "sgd_fused", "lars", "lars_loop", "lars_loop_in_place")


def steppers(copies: int = 1) -> dict[str, list[Callable[[], None]]]:
    """name -> one optimizer step on each of ``copies`` copies of the parameters. Where a copy's
    memory lands moves its step time by a few percent on this machine (measured: three LARS
    copies stepped side by side, 21.0 to 23.5 ms per step), so a ratio is best taken over
    several copies of each kind rather than one copy's luck."""
    return {kind: [_optimizers(kind) for _ in range(copies)] for kind in KINDS}


def interleaved_times(steps: dict[str, list[Callable[[], None]]], rounds: int) -> dict[str, list[float]]:
    """Seconds per step, per round: each round steps every copy of every kind once, kind by
    kind in an order that rotates every round, so that load from other processes falls on
    every side alike; a kind's figure for the round is its mean over its copies."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for step in steps[name]:
                step()
            times[name].append((time.perf_counter() - start) / len(steps[name]))
    return times
