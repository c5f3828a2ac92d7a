"""LARS: Layer-wise Adaptive Rate Scaling.

You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks" (2017,
arXiv:1708.03888), Algorithm 1. For every parameter tensor ``w`` with gradient ``g``:

    λ = η·‖w‖ / (‖g‖ + β·‖w‖ + eps)          (λ = 1 where ‖w‖ = 0 or ‖g‖ = 0)
    v ← m·v + lr·λ·(g + β·w)
    w ← w − v

In a param group with ``lars_exclude=True`` (biases and BatchNorm parameters, see
``lars_param_groups``) there is no trust ratio and no weight decay: ``v ← m·v + lr·g``.

Reference implementations for comparison: NVIDIA's LARC (apex), timm's ``Lars``. This one
keeps every hyperparameter in ``param_groups`` (Horovod rebuilds optimizers from them), works
on whole lists of tensors with ``torch._foreach_*`` kernels, never reads a tensor value on the
host (no GPU synchronisation inside ``step``), and leaves ``p.grad`` untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS with momentum (paper's Algorithm 1).

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate γ (the schedule writes it into each group every step). It has
            a default because Horovod rebuilds the optimizer as ``LARS(param_groups)``; the
            groups' own ``lr`` then wins.
        momentum: momentum m (default 0.9).
        weight_decay: weight decay β, inside the trust ratio and the update (default 0).
        trust_coefficient: η, the trust coefficient (default 0.001).
        eps: added to the trust-ratio denominator (default 0).
        lars_exclude: group-level flag; excluded groups get plain momentum SGD without weight
            decay (default False).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
        lars_exclude: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum} (need 0 <= momentum < 1)")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if trust_coefficient <= 0.0:
            raise ValueError(f"Invalid trust_coefficient: {trust_coefficient}")
        if eps < 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=lars_exclude,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LARS does not support sparse gradients")
            if group["lars_exclude"]:
                updates = torch._foreach_mul(grads, group["lr"])
            else:
                updates = self._scaled_updates(params, grads, group)
            self._apply_momentum(params, updates, group["momentum"])
        return loss

    @staticmethod
    def _scaled_updates(
        params: list[torch.Tensor], grads: list[torch.Tensor], group: dict[str, Any]
    ) -> list[torch.Tensor]:
        """lr·λ·(g + β·w) for every tensor, with λ computed per tensor on the device."""
        beta, eta = group["weight_decay"], group["trust_coefficient"]
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        # torch.where instead of a Python branch: no host read of the norms.
        trust = torch.where(
            (w_norm > 0) & (g_norm > 0),
            eta * w_norm / (g_norm + beta * w_norm + group["eps"]),
            torch.ones_like(w_norm),
        )
        scale = (trust * group["lr"]).unbind(0)
        if not beta:
            return list(torch._foreach_mul(grads, scale))
        updates = torch._foreach_add(grads, params, alpha=beta)
        torch._foreach_mul_(updates, scale)
        return updates

    def _apply_momentum(self, params: list[torch.Tensor], updates: list[torch.Tensor], m: float) -> None:
        if m == 0.0:
            torch._foreach_sub_(params, updates)
            return
        bufs, buf_updates = [], []
        for p, u in zip(params, updates):
            state = self.state[p]
            if "momentum_buffer" in state:
                bufs.append(state["momentum_buffer"])
                buf_updates.append(u)
            else:
                # v starts at zero, so the first v is the update itself.
                state["momentum_buffer"] = u
        if bufs:
            torch._foreach_mul_(bufs, m)
            torch._foreach_add_(bufs, buf_updates)
        torch._foreach_sub_(params, [self.state[p]["momentum_buffer"] for p in params])


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights (LARS + weight decay) and, excluded, every tensor with ndim ≤ 1
    (BatchNorm weights and biases, all biases), as in the paper's reference setups."""
    decay, excluded = [], []
    for param in model.parameters():
        if param.requires_grad:
            (excluded if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]
