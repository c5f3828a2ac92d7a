"""A run's result record: the plain dictionary written as one line of results.jsonl.

Kept free of torch and of the trainer: the launcher and the Slurm job write failed records
with it without loading the training loop.
"""

from __future__ import annotations

import time
from typing import Any

from larsbench.core.layout import RunFiles
from larsbench.core.results import SCHEMA_VERSION
from larsbench.core.spec import RunSpec
from larsbench.loop.metrics import RunMetrics


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
    files: RunFiles | None = None,
) -> dict[str, Any]:
    """The record for a finished run (``metrics``), or for one that failed before finishing
    (no metrics: every measurement is null, never a made-up value). ``files`` names the side
    files the run left (event log, telemetry, run log), relative to the results folder."""
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
        "precision": spec.precision,
        "channels_last": spec.channels_last,
        "compile": spec.compile,
        "data_loader": spec.data_loader,
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
        "event_log": _side_file(files, "event_log"),
        "telemetry": _side_file(files, "telemetry"),
        "log": _side_file(files, "log"),
        "provenance": provenance,
    }


def _side_file(files: RunFiles | None, name: str) -> str | None:
    if files is None:
        return None
    path = getattr(files, name)
    return files.relative(path) if path.exists() else None


def rank_errors_text(files: RunFiles) -> str | None:
    """The ranks' own one-line reasons, ``rank0: ...; rank1: ...`` (None when none left one)."""
    errors = files.rank_errors()
    return "; ".join(f"rank{rank}: {text}" for rank, text in sorted(errors.items())) or None


def append_failure(
    spec: RunSpec,
    files: RunFiles,
    experiment: str,
    reason: str,
    *,
    status: str = "failed",
    env: Any = None,
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the record of a run that ended without one (failed or preempted): every
    measurement null, ``error`` saying why. Used by the local launcher and the Slurm job."""
    from larsbench.core.results import append_record
    from larsbench.loop import provenance

    info = provenance.collect(spec.to_dict(), env, versions or {})
    record = build_record(spec, files.run_id, experiment, info, status=status, error=reason, files=files)
    append_record(files.results, record)
    return record
