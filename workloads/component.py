"""An optimizer as a registered component, the way a backend is one (``backends.registry``).

A component is a name, a builder from the run spec, and the traits the rest of the suite asks
instead of testing the optimizer's name:

- ``layerwise``: it scales each layer's step by a trust ratio from whole-layer norms (LARS,
  LAMB), so it needs every layer's norms even when its state is sharded;
- ``telemetry``: its ``step`` keeps the per-layer statistics it used (``last_stats``: a list of
  ``LayerStats``), which the loop writes to the run's telemetry file;
- ``shards``: it trains exactly as unsharded when ZeRO-1/2 or torch's ZeroRedundancyOptimizer
  hand it slices of the model (true for element-wise optimizers; a layer-wise one must take a
  ``ShardLayout`` through ``use_shards`` and reduce its layers' norms across the ranks);
- ``mlperf_keys``: the optimizer's hyperparameters under the keys MLPerf's rules name, with the
  values the run uses.

Adding an optimizer is one file that defines it and its ``COMPONENT``, and one entry in
``workloads.optimizers.OPTIMIZERS`` (docs/architecture.md has the recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from larsbench.core.spec import RunSpec

# (param groups, the run spec, the peak LR after the scaling rule) → the optimizer
Builder = Callable[[list[dict[str, Any]], RunSpec, float], torch.optim.Optimizer]
# (the run spec, the peak LR, the run's optimizer steps, its warm-up steps) → {MLPerf key: value}
MLPerfKeys = Callable[[RunSpec, float, int, int], dict[str, Any]]


@dataclass(frozen=True)
class OptimizerComponent:
    name: str
    summary: str  # one line: what it is, for help texts and docs
    build: Builder
    mlperf_keys: MLPerfKeys
    layerwise: bool = False
    telemetry: bool = False
    shards: bool = True


class LayerStats(NamedTuple):
    """One adapted group's step, as telemetry reads it: its layers (parameter tensors, in
    ``params`` order), ‖w‖ and the norm the trust ratio divides by (1-D device tensors), the
    trust ratios and the global LR; the effective LR is lr·ratio. ``norm_name`` names the
    second norm in telemetry rows (``g_norm`` for LARS, ``update_norm`` for LAMB). ``member``:
    which layers belong to the group, where ``params`` lists every layer of the model (a
    sharded step knows every layer's norms but steps only its own group's)."""

    params: list[torch.Tensor]
    w_norm: torch.Tensor
    g_norm: torch.Tensor
    trust: torch.Tensor
    lr: float
    norm_name: str = "g_norm"
    member: torch.Tensor | None = None
