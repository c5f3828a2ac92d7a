"""One rank's training run: the trainer, its meters, telemetry, checkpoints, event log and the
record it leaves. Works through ``larsbench.backends`` and ``larsbench.workloads`` alone."""
