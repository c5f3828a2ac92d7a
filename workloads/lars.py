"""LARS: Layer-wise Adaptive Rate Scaling.

You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks" (2017,
arXiv:1708.03888), Algorithm 1. For every parameter tensor ``w`` with gradient ``g``:

    λ = η·‖w‖ / (‖g‖ + β·‖w‖ + eps)          (λ = 1 where ‖w‖ = 0 or ‖g‖ = 0)
    v ← m·v + lr·λ·(g + β·w)
    w ← w − v

In a param group with ``lars_exclude=True`` (biases and BatchNorm parameters, see
``lars_param_groups``) there is no trust ratio and no weight decay: ``v ← m·v + lr·g``.

Reference implementations for comparison: NVIDIA's LARC (apex), timm's ``Lars``. This one
keeps every hyperparameter in ``param_groups`` (Horovod rebuilds optimizers from them) and
leaves ``p.grad`` untouched.

The step is bound by memory traffic, so it is written to touch each element as few times as
possible: the trust ratio needs a pass that reads w and g, the update reads w, g and v and
writes w and v.

- On CPU, tensor by tensor: ‖w‖ and ‖g‖ (BLAS dots), λ on the host, then torch's fused SGD
  kernel (``torch._fused_sgd_``, what ``SGD(fused=True)`` runs) does the whole update in one
  pass while w and g are still in cache. Algorithm 1's update is that kernel's with lr = 1,
  weight decay β and dampening 1 − lr·λ: ``v ← m·v + (1 − dampening)·(g + β·w)``,
  ``w ← w − v``. Reading λ on the host is free on CPU and a synchronisation on a GPU, hence
  CPU only.
- Elsewhere (GPUs), ``torch._foreach_*`` kernels over the whole group with the per-tensor
  scales kept as device tensors: ``step`` never reads a tensor value on the host.
- On CUDA with ``fused=True``, two Triton kernels per cache-sized block of tensors
  (``workloads.lars_triton``): the norms, then the update while w and g are still in L2, so
  memory sees about fused SGD's traffic; no host read either. Opt-in until measured on a GPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim import Optimizer

from larsbench.core.spec import RunSpec
from larsbench.workloads.component import LayerStats, OptimizerComponent
from larsbench.workloads.layer_norms import TakesShards, adapts, group_params, reduce_norms, views
from larsbench.workloads.multi_tensor import laid_out_alike, norms, squared_norm


class LARS(TakesShards, Optimizer):
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
        fused: the update's implementation, as torch.optim's ``fused``/``foreach``: None (the
            default) runs torch's fused kernel where every tensor of a group is on the CPU and
            laid out alike, else the foreach kernels; False always the foreach kernels; True
            the device's fused kernel (CPU: torch's fused SGD kernel; CUDA: the Triton kernels
            of ``workloads.lars_triton``), and an error for a group it cannot take.
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
        fused: bool | None = None,
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
            fused=fused,
        )
        super().__init__(params, defaults)
        # The latest step's per-tensor statistics, one entry per LARS group (see ``LayerStats``):
        # values the step computes anyway, so keeping them costs no pass over the parameters
        # and, off the CPU, no host read. Telemetry reads them every k steps.
        self.last_stats: list[LayerStats] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("fused", None)  # checkpoints written before the option existed

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.shards is not None:
            stats = self._sharded_step()
            if adapts(self.param_groups):
                self.last_stats = stats
            return loss
        stats = []
        for group in self.param_groups:
            params, grads = group_params(group)
            if not params:
                continue
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LARS does not support sparse gradients")
            bufs = self._momentum_buffers(params) if group["momentum"] else None
            step = _select_step(group["fused"], params, grads, bufs)
            layer_stats = step(params, grads, bufs, group)
            if layer_stats is not None:
                stats.append(layer_stats)
        if adapts(self.param_groups):
            self.last_stats = stats
        return loss

    def _sharded_step(self) -> list[LayerStats]:
        """The step over sharded state (``use_shards``): excluded groups are element-wise and
        step as usual; the adapted groups' layer norms are summed over every rank's pieces in
        one collective, then each piece is updated with its layer's λ: on CPU by torch's fused
        SGD kernel piece by piece (λ read on the host, free there), elsewhere by the foreach
        kernels with λ on the device."""
        assert self.shards is not None
        adapted = []
        for group in self.param_groups:  # the same groups, in the same order, on every rank
            params, grads = group_params(group)
            bufs = self._momentum_buffers(params) if params and group["momentum"] else None
            if group["lars_exclude"]:
                if params:
                    _select_step(group["fused"], params, grads, bufs)(params, grads, bufs, group)
                continue
            located, layers = self.located(params)
            pieces_v = views(bufs, located) if bufs is not None else None
            adapted.append((group, views(params, located), views(grads, located), pieces_v, layers))
        if not adapted:
            return []
        reduced = reduce_norms(self.shards, [(w, g, layers) for _, w, g, _, layers in adapted])
        stats = []
        for (group, w, g, v, layers), (w_norm, g_norm, member) in zip(adapted, reduced):
            lr, beta = group["lr"], group["weight_decay"]
            trust = _trust_ratios(w_norm, g_norm, beta, group["trust_coefficient"], group["eps"])
            if w:
                scale = (trust * lr).index_select(0, layers)
                kernel = FUSED_KERNELS["cpu"]
                if group["fused"] is not False and kernel.able(w, g, v):
                    for wi, gi, vi, si in zip(w, g, v or itertools.repeat(None), scale.tolist()):
                        _fused_sgd([wi], [gi], None if vi is None else [vi], si, beta, group["momentum"])
                elif v is None:
                    _plain_update(w, g, scale.to(w[0].dtype), lr, beta)
                else:
                    _momentum_update(w, g, v, scale.to(w[0].dtype), lr, beta, group["momentum"])
            stats.append(LayerStats(list(self.shards.layers), w_norm, g_norm, trust, lr, member=member))
        return stats

    def _momentum_buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                # v starts at zero: the first step gives v = lr·λ·(g + β·w), the update itself
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        return bufs


def _trust_ratios(w_norm: torch.Tensor, g_norm: torch.Tensor, beta: float, eta: float, eps: float) -> torch.Tensor:
    """λ for every tensor, as one 1-D device tensor."""
    # torch.where instead of a Python branch: no host read of the norms.
    return torch.where(
        (w_norm > 0) & (g_norm > 0), eta * w_norm / (g_norm + beta * w_norm + eps), torch.ones_like(w_norm)
    )


def _trust_ratio(w_norm: float, g_norm: float, beta: float, eta: float, eps: float) -> float:
    """λ for one tensor from host floats: ``_trust_ratios`` for the fused path."""
    return eta * w_norm / (g_norm + beta * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0


class FusedKernel(NamedTuple):
    """A device's fused step: whether it can take a group, the step, whether ``fused=None``
    picks it, and what it needs (for the error when ``fused=True`` and it cannot)."""

    able: Callable[[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None], bool]
    step: Callable[..., LayerStats | None]
    default: bool
    needs: str


def _select_step(
    fused: bool | None, params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None
) -> Callable[..., LayerStats | None]:
    if fused is False:
        return _foreach_step
    device = params[0].device.type
    kernel = FUSED_KERNELS.get(device)
    if kernel is not None and (fused or kernel.default) and kernel.able(params, grads, bufs):
        return kernel.step
    if fused:
        needs = kernel.needs if kernel else f"a device with a fused kernel ({', '.join(FUSED_KERNELS)}), not {device}"
        raise RuntimeError(f"LARS(fused=True) needs {needs}; use fused=None to fall back to the foreach kernels")
    return _foreach_step


def _cpu_fused_able(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None) -> bool:
    """Whether ``_fused_step`` can take this group: CPU tensors laid out alike."""
    return (
        hasattr(torch, "_fused_sgd_")
        and all(p.device.type == "cpu" for p in params)
        and laid_out_alike(params, grads, bufs)
    )


def _triton_able(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None) -> bool:
    try:
        from larsbench.workloads import lars_triton  # imports Triton: only when asked for
    except ImportError:
        return False
    return lars_triton.able(params, grads, bufs)


def _triton_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, group: dict[str, Any]
) -> LayerStats | None:
    from larsbench.workloads import lars_triton

    computed = lars_triton.step(params, grads, bufs, group)
    return None if computed is None else LayerStats(params, *computed, group["lr"])


def _fused_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, group: dict[str, Any]
) -> LayerStats | None:
    """The CPU step, tensor by tensor: ‖w‖ and ‖g‖, λ on the host, then torch's fused SGD
    kernel while w and g are still in cache (measured on ResNet-50's parameters: about 8% faster
    than all norms first, then all updates). λ = 1 and β = 0 in an excluded group."""
    lr, momentum = group["lr"], group["momentum"]
    if group["lars_exclude"]:
        _fused_sgd(params, grads, bufs, lr, 0.0, momentum)
        return None
    beta, eta, eps = group["weight_decay"], group["trust_coefficient"], group["eps"]
    rows: list[tuple[float, float, float]] = []
    for p, g, v in zip(params, grads, bufs or itertools.repeat(None)):
        w_norm, g_norm = math.sqrt(squared_norm(p).item()), math.sqrt(squared_norm(g).item())
        trust = _trust_ratio(w_norm, g_norm, beta, eta, eps)
        _fused_sgd([p], [g], None if v is None else [v], lr * trust, beta, momentum)
        rows.append((w_norm, g_norm, trust))
    w_norm, g_norm, trust = torch.tensor(rows, dtype=params[0].dtype).unbind(1)
    return LayerStats(params, w_norm, g_norm, trust, lr)


def _fused_sgd(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None,
    scale: float, beta: float, momentum: float,
) -> None:  # fmt: skip
    """Algorithm 1's update with one scale s = lr·λ, in torch's fused SGD kernel: with momentum
    ``v ← m·v + (1 − dampening)·(g + β·w)``, ``w ← w − 1·v`` with dampening = 1 − s (the
    kernel forms 1 − dampening in double precision, so s comes back to within 1e-16 of itself
    before it is rounded to the tensors' dtype); without momentum ``w ← w − s·(g + β·w)``."""
    torch._fused_sgd_(
        params, grads, bufs or [], weight_decay=beta, momentum=momentum, lr=1.0 if momentum else scale,
        dampening=1.0 - scale if momentum else 0.0, nesterov=False, maximize=False, is_first_step=False,
    )  # fmt: skip


def _foreach_step(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, group: dict[str, Any]
) -> LayerStats | None:
    """The step for any device with ``torch._foreach_*`` kernels over the whole group; the
    per-tensor scales s = lr·λ stay device tensors, so nothing is read on the host."""
    lr, momentum = group["lr"], group["momentum"]
    if group["lars_exclude"]:
        scale, beta, stats = None, 0.0, None
    else:
        beta = group["weight_decay"]
        w_norm, g_norm = norms(params), norms(grads)
        trust = _trust_ratios(w_norm, g_norm, beta, group["trust_coefficient"], group["eps"])
        scale, stats = trust * lr, LayerStats(params, w_norm, g_norm, trust, lr)
    if bufs is None:
        _plain_update(params, grads, scale, lr, beta)
    else:
        _momentum_update(params, grads, bufs, scale, lr, beta, momentum)
    return stats


def _momentum_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor],
    scale: torch.Tensor | None,
    lr: float,
    beta: float,
    momentum: float,
) -> None:
    """v ← m·v + s·g (+ s·β·w), then w ← w − v, with s = lr·λ as device tensors."""
    torch._foreach_mul_(bufs, momentum)
    if scale is None:  # excluded group: one float scale
        torch._foreach_add_(bufs, grads, alpha=lr)
    else:
        ratio = scale[:, None]
        torch._foreach_addcmul_(bufs, grads, list(ratio.unbind(0)))
        if beta:
            torch._foreach_addcmul_(bufs, params, list((ratio * beta).unbind(0)))
    torch._foreach_sub_(params, bufs)


