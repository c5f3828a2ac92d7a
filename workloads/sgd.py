"""Momentum SGD, the baseline LARS and LAMB are compared with: torch's own, with the same two
parameter groups (no weight decay on biases and BatchNorm parameters), under the linear or
square-root LR scaling rule."""

from __future__ import annotations

from typing import Any

import torch

from larsbench.core.spec import RunSpec
from larsbench.workloads.component import OptimizerComponent


def build(groups: list[dict[str, Any]], spec: RunSpec, peak_lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=peak_lr, momentum=spec.momentum, foreach=True)


def mlperf_keys(spec: RunSpec, peak_lr: float, total_steps: int, warmup_steps: int) -> dict[str, Any]:
    """The ``sgd_*`` keys MLPerf's ResNet rules name (closed_resnet_sgd.yaml)."""
    return {
        "sgd_opt_base_learning_rate": peak_lr,
        "sgd_opt_end_learning_rate": spec.end_lr,
        "sgd_opt_learning_rate_decay_poly_power": spec.poly_power,
        "sgd_opt_learning_rate_decay_steps": total_steps - warmup_steps,
        "sgd_opt_momentum": spec.momentum,
        "sgd_opt_weight_decay": spec.weight_decay,
        "model_bn_span": spec.micro_batch_size,  # BatchNorm statistics span one micro-batch
    }


COMPONENT = OptimizerComponent(
    name="sgd", summary="momentum SGD (torch.optim.SGD)", build=build, mlperf_keys=mlperf_keys, shards=True,
)  # fmt: skip
