"""LAMB: Layer-wise Adaptive Moments for Batch training.

You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer and Hsieh, "Large Batch
Optimization for Deep Learning: Training BERT in 76 minutes" (ICLR 2020, arXiv:1904.00962),
Algorithm 2, with φ the identity. For every parameter tensor ``w`` with gradient ``g``, at step t:

    m ← β1·m + (1 − β1)·g              v ← β2·v + (1 − β2)·g²
    m̂ = m / (1 − β1^t)                 v̂ = v / (1 − β2^t)
    u = m̂ / (√v̂ + ε) + λ·w             (Adam's direction, weight decay added to it)
    w ← w − lr · r · u,    r = ‖w‖ / ‖u‖  (r = 1 where ‖w‖ = 0 or ‖u‖ = 0)

In a group with ``lars_exclude=True`` (biases and BatchNorm parameters, the tensors LARS
excludes: ``lars.lars_param_groups``) there is no trust ratio and no weight decay:
``w ← w − lr·m̂/(√v̂ + ε)``. Every hyperparameter lives in ``param_groups`` (Horovod rebuilds
optimizers from them), the step count in each tensor's state, and ``p.grad`` is left untouched.

Two implementations of the same step, as for LARS:

- on CPU (``fused=None``, the default there), tensor by tensor: the moments, the direction,
  both norms (BLAS dots) and the update while the tensor is in cache, r on the host;
- elsewhere (GPUs, or ``fused=False``), ``torch._foreach_*`` kernels over the whole group with
  the trust ratios kept as device tensors: ``step`` never reads a tensor value on the host.

Under sharded state (``use_shards``, ZeRO-1/2) the norms of each layer are summed over every
rank's pieces of it in one collective per step (``workloads.layer_norms``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from larsbench.core.spec import RunSpec
from larsbench.workloads.component import LayerStats, OptimizerComponent
from larsbench.workloads.layer_norms import TakesShards, adapts, group_params, reduce_norms, views
from larsbench.workloads.multi_tensor import norms, squared_norm


class LAMB(TakesShards, Optimizer):
    """LAMB (paper's Algorithm 2).

    Args:
        params: parameters or param-group dicts (``lars.lars_param_groups``' two groups).
        lr: global learning rate (the schedule writes it into each group every step).
        betas: (β1, β2), the decay of the first and second moments (default (0.9, 0.999)).
        eps: ε, added to √v̂ (default 1e-6, the paper's).
        weight_decay: λ, added to the direction before the trust ratio (default 0).
        lars_exclude: group-level flag; excluded groups get Adam's step without weight decay and
            without a trust ratio (default False).
        fused: None (the default) steps CPU tensors one by one and others with the foreach
            kernels; False always the foreach kernels; True the per-tensor CPU step, an error
            for tensors elsewhere.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        lars_exclude: bool = False,
        fused: bool | None = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas} (need two values in [0, 1))")
        if eps < 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, lars_exclude=lars_exclude, fused=fused)
        super().__init__(params, defaults)
        # The latest step's per-layer statistics (``LayerStats``, one per adapted group): what
        # the step computed anyway, for telemetry.
        self.last_stats: list[LayerStats] = []

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stats, adapted = [], []
        for group in self.param_groups:  # under sharding: the same groups, in the same order, on every rank
            params, grads = group_params(group)
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LAMB does not support sparse gradients")
            if self.shards is None:
                if params:
                    step = _per_tensor_step if _use_per_tensor(group["fused"], params) else _foreach_step
                    found = step(params, grads, self._moments(params), group)
                    stats += [found] if found is not None else []
                continue
            updates = _directions(params, grads, self._moments(params), group) if params else []
            if group["lars_exclude"]:
                if params:
                    torch._foreach_add_(params, updates, alpha=-group["lr"])
                continue
            located, layers = self.located(params)
            adapted.append((group, views(params, located), views(updates, located), layers))
        if adapted:
            reduced = reduce_norms(self.shards, [(w, u, layers) for _, w, u, layers in adapted])
            for (group, w, u, layers), (w_norm, u_norm, member) in zip(adapted, reduced):
                trust = _trust_ratios(w_norm, u_norm)
                if w:
                    _apply(w, u, (trust * group["lr"]).index_select(0, layers).to(w[0].dtype))
                stats.append(LayerStats(list(self.shards.layers), w_norm, u_norm, trust, group["lr"], "update_norm", member))
        if adapts(self.param_groups):
            self.last_stats = stats
        return loss

    def _moments(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        """Each tensor's m and v (zeros at first) and its step count after this step."""
        firsts, seconds, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            firsts.append(state["exp_avg"])
            seconds.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return firsts, seconds, steps


def _use_per_tensor(fused: bool | None, params: list[torch.Tensor]) -> bool:
    on_cpu = all(p.device.type == "cpu" for p in params)
    if fused and not on_cpu:
        raise RuntimeError("LAMB(fused=True) steps CPU tensors one by one; use fused=None for the foreach kernels off the CPU")
    return fused is not False and on_cpu


def _trust_ratios(w_norm: torch.Tensor, u_norm: torch.Tensor) -> torch.Tensor:
    """r = ‖w‖/‖u‖ for every tensor (1 where either is 0), on the device."""
    return torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))