def _plain_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], scale: torch.Tensor | None, lr: float, beta: float
) -> None:
    """Without momentum: w ← w − s·(g + β·w), as w·(1 − s·β) − s·g."""
    if scale is None:
        torch._foreach_add_(params, grads, alpha=-lr)
        return
    ratio = scale[:, None]
    if beta:
        torch._foreach_mul_(params, list((1 - ratio * beta).unbind(0)))
    torch._foreach_addcmul_(params, grads, list(ratio.unbind(0)), value=-1)


FUSED_KERNELS: dict[str, FusedKernel] = {
    "cpu": FusedKernel(
        _cpu_fused_able, _fused_step, True, "CPU tensors with w, g and the momentum buffer in one dtype and one dense layout"
    ),
    "cuda": FusedKernel(
        _triton_able, _triton_step, False,
        "Triton, and w, g and the momentum buffer in one dtype (fp32, fp16 or bf16) and one dense layout on one GPU",
    ),
}  # fmt: skip


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


def build(groups: list[dict[str, Any]], spec: RunSpec, peak_lr: float) -> LARS:
    return LARS(groups, lr=peak_lr, momentum=spec.momentum, trust_coefficient=spec.trust_coefficient, eps=spec.lars_eps)


def mlperf_keys(spec: RunSpec, peak_lr: float, total_steps: int, warmup_steps: int) -> dict[str, Any]:
    """The ``lars_*`` keys MLPerf's ResNet rules name (closed_resnet_lars.yaml)."""
    return {
        "lars_opt_base_learning_rate": peak_lr,
        "lars_opt_end_learning_rate": spec.end_lr,
        "lars_opt_learning_rate_decay_poly_power": spec.poly_power,
        "lars_opt_learning_rate_decay_steps": total_steps - warmup_steps,
        "lars_opt_momentum": spec.momentum,
        "lars_opt_weight_decay": spec.weight_decay,
        "lars_epsilon": spec.lars_eps,
        "lars_opt_learning_rate_warmup_epochs": spec.warmup_epochs,
        "lars_opt_trust_coefficient": spec.trust_coefficient,
    }


COMPONENT = OptimizerComponent(
    name="lars", summary="LARS (You, Gitman & Ginsburg 2017, Algorithm 1)", build=build, mlperf_keys=mlperf_keys,
    layerwise=True, telemetry=True, shards=True,
)  # fmt: skip
