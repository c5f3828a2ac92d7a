"""A run's result record: the plain dictionary written as one line of results.jsonl."""

from __future__ import annotations

import time
from typing import Any

from suite.config import RunSpec
from suite.results import SCHEMA_VERSION
from suite.train import RunMetrics


def build_record(
    spec: RunSpec,
    run_id: str,
    experiment: str,
    provenance: dict[str, Any],
    metrics: RunMetrics | None = None,
    *,
    status: str | None = None,
    error: str | None = None,
    device: str | None = None,
    event_log: str | None = None,
    telemetry: str | None = None,
) -> dict[str, Any]:
    """The record for a finished run (``metrics``), or for one that failed before finishing
    (no metrics: every measurement is null, never a made-up value)."""
    m = metrics or RunMetrics(status=status or "failed")
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp_end": time.time(),
        "run_id": run_id,
        "experiment": experiment,
        "label": spec.label,
        "status": status or m.status,
        "error": error,
        "backend": spec.backend,
        "model": spec.model,
        "dataset": spec.dataset,
        "image_size": spec.image_size,
        "num_classes": spec.num_classes,
        "device": device,
        "world_size": spec.world_size,
        "micro_batch_size": spec.micro_batch_size,
        "accumulation_steps": spec.accumulation_steps,
        "global_batch_size": spec.global_batch_size,
        "optimizer": spec.optimizer,
        "scaling_rule": spec.scaling_rule,
        "base_lr": spec.lr,
        "lr": m.peak_lr if metrics else None,
        "warmup_epochs": spec.warmup_epochs,
        "seed": spec.seed,
        "steps": m.steps if metrics else None,
        "steps_per_epoch": m.steps_per_epoch if metrics else None,
        "epochs": m.epochs if metrics else None,
        "throughput_images_per_sec": m.throughput(spec.global_batch_size),
        "step_time_p50_sec": m.step_time_p50_sec,
        "step_time_p95_sec": m.step_time_p95_sec,
        "data_wait_fraction": m.data_wait_fraction,
        "final_top1": m.final_top1,
        "final_top5": m.final_top5,
        "target_top1": spec.target_top1,
        "time_to_accuracy_sec": m.time_to_accuracy_sec,
        "epochs_to_accuracy": m.epochs_to_accuracy,
        "eval_history": m.evals,
        "loss_curve": m.loss_curve,
        "diverged_at_step": m.diverged_at_step,
        "param_checksum": m.param_checksum,
        "wall_time_sec": m.on_clock_sec if metrics else None,
        "restarts": m.restarts,
        "restart_overhead_sec": m.restart_overhead_sec if metrics else None,
        "queue_time_sec": m.queue_sec,
        "event_log": event_log,
        "telemetry": telemetry,
        "provenance": provenance,
    }