def _directions(
    params: list[torch.Tensor], grads: list[torch.Tensor], moments: tuple[list, list, list[int]], group: dict[str, Any]
) -> list[torch.Tensor]:
    """Update the moments and return u = m̂/(√v̂ + ε) (+ λ·w in an adapted group), new tensors."""
    (beta1, beta2), eps = group["betas"], group["eps"]
    firsts, seconds, steps = moments
    torch._foreach_lerp_(firsts, grads, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    torch._foreach_mul_(seconds, beta2)
    torch._foreach_addcmul_(seconds, grads, grads, value=1 - beta2)
    denominators = torch._foreach_sqrt(seconds)
    torch._foreach_div_(denominators, [math.sqrt(1 - beta2**t) for t in steps])
    torch._foreach_add_(denominators, eps)
    updates = torch._foreach_div(firsts, denominators)
    torch._foreach_div_(updates, [1 - beta1**t for t in steps])
    if not group["lars_exclude"] and group["weight_decay"]:
        torch._foreach_add_(updates, params, alpha=group["weight_decay"])
    return updates


def _apply(params: list[torch.Tensor], updates: list[torch.Tensor], scale: torch.Tensor) -> None:
    """w ← w − s·u with one device scale per tensor."""
    torch._foreach_mul_(updates, list(scale[:, None].unbind(0)))
    torch._foreach_sub_(params, updates)


def _foreach_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], moments: tuple[list, list, list[int]], group: dict[str, Any]
) -> LayerStats | None:
    """The step over the whole group in foreach kernels; no host read."""
    updates = _directions(params, grads, moments, group)
    if group["lars_exclude"]:
        torch._foreach_add_(params, updates, alpha=-group["lr"])
        return None
    w_norm, u_norm = norms(params), norms(updates)
    trust = _trust_ratios(w_norm, u_norm)
    _apply(params, updates, trust * group["lr"])
    return LayerStats(params, w_norm, u_norm, trust, group["lr"], "update_norm")


def _per_tensor_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], moments: tuple[list, list, list[int]], group: dict[str, Any]
) -> LayerStats | None:
    """The CPU step, tensor by tensor while it is in cache; r computed on the host."""
    (beta1, beta2), eps, lr, decay = group["betas"], group["eps"], group["lr"], group["weight_decay"]
    exclude = group["lars_exclude"]
    rows = []
    for p, g, m, v, t in zip(params, grads, *moments):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        u = m.div(v.sqrt().div_(math.sqrt(1 - beta2**t)).add_(eps)).div_(1 - beta1**t)
        if exclude:
            p.add_(u, alpha=-lr)
            continue
        if decay:
            u.add_(p, alpha=decay)
        w_norm, u_norm = math.sqrt(squared_norm(p).item()), math.sqrt(squared_norm(u).item())
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        p.add_(u, alpha=-lr * trust)
        rows.append((w_norm, u_norm, trust))
    if exclude:
        return None
    w_norm, u_norm, trust = torch.tensor(rows, dtype=params[0].dtype).unbind(1)
    return LayerStats(params, w_norm, u_norm, trust, lr, "update_norm")


# β2 and ε as the paper sets them (a run's momentum setting is β1).
BETA2, EPS = 0.999, 1e-6


def build(groups: list[dict[str, Any]], spec: RunSpec, peak_lr: float) -> LAMB:
    return LAMB(groups, lr=peak_lr, betas=(spec.momentum, BETA2), eps=EPS)


def mlperf_keys(spec: RunSpec, peak_lr: float, total_steps: int, warmup_steps: int) -> dict[str, Any]:
    """The ``opt_lamb_*`` keys MLPerf's BERT rules name (closed_bert.yaml), with the schedule's."""
    return {
        "opt_lamb_weight_decay_rate": spec.weight_decay,
        "opt_lamb_beta_1": spec.momentum,
        "opt_lamb_beta_2": BETA2,
        "opt_lamb_epsilon": EPS,
        "opt_lamb_learning_rate_decay_poly_power": spec.poly_power,
        "opt_lamb_learning_rate_min": spec.end_lr,
        "opt_learning_rate_training_steps": total_steps,
    }


COMPONENT = OptimizerComponent(
    name="lamb", summary="LAMB (You et al. 2019, Algorithm 2)", build=build, mlperf_keys=mlperf_keys,
    layerwise=True, telemetry=True, shards=True,
)  # fmt: skip
