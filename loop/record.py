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
from larsbench.core.stats import find_straggler, stability
from larsbench.loop.flops import table_peak_tflops
from larsbench.loop.metrics import RunMetrics, critical_rank, quantile, split_for


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
    unreachable_nodes: list[str] | None = None,
    repeats_decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record for a finished run (``metrics``), or for one that failed before finishing
    (no metrics: every measurement is null, never a made-up value, but ``ranks`` still says
    where each rank that started ran). ``files`` names the side files the run left (event log,
    telemetry, run log), relative to the results folder. ``unreachable_nodes``: the nodes a
    failed Slurm job could not reach when it ended (None: not checked). ``repeats_decision``:
    what an adaptive series of repeats decided after this run (``suite.repeats``)."""
    m = metrics or RunMetrics(status=status or "failed", rank_hosts=_started_hosts(files))
    return {
        **_identity(spec, run_id, experiment, status or m.status, error, device),
        **_progress(m, metrics is not None),
        **_speed(spec, m, provenance, device),
        **_accuracy(spec, m),
        "event_log": _side_file(files, "event_log"),
        "telemetry": _side_file(files, "telemetry"),
        "transport": ((provenance or {}).get("transport") or {}).get("collectives"),
        "steps_file": _side_file(files, "steps"),
        "log": _side_file(files, "log"),
        "unreachable_nodes": unreachable_nodes,
        "repeats_decision": repeats_decision,
        "provenance": provenance,
    }


def _started_hosts(files: RunFiles | None) -> list[str | None]:
    """Rank → host from the ranks' pid files (None for a rank that never started)."""
    hosts = files.rank_hosts() if files is not None else {}
    return [hosts.get(rank) for rank in range(max(hosts) + 1)] if hosts else []


def _identity(spec: RunSpec, run_id: str, experiment: str, status: str, error: str | None, device: str | None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp_end": time.time(),
        "run_id": run_id,
        "experiment": experiment,
        "label": spec.label,
        "status": status,
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
        "optimizer_sharding": spec.optimizer_sharding,
        "scaling_rule": spec.scaling_rule,
        "base_lr": spec.lr,
        "warmup_epochs": spec.warmup_epochs,
        "precision": spec.precision,
        "channels_last": spec.channels_last,
        "compile": spec.compile,
        "data_loader": spec.data_loader,
        "seed": spec.seed,
        "repeat": spec.repeat,
    }


def _progress(m: RunMetrics, finished: bool) -> dict[str, Any]:
    return {
        "layer_telemetry": m.layer_telemetry if finished else None,
        "optimizer_state_bytes": _largest(m.rank_optimizer_state_bytes),
        "peak_host_rss_bytes": _largest(m.rank_peak_host_rss_bytes),
        "peak_cuda_bytes": _largest(m.rank_peak_cuda_bytes),
        "lr": m.peak_lr if finished else None,
        "steps": m.steps if finished else None,
        "steps_per_epoch": m.steps_per_epoch if finished else None,
        "epochs": m.epochs if finished else None,
        "loss_curve": m.loss_curve,
        "diverged_at_step": m.diverged_at_step,
        "param_checksum": m.param_checksum,
        "wall_time_sec": m.on_clock_sec if finished else None,
        "restarts": m.restarts,
        "restart_overhead_sec": m.restart_overhead_sec if finished else None,
        "queue_time_sec": m.queue_sec,
        "setup_sec": m.setup_sec if finished else None,
        "phases_sec": dict(m.phases_sec) if finished and m.phases_sec else None,
    }


