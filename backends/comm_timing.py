"""Timestamps on a backend's own gradient reductions: the measured part of the step split.

Each adapter tells its ``CommTimer`` when a reduction is handed to its library (``launched``:
Horovod's per-gradient all-reduce, DeepSpeed's ``allreduce_gradients``, a user's DDP
communication hook; ``launched_at`` with a mark taken earlier where the launch happens with no
Python to call: DDP's own bucket all-reduce, timed from marks on its gradients after backward)
and when the step has finished waiting for the reductions (``finished``: DDP's backward returns,
Horovod's ``synchronize`` returns, DeepSpeed's ``allreduce_gradients`` returns). Collectives the
step waits on whole (ZeRO's parameter all-gather after the optimizer step, its bucket
reductions inside backward, a layer-wise optimizer's norm reduction over sharded state) are
added with ``waited`` (``waiting`` wraps one).

For one optimizer step:
- ready = the last ``launched``: this rank's gradients were all computed (its own work);
- exposed communication = ``finished`` − ready, plus what ``waited`` added: the time the step
  waited on communication after its compute was done;
- communication span = ``finished`` − the first ``launched`` (plus ``waited``): total time with
  a reduction in flight; the part of it before ready overlapped backward compute.
A step with no reduction (one rank and a library that skips it) has neither.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from larsbench.core.clock import Mark, mark


@dataclass
class CommMarks:
    first: Mark | None = None
    ready: Mark | None = None
    done: Mark | None = None
    waited: list[tuple[Mark, Mark]] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)  # bytes of each reduction, in launch order


class CommTimer:
    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.marks = CommMarks()

    def start_step(self) -> None:
        self.marks = CommMarks()

    def launched(self, nbytes: int) -> None:
        self.launched_at(mark(self.cuda), nbytes)

    def launched_at(self, when: Mark, nbytes: int, first: Mark | None = None) -> None:
        """A reduction of ``nbytes`` launched at ``when``, a mark taken earlier in the step
        (launches are reported in order). ``first``: where the message stands for several
        reductions whose own launches are unknown, the earliest they can have started."""
        if self.marks.first is None:
            self.marks.first = when if first is None else first
        self.marks.ready = when
        self.marks.messages.append(int(nbytes))

    def finished(self) -> None:
        self.marks.done = mark(self.cuda)

    def waited(self, start: Mark) -> None:
        """A collective the step waited on whole, from ``start`` (a ``mark``) to now."""
        self.marks.waited.append((start, mark(self.cuda)))

    def waiting(self, collective: Callable[..., Any]) -> Callable[..., Any]:
        """``collective`` with each call added whole with ``waited``: for a collective the step
        blocks on (ZeRO's parameter all-gather, a layer-wise optimizer's norm reduction)."""

        @functools.wraps(collective)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = mark(self.cuda)
            try:
                return collective(*args, **kwargs)
            finally:
                self.waited(start)

        return timed

    def take(self) -> CommMarks:
        marks, self.marks = self.marks, CommMarks()
        return marks
