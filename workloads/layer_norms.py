"""Per-layer norms over sharded optimizer state (``core.shards``): each rank's pieces of each
layer, summed over the ranks in one collective for every layer of every adapted group.

A layer-wise optimizer's sharded step is then: views of its tensors' pieces (``views``), the
reduced norms (``reduce_norms``), and its usual multi-tensor update over the views with each
piece's scale taken from its layer (``index_select``). Nothing here reads a tensor on the host.
"""

from __future__ import annotations

from typing import Any

import torch

from larsbench.core.shards import Piece, ShardLayout
from larsbench.workloads.multi_tensor import squared_norms


def views(tensors: list[torch.Tensor], located: list[tuple[int, Piece]]) -> list[torch.Tensor]:
    """The piece of each located tensor, as a view (updates through it land in the tensor): a
    whole tensor as itself (whatever its memory layout, channels_last included), a slice of a
    flat buffer as a 1-D view."""
    return [
        tensors[i] if piece.start == 0 and piece.numel == tensors[i].numel() else tensors[i].view(-1).narrow(0, piece.start, piece.numel)
        for i, piece in located
    ]


def layer_index(located: list[tuple[int, Piece]], device: torch.device) -> torch.Tensor:
    """Each piece's layer, as a device tensor (built once, when the layout is taken)."""
    return torch.tensor([piece.layer for _, piece in located], dtype=torch.long, device=device)


def reduce_norms(
    layout: ShardLayout, groups: list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each group ``(a pieces, b pieces, their layers)``: ‖a‖ and ‖b‖ of every layer of the
    model, summed over this rank's pieces and then over the ranks, and which layers the group
    holds on any rank. All groups' partial sums travel in one ``layout.all_reduce``; a rank
    without pieces contributes zeros (it must still call it: the others wait for it). The sums
    are float64 whatever the tensors' dtype: every rank must send the same dtype, and a few
    hundred numbers cost nothing in any precision."""
    count = len(layout.layers)
    dtype = torch.float64
    partial = torch.zeros(len(groups), 3, count, dtype=dtype, device=layout.device)
    for row, (a, b, layers) in zip(partial, groups):
        if not a:
            continue
        row[0].index_add_(0, layers, squared_norms(a).to(dtype))
        row[1].index_add_(0, layers, squared_norms(b).to(dtype))
        row[2].index_add_(0, layers, torch.ones(len(a), dtype=dtype, device=layout.device))
    layout.all_reduce(partial)
    return [(row[0].sqrt(), row[1].sqrt(), row[2] > 0) for row in partial]


class TakesShards:
    """What a layer-wise optimizer mixes in to step sharded state: ``use_shards(layout)`` (the
    backend calls it once, after it partitioned the state), and where each group's pieces are."""

    shards: ShardLayout | None = None

    def use_shards(self, layout: ShardLayout) -> None:
        self.shards = layout
        self._pieces: dict[tuple[int, ...], tuple[list[tuple[int, Piece]], torch.Tensor]] = {}

    def located(self, params: list[torch.Tensor]) -> tuple[list[tuple[int, Piece]], torch.Tensor]:
        """The pieces of ``params`` and their layers (cached: the stepped tensors never move)."""
        assert self.shards is not None
        key = tuple(id(p) for p in params)
        if key not in self._pieces:
            located = self.shards.located(params)
            self._pieces[key] = (located, layer_index(located, self.shards.device))
        return self._pieces[key]


def adapts(groups: list[dict[str, Any]]) -> bool:
    """Whether a call of ``step`` steps a group with a trust ratio: only such a call replaces
    ``last_stats``. DeepSpeed's ZeRO optimizer calls ``step`` once per group, and the call for
    the excluded group must keep the statistics of the call before it (this step's)."""
    return any(not group["lars_exclude"] for group in groups)


def group_params(group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A group's tensors that have a gradient this step, and their gradients."""
    params = [p for p in group["params"] if p.grad is not None]
    return params, [p.grad for p in params]
