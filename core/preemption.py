"""The scheduler's warning that a job is about to be stopped (Slurm: ``--signal=B:USR1@N``,
forwarded to every task by srun). A rank only notes it; ranks agree on when to stop at the
next collective, checkpoint together, and exit with ``EXIT_PREEMPTED``."""

from __future__ import annotations

import signal

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed, run again with the same run id to resume
PREEMPT_SIGNAL = signal.SIGUSR1


class PreemptionNotice:
    def __init__(self, signum: int = PREEMPT_SIGNAL):
        self.requested = False
        signal.signal(signum, self._note)

    def _note(self, signum, frame) -> None:
        self.requested = True
