"""Timestamps on a rank's own timeline that cost no synchronisation.

On a CPU a mark is ``time.perf_counter()``; on CUDA it is an event recorded on the current
stream, so marks taken inside the step (the start, a gradient handed to a reduction, the step
done waiting for it) describe when the device got there and are read once, after the window
(``seconds``), instead of stalling the step.
"""

from __future__ import annotations

import time
from typing import Union

import torch

Mark = Union[float, "torch.cuda.Event"]


def mark(cuda: bool) -> Mark:
    if cuda:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def seconds(start: Mark, end: Mark) -> float:
    """``end - start`` in seconds (CUDA events: after both have completed)."""
    if isinstance(start, float):
        return end - start  # type: ignore[operator]
    end.synchronize()
    return start.elapsed_time(end) / 1000.0
