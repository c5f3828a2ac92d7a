"""The optimizer a run asks for, built the same way for every backend."""

from __future__ import annotations

import torch
from torch import nn

from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.schedules import scaled_lr


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    base_lr: float,
    scaling_rule: str,
    global_batch: int,
    reference_batch: int,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float,
    lars_eps: float,
) -> tuple[torch.optim.Optimizer, float]:
    """Returns the optimizer and its peak LR (the base LR after the scaling rule).

    Both optimizers get the same two parameter groups, so the SGD baselines, like LARS, put no
    weight decay on biases and BatchNorm parameters.
    """
    peak_lr = scaled_lr(base_lr, scaling_rule, global_batch, reference_batch)
    groups = lars_param_groups(model, weight_decay)
    if name == "lars":
        optimizer: torch.optim.Optimizer = LARS(
            groups, lr=peak_lr, momentum=momentum, trust_coefficient=trust_coefficient, eps=lars_eps
        )
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=peak_lr, momentum=momentum, foreach=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose lars or sgd")
    return optimizer, peak_lr
