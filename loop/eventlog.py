"""MLPerf-style event log (``:::MLLOG`` lines) written next to a run's record, with MLCommons'
own ``mlperf_logging.mllog``: run_start, epoch and eval events, run_stop with a status."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from larsbench.workloads.optimizers import get_optimizer


class EventLog:
    """Rank 0 logs; every other rank holds a disabled log, so callers never branch."""

    def __init__(self, path: Path | None):
        self.path = path
        self._log = None
        if path is None:
            return
        from mlperf_logging import mllog

        path.parent.mkdir(parents=True, exist_ok=True)
        # A logger of our own that does not propagate: a root handler (torchrun installs one)
        # would echo every event to the console.
        logger = logging.getLogger(f"larsbench.mllog.{path.stem}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        mllog.config(logger=logger, filename=str(path), default_stack_offset=2)
        self._log = mllog.get_mllogger()

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self._log is not None:
            self._log.end(key=key, value=value, metadata=metadata or None)


# MLPerf Training's ResNet benchmark is the one model here that has an MLPerf name.
MLPERF_BENCHMARKS = {"resnet50": "resnet"}


def submission_fields(mlperf: dict[str, str] | None, platform: str) -> dict[str, str]:
    """The submission_* keys MLPerf's rules require, from the run's ``mlperf`` setting with
    honest defaults: division open, status research, the platform the run is on, and an
    organisation left unspecified."""
    given = mlperf or {}
    return {
        "submission_org": given.get("org", "unspecified"),
        "submission_platform": given.get("platform", platform),
        "submission_division": given.get("division", "open"),
        "submission_status": given.get("status", "research"),
    }


def log_run_setup(events: EventLog, spec, *, platform: str, nodes: int, ranks_per_node: int, peak_lr: float,
                  total_steps: int, warmup_steps: int, train_samples: int, eval_samples: int | None) -> None:  # fmt: skip
    """What MLPerf Training's rules (ruleset 4.0.0) ask a log to declare before run_start:
    submission fields, the benchmark where there is one, the system's scale, and the optimizer's
    hyperparameters with the values this run uses (the keys its registered component names:
    ``lars_*`` and ``sgd_*`` as the ResNet rules name them, ``opt_lamb_*`` as the BERT rules do)."""
    for key, value in submission_fields(spec.mlperf, platform).items():
        events.event(key, value)
    if spec.model in MLPERF_BENCHMARKS:
        events.event("submission_benchmark", MLPERF_BENCHMARKS[spec.model])
    events.event("number_of_nodes", nodes)
    events.event("accelerators_per_node", ranks_per_node)
    events.event("cache_clear", False)  # larsbench does not drop the page cache between runs
    events.event("global_batch_size", spec.global_batch_size)
    events.event("gradient_accumulation_steps", spec.accumulation_steps)
    events.event("train_samples", train_samples)
    if eval_samples is not None:
        events.event("eval_samples", eval_samples)
    events.event("opt_name", spec.optimizer)
    events.event("opt_base_learning_rate", peak_lr)
    events.event("opt_learning_rate_warmup_steps", warmup_steps)
    events.event("opt_learning_rate_warmup_epochs", spec.warmup_epochs)
    for key, value in get_optimizer(spec.optimizer).mlperf_keys(spec, peak_lr, total_steps, warmup_steps).items():
        events.event(key, value)
