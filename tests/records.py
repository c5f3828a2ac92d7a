"""Result records for tests, made by the suite's own record builder (``loop.record.build_record``)
from a run spec and the measurements a run would have gathered, so a renamed or retyped key
fails the tests that read it instead of passing on a hand-written dict.

``make_record(throughput=120.0, world_size=2, ...)``: any ``RunSpec`` field by name; the
measurements below; provenance overrides (``cpu_model``, ``gpu_model``, ``timestamp_utc``,
``versions``, ``git_commit``, ``host``, ``node_list``, ``num_nodes``, ``transport``, ``environment``,
``config``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
from pathlib import Path
from typing import Any

from larsbench.core.spec import DEFAULT_LR, RUN_FIELDS, RunSpec
from larsbench.loop import provenance as provenance_module
from larsbench.loop.metrics import RunMetrics
from larsbench.loop.record import build_record
from larsbench.workloads.optimizers import get_optimizer
from larsbench.workloads.schedules import scaled_lr

_ids = itertools.count()
PROVENANCE_KEYS = ("cpu_model", "gpu_model", "timestamp_utc", "versions", "git_commit", "host", "node_list", "num_nodes",
                   "launcher", "torch_threads", "gpu_count", "transport", "environment")  # fmt: skip


@functools.cache
def _machine_provenance() -> str:
    return json.dumps(provenance_module.collect({}, None, {}))


def _per_rank(value: Any, ranks: int, steps: int) -> list[list[Any]]:
    """A scalar (every step of every rank), a list (every rank's steps) or a list of lists."""
    if value is None or isinstance(value, (int, float)):
        return [[value] * steps for _ in range(ranks)]
    if value and isinstance(value[0], (list, tuple)):
        return [list(row) for row in value]
    return [list(value) for _ in range(ranks)]


def make_spec(**fields: Any) -> RunSpec:
    defaults = {"model": "tiny_cnn", "dataset": "synthetic", "image_size": 16, "micro_batch_size": 8, "device": "cpu", "steps": 30}
    spec = RunSpec(**{**defaults, **fields})
    product = spec.world_size * spec.micro_batch_size * spec.accumulation_steps
    return dataclasses.replace(spec, global_batch_size=product, lr=spec.lr if spec.lr is not None else DEFAULT_LR[spec.optimizer])


def make_record(
    *,
    status: str = "ok",
    error: str | None = None,
    throughput: float | None = None,
    step_sec: Any = 0.08,
    data_wait_sec: Any = 0.0,
    ready_sec: Any = None,
    exposed_comm_sec: Any = 0.0,
    comm_sec: Any = 0.0,
    compute_sec: float | list[float] | None = None,
    window_steps: int | None = None,
    evals: list[dict[str, float]] | None = None,
    time_to_accuracy_sec: float | None = None,
    epochs_to_accuracy: float | None = None,
    steps_per_epoch: int = 10,
    loss_curve: list[list[float | None]] | None = None,
    param_checksum: float | None = 1.0,
    hosts: list[str] | None = None,
    flops_per_image: float | None = None,
    peak_tflops: float | None = None,
    allreduce_bytes_per_step: int | None = None,
    comm_messages_bytes: list[int] | None = None,
    diverged_at_step: int | None = None,
    repeats_decision: dict[str, Any] | None = None,
    setup_sec: float | None = None,
    phases_sec: dict[str, float] | None = None,
    optimizer_state_bytes: list[int] | None = None,
    peak_host_rss_bytes: list[int] | None = None,
    peak_cuda_bytes: list[int | None] | None = None,
    run_id: str | None = None,
    experiment: str = "test",
    **fields: Any,
) -> dict[str, Any]:
    """One record as the suite writes it. ``throughput`` (images/s) sets the window's length;
    without it the window is the sum of the step times. Per-step arguments take a scalar, a
    list of steps or one list per rank (``ready_sec`` None: no reductions were timed); memory
    figures take one value per rank. A run of ``device="cuda"`` ran on ``cuda:0``; a diverged run
    stopped at ``diverged_at_step`` (default: its last)."""
    prov_overrides = {key: fields.pop(key) for key in PROVENANCE_KEYS + ("config",) if key in fields}
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise TypeError(f"make_record: not a run setting or measurement: {', '.join(sorted(unknown))}")
    spec = make_spec(**fields)
    run_id = run_id or f"run-{next(_ids)}"
    info = json.loads(_machine_provenance())
    info["config"] = spec.to_dict()
    for key, value in prov_overrides.items():
        if key == "config":
            info["config"].update(value)
        else:
            info[key] = copy.deepcopy(value)
    if status == "failed":
        return build_record(spec, run_id, experiment, info, status="failed", error=error or "rank0: RuntimeError: test failure",
                            repeats_decision=repeats_decision)  # fmt: skip
    ranks = spec.world_size
    first = _per_rank(step_sec, ranks, window_steps or 20)
    n = window_steps or len(first[0])
    steps_rows = _per_rank(step_sec, ranks, n)
    window_sec = n * spec.global_batch_size / throughput if throughput else sum(steps_rows[0])
    probe = compute_sec if isinstance(compute_sec, list) else ([compute_sec] * 3 if compute_sec is not None else [])
    metrics = RunMetrics(
        status=status,
        steps=spec.steps or n,
        steps_per_epoch=steps_per_epoch,
        epochs=(spec.steps or n) / steps_per_epoch,
        peak_lr=scaled_lr(spec.lr, spec.scaling_rule, spec.global_batch_size, spec.reference_batch_size),
        loss_curve=loss_curve if loss_curve is not None else [[1, 2.3]],
        evals=evals or [],
        time_to_accuracy_sec=time_to_accuracy_sec,
        epochs_to_accuracy=epochs_to_accuracy,
        window_sec=window_sec,
        window_steps=n,
        param_checksum=param_checksum,
        on_clock_sec=window_sec * 1.2,
        rank_hosts=hosts or ["testhost"] * ranks,
        rank_devices=["cpu"] * ranks,
        rank_step_times=steps_rows,
        rank_data_waits=_per_rank(data_wait_sec, ranks, n),
        rank_ready_times=_per_rank(ready_sec, ranks, n),
        rank_exposed_comm=_per_rank(exposed_comm_sec, ranks, n),
        rank_comm_times=_per_rank(comm_sec, ranks, n),
        comm_messages_bytes=comm_messages_bytes or [],
        rank_compute_sec=[list(probe) for _ in range(ranks)] if probe else [],
        flops_per_image=flops_per_image,
        peak_key="fp32" if peak_tflops else None,
        rank_peak_tflops=[peak_tflops] * ranks if peak_tflops else [],
        allreduce_bytes_per_step=allreduce_bytes_per_step,
        setup_sec=setup_sec,
        phases_sec=phases_sec or {},
        layer_telemetry=get_optimizer(spec.optimizer).telemetry,
        rank_optimizer_state_bytes=list(optimizer_state_bytes or []),
        rank_peak_host_rss_bytes=list(peak_host_rss_bytes or []),
        rank_peak_cuda_bytes=list(peak_cuda_bytes or []),
    )
    if status == "diverged":
        metrics.diverged_at_step = diverged_at_step or metrics.steps
    device = "cuda:0" if spec.device == "cuda" else "cpu"
    return build_record(spec, run_id, experiment, info, metrics, status=None if status == "ok" else status, error=error, device=device,
                        repeats_decision=repeats_decision)  # fmt: skip


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """``path`` (a results.jsonl) holding ``records``, one per line, as the suite writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
