"""Optimizers by name: every registered component (``workloads.component``), and the one way a
run builds its optimizer, the same for every backend.

Adding an optimizer: a file that defines it and its ``COMPONENT``, and one entry below.
"""

from __future__ import annotations

import torch
from torch import nn

from larsbench.core.errors import ConfigError
from larsbench.core.spec import RunSpec
from larsbench.workloads import lamb, lars, sgd
from larsbench.workloads.component import OptimizerComponent
from larsbench.workloads.lars import lars_param_groups
from larsbench.workloads.schedules import scaled_lr

OPTIMIZERS: dict[str, OptimizerComponent] = {
    component.name: component
    for component in (
        lars.COMPONENT,
        lamb.COMPONENT,
        sgd.COMPONENT,
    )
}


def optimizer_names() -> list[str]:
    return sorted(OPTIMIZERS)


def get_optimizer(name: str) -> OptimizerComponent:
    if name not in OPTIMIZERS:
        raise ConfigError("optimizer", f"unknown optimizer {name!r}; choose one of {', '.join(optimizer_names())}")
    return OPTIMIZERS[name]


def build_optimizer(spec: RunSpec, model: nn.Module) -> tuple[torch.optim.Optimizer, float]:
    """The run's optimizer over ``model`` and its peak LR (the base LR after the scaling rule).

    Every optimizer gets the same two parameter groups (``lars_param_groups``), so the SGD
    baselines, like LARS, put no weight decay on biases and BatchNorm parameters.
    """
    component = get_optimizer(spec.optimizer)
    if spec.lr is None or spec.global_batch_size is None:
        raise ValueError("build_optimizer needs a resolved run spec (suite.config sets lr and global_batch_size)")
    peak_lr = scaled_lr(spec.lr, spec.scaling_rule, spec.global_batch_size, spec.reference_batch_size)
    return component.build(lars_param_groups(model, spec.weight_decay), spec, peak_lr), peak_lr
