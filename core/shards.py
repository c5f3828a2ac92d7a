"""Where a rank's share of sharded optimizer state lies within the model's layers.

ZeRO-1/2 (DeepSpeed) flatten each parameter group into one buffer and cut it into equal
partitions, one per rank, across layer boundaries; torch's ZeroRedundancyOptimizer hands each
rank whole parameters. Either way the optimizer on a rank steps tensors that hold *pieces* of
the model's layers. A backend describes them in a ``ShardLayout``; a layer-wise optimizer
(LARS, LAMB) takes it (``use_shards``), sums each layer's partial squared norms over its pieces
and then over the ranks, all layers at once in one ``all_reduce``, so every rank gets every
layer's exact norms, the ones an unsharded run computes.

Plain data, shared by backends (which build it) and workloads (which read it): neither layer
knows the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Piece:
    """Elements ``start`` to ``start + numel`` of a stepped tensor (flattened) are a slice of
    layer ``layer`` (an index into ``ShardLayout.layers``)."""

    layer: int
    start: int
    numel: int


@dataclass(frozen=True)
class ShardLayout:
    """``layers``: every trainable parameter of the model, in ``model.parameters()`` order, the
    same on every rank (telemetry names them). ``pieces``: for each tensor this rank's
    optimizer steps (keyed by ``id``), the layer slices it holds, in order. ``all_reduce``: sums
    a tensor in place over the ranks that share the state, through the backend's own
    collectives; one call is one collective (the backend times it). ``device``: where the
    norms are reduced."""

    layers: tuple[torch.Tensor, ...]
    pieces: dict[int, tuple[Piece, ...]]
    all_reduce: Callable[[torch.Tensor], None]
    device: torch.device

    def located(self, tensors: list[torch.Tensor]) -> list[tuple[int, Piece]]:
        """(index into ``tensors``, piece) for every piece of these tensors, in order."""
        return [(i, piece) for i, t in enumerate(tensors) for piece in self.pieces.get(id(t), ())]
