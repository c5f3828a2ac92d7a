"""Layer-wise telemetry: per layer, every k optimizer steps, ‖w‖, the norm the trust ratio
divides by (‖g‖ for LARS, ‖update‖ for LAMB), the trust ratio and the effective LR (lr·ratio),
appended by rank 0 to a JSON-lines side file the record points to.

The values are the ones the optimizer itself used in that step (its ``last_stats``: optimizers
registered with the ``telemetry`` trait keep them), read after the step: whatever the backend
did to the gradients before (all-reduce, accumulation over micro-batches, loss-scale removal)
is already in them; under sharded optimizer state they are the norms reduced over every rank's
slices. One row per (step, layer):

    {"step": 120, "layer": "layer1.0.conv1.weight", "layer_index": 3, "w_norm": ...,
     "g_norm": ..., "trust_ratio": ..., "lr": ..., "effective_lr": ...}

``pandas.read_json(path, lines=True)`` loads it. A run restarted from a periodic checkpoint
after a crash may log a step twice; readers keep the last row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from larsbench.core.files import append_lines

# When a run does not say how often: about this many logged steps per run, so a 500K-step
# ImageNet run and a 50-step test both get a readable heatmap and a file of a few MB at most.
DEFAULT_LOGGED_STEPS = 200


def find_inner(optimizer: object, has: str) -> object | None:
    """The optimizer with attribute ``has`` behind a backend's wrappers (Horovod subclasses the
    workload's optimizer, DeepSpeed keeps it as ``.optimizer``, torch's ZeroRedundancyOptimizer
    as ``.optim``), or None."""
    for _ in range(8):
        if optimizer is None:
            return None
        if hasattr(optimizer, has):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "optim", None)
    return None


def interval(every_steps: int | None, total_steps: int) -> int:
    """Steps between records; 0 means off. ``None`` picks about ``DEFAULT_LOGGED_STEPS``."""
    if every_steps is None:
        return max(1, total_steps // DEFAULT_LOGGED_STEPS)
    return every_steps


class LayerTelemetry:
    """Collects the optimizer's ``last_stats`` every ``every`` steps (and at step 1) on the rank
    that writes; off for an optimizer that keeps none."""

    def __init__(self, optimizer: object, model: nn.Module, path: Path | None, every: int):
        self.source = find_inner(optimizer, "last_stats")
        self.path = path if self.source is not None and every > 0 else None
        self.every = every
        self.names = {id(p): name for name, p in model.named_parameters()}

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def due(self, step: int) -> bool:
        return self.enabled and (step == 1 or step % self.every == 0)

    def arm(self) -> None:
        """Forget the previous step's statistics before a step that will be logged: under fp16
        a step with inf/NaN gradients is skipped, and its row must not repeat an older step's."""
        assert self.source is not None
        self.source.last_stats = []

    def collect(self, step: int) -> None:
        """Append this step's rows (none when the optimizer skipped the step). One host read of
        a few hundred numbers: cheap every k steps."""
        assert self.source is not None and self.path is not None
        rows = []
        index = 0
        for stats in self.source.last_stats:
            values = torch.stack([stats.w_norm, stats.g_norm, stats.trust]).double().cpu().tolist()
            member = [True] * len(stats.params) if stats.member is None else stats.member.cpu().tolist()
            for param, keep, w_norm, norm, trust in zip(stats.params, member, *map(_finite, values)):
                if not keep:
                    continue
                rows.append({
                    "step": step,
                    "layer": self.names.get(id(param), f"param{index}"),
                    "layer_index": index,
                    "w_norm": w_norm,
                    stats.norm_name: norm,
                    "trust_ratio": trust,
                    "lr": stats.lr,
                    "effective_lr": None if trust is None else stats.lr * trust,
                })  # fmt: skip
                index += 1
        if rows:
            # One write: a step's rows land together, or as a torn tail a restart writes past.
            append_lines(self.path, [json.dumps(row) for row in rows], sync=False)


def _finite(values: list[float]) -> list[float | None]:
    """JSON has no NaN or infinity: a diverging step's values become null."""
    return [v if math.isfinite(v) else None for v in values]