def _speed(spec: RunSpec, m: RunMetrics, provenance: dict[str, Any], device: str | None) -> dict[str, Any]:
    """Throughput and its explanation: the step-time distribution, the measured split into
    data wait, compute, exposed communication and overhead, FLOPs and MFU, stability, the
    ranks and a straggler. Every per-step figure is the critical rank's (``split_rank``)."""
    throughput = m.throughput(spec.global_batch_size)
    rank = critical_rank(m) if throughput is not None else 0
    times = m.rank_step_times[rank] if rank < len(m.rank_step_times) else []
    split = split_for(m, rank) if throughput is not None else None
    judged = stability(times) if throughput is not None else None
    flops = m.flops_per_image if throughput is not None else None
    achieved = flops * throughput / spec.world_size / 1e12 if flops else None
    gpu = provenance.get("gpu_model") if (device or "").startswith("cuda") else None
    table_peak = table_peak_tflops(gpu, m.peak_key) if m.peak_key else None
    measured_peak = quantile(m.rank_peak_tflops, 0.5) if m.rank_peak_tflops else None
    part = (lambda name: getattr(split, name) if split else None)  # noqa: E731
    return {
        "throughput_images_per_sec": throughput,
        "split_rank": rank if split else None,
        "step_time_mean_sec": sum(times) / len(times) if times else None,
        **{f"step_time_{name}_sec": quantile(times, q) for name, q in (("p5", 0.05), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "step_time_max_sec": max(times) if times else None,
        "step_time_cv": judged.cv if judged else None,
        "data_wait_sec_per_step": part("data_wait_sec"),
        "compute_sec_per_step": part("compute_sec"),
        "exposed_comm_sec_per_step": part("exposed_comm_sec"),
        "overhead_sec_per_step": part("overhead_sec"),
        "comm_sec_per_step": part("comm_sec"),
        "overlapped_comm_sec_per_step": part("overlapped_comm_sec"),
        "reduction_wait_sec_per_step": part("reduction_wait_sec"),
        "reduction_span_sec_per_step": part("reduction_span_sec"),
        "data_wait_fraction": split.fraction(split.data_wait_sec) if split else None,
        "compute_fraction": split.fraction(split.compute_sec) if split else None,
        "comm_fraction": split.fraction(split.exposed_comm_sec) if split else None,
        "overhead_fraction": split.fraction(split.overhead_sec) if split else None,
        "split_note": part("note"),
        "allreduce_bytes_per_step": m.allreduce_bytes_per_step,
        "comm_messages_bytes": m.comm_messages_bytes or None,
        "flops_per_image": flops,
        "achieved_tflops_per_device": achieved,
        "peak_precision": m.peak_key,
        "peak_tflops_table": table_peak,
        "mfu_table": achieved / table_peak if achieved and table_peak else None,
        "peak_tflops_measured": measured_peak,
        "mfu_measured": achieved / measured_peak if achieved and measured_peak else None,
        "unstable": judged.unstable if judged else None,
        "unstable_reasons": list(judged.reasons) if judged else [],
        "straggler": _straggler(m, split) if throughput is not None else None,
        "ranks": _ranks(m),
    }


def _straggler(m: RunMetrics, split) -> dict[str, Any] | None:
    found = find_straggler(m.rank_ready_times, split.step_sec if split else None)
    if found is None:
        return None
    return {
        "rank": found.rank,
        "host": m.rank_hosts[found.rank] if found.rank < len(m.rank_hosts) else None,
        "last_share": found.last_share,
        "lag_sec_per_step": found.lag_sec_per_step,
        "cost_sec": found.cost_sec,
        "slower_by": found.slower_by,
    }


def _ranks(m: RunMetrics) -> list[dict[str, Any]]:
    """Where every rank ran, and its own split."""
    out = []
    for rank, host in enumerate(m.rank_hosts):
        times = m.rank_step_times[rank] if rank < len(m.rank_step_times) else []
        split = split_for(m, rank) if times else None
        ready = [t for t in (m.rank_ready_times[rank] if rank < len(m.rank_ready_times) else []) if t is not None]
        out.append({
            "rank": rank,
            "host": host,
            "device": m.rank_devices[rank] if rank < len(m.rank_devices) else None,
            "step_time_p50_sec": quantile(times, 0.5),
            "data_wait_sec_per_step": split.data_wait_sec if split else None,
            "compute_sec_per_step": split.compute_sec if split else None,
            "exposed_comm_sec_per_step": split.exposed_comm_sec if split else None,
            "overhead_sec_per_step": split.overhead_sec if split else None,
            "comm_sec_per_step": split.comm_sec if split else None,
            "ready_sec_per_step": sum(ready) / len(ready) if ready else None,
            "optimizer_state_bytes": _at(m.rank_optimizer_state_bytes, rank),
            "peak_host_rss_bytes": _at(m.rank_peak_host_rss_bytes, rank),
            "peak_cuda_bytes": _at(m.rank_peak_cuda_bytes, rank),
        })  # fmt: skip
    return out


def _at(values: list, rank: int):
    return values[rank] if rank < len(values) else None


def _largest(values: list[int | None]) -> int | None:
    """The largest rank's figure: what a machine must hold for every rank to fit."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _accuracy(spec: RunSpec, m: RunMetrics) -> dict[str, Any]:
    return {
        "final_top1": m.final_top1,
        "final_top5": m.final_top5,
        "target_top1": spec.target_top1,
        "time_to_accuracy_sec": m.time_to_accuracy_sec,
        "epochs_to_accuracy": m.epochs_to_accuracy,
        "eval_history": m.evals,
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
    unreachable_nodes: list[str] | None = None,
    repeats_decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the record of a run that ended without one (failed or preempted): every
    measurement null, ``error`` saying why. Used by the local launcher and the Slurm job."""
    from larsbench.core.results import append_record
    from larsbench.loop import provenance

    info = provenance.collect(spec.to_dict(), env, versions or {})
    record = build_record(
        spec, files.run_id, experiment, info, status=status, error=reason, files=files, unreachable_nodes=unreachable_nodes,
        repeats_decision=repeats_decision,
    )  # fmt: skip
    append_record(files.results, record)
    return record
