"""The result record's schema, declared once: every key, its JSON type, its unit and what it means.

The record builder's output is checked against it when a record is written (``check``), the
loaders and the regression checks name their keys through it (``key``: a key the schema lacks
is an error at import, not a silently empty column), and ``docs/records.md`` holds the tables
``markdown`` renders from it (a test compares them). Changing a key means changing it here,
and the record builder, the readers and the docs then agree or a test fails.

Types are JSON's: ``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``; a
``?`` suffix allows null (a measurement a run did not make is null, never a made-up value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from larsbench.core.phases import PHASE_DOCS

# 2: precision, channels_last and compile became top-level keys (they define a setting).
# 3: data_loader (cpu or gpu decoding) became a top-level key.
# 4: the step split is measured on the backends' collectives (exposed and total communication,
#    overhead, the rank it is taken along), stragglers come from the window.
# 5: repeats_decision (what an adaptive series of repeats decided after the run).
# 6: the reduction calls as measured (reduction_wait/span); on one rank they are overhead, not
#    communication.
# 7: setup_sec and phases_sec: the time a run spends around its clock, by phase.
# 8: what the reports need to know about the optimizer (layer_telemetry), optimizer_sharding,
#    and memory per rank (optimizer state, peak host RSS, peak CUDA memory).
SCHEMA_VERSION = 8


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    unit: str
    doc: str

    @property
    def nullable(self) -> bool:
        return self.type.endswith("?")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        kind = self.type.rstrip("?")
        if kind == "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if kind == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict}[kind])


def _keys(*rows: tuple[str, str, str, str]) -> tuple[Key, ...]:
    return tuple(Key(*row) for row in rows)


RECORD = _keys(
    ("schema_version", "integer", "", f"record format version ({SCHEMA_VERSION}; older records are read with the keys added since filled in)"),
    ("timestamp_end", "number", "Unix s", "when the record was written"),
    ("run_id", "string", "", "the run's id (a Slurm job's is `<cluster>-<job id>[_<array index>]`)"),
    ("experiment", "string", "", "the experiment's name"),
    ("label", "string", "", "the run's label: `backend-model-Npx-dataset-gbB=ranks×micro×acc-recipe` and every other setting not at its default"),
    ("status", "string", "", "`ok`, `diverged`, `failed` or `preempted`"),
    ("error", "string?", "", "why a run failed or was preempted"),
    ("backend", "string", "", "the distributed backend"),
    ("model", "string", "", "the model"),
    ("dataset", "string", "", "`synthetic`, `imagefolder` or `generated`"),
    ("image_size", "integer", "px", "square input size"),
    ("num_classes", "integer", "", "number of classes"),
    ("device", "string?", "", "the device rank 0 ran on (`cpu`, `cuda:0`)"),
    ("world_size", "integer", "ranks", "number of ranks"),
    ("micro_batch_size", "integer", "images", "images per rank per forward pass"),
    ("accumulation_steps", "integer", "", "micro-batches per optimizer step"),
    ("global_batch_size", "integer", "images", "world × micro × accumulation"),
    ("optimizer", "string", "", "the optimizer (`lars`, `sgd`, ...)"),
    ("optimizer_sharding", "string", "", "how the optimizer state was partitioned over the ranks: `none`, `zero1` or `zero2`"),
    ("layer_telemetry", "boolean?", "", "whether the optimizer keeps per-layer statistics for the telemetry file (a layer-wise one: LARS); null when the run failed before building it"),
    ("scaling_rule", "string", "", "LR scaling rule: `none`, `linear` or `sqrt`"),
    ("base_lr", "number?", "", "the LR before the scaling rule"),
    ("warmup_epochs", "number", "epochs", "linear LR warm-up length"),
    ("precision", "string", "", "`fp32`, `bf16` or `fp16` (part of a setting's identity)"),
    ("channels_last", "boolean", "", "weights and inputs in channels_last"),
    ("compile", "boolean", "", "the model went through `torch.compile`"),
    ("data_loader", "string", "", "where JPEGs were decoded: `cpu` (DataLoader workers) or `gpu` (nvjpeg on the device)"),
    ("seed", "integer", "", "the seed the run trained with (weights, data order, synthetic data): repeat r > 0 of a cell derives its own from the cell's seed unless the cell holds it (`hold_seed`; see docs/running.md)"),
    ("repeat", "integer", "", "index of this run among the repeats of its setting"),
    ("lr", "number?", "", "the peak LR after the scaling rule"),
    ("steps", "integer?", "", "optimizer steps run"),
    ("steps_per_epoch", "integer?", "", "optimizer steps per epoch"),
    ("epochs", "number?", "epochs", "the epochs the steps cover"),
    ("loss_curve", "array", "", "`[[step, loss], ...]`, every step's loss averaged over ranks (null where not finite)"),
    ("diverged_at_step", "integer?", "", "first step with a non-finite loss"),
    ("param_checksum", "number?", "", "sum of all parameters in float64 after the run (null if not finite)"),
    ("wall_time_sec", "number?", "s", "on-clock training time, evaluation included, summed over restarts"),
    ("restarts", "integer", "", "times the run was resumed"),
    ("restart_overhead_sec", "number?", "s", "the setup time the restarts cost"),
    ("queue_time_sec", "number?", "s", "time the Slurm job waited in the queue, summed over its starts (null for local runs)"),
    ("setup_sec", "number?", "s", "rank 0's latest start: from the launcher's stamp (`LARSBENCH_LAUNCH_TIME`, set just before the backend's launcher or at the top of the Slurm batch script; else the rank's own process start) to the start of the run's clock"),
    ("phases_sec", "object?", "s", "where rank 0's latest start spent its time around the clock, by phase: " + ", ".join(f"`{name}` ({doc})" for name, doc in PHASE_DOCS.items()) + "; the setup phases add up to `setup_sec`"),
    ("throughput_images_per_sec", "number?", "images/s", "images of all ranks / wall seconds of the measured window"),
    ("split_rank", "integer?", "", "the rank every per-step figure below is taken along: the one whose gradients were ready last on average (the others wait for it)"),
    ("step_time_mean_sec", "number?", "s", "mean step time over the window"),
    ("step_time_p5_sec", "number?", "s", "5th percentile of the step times"),
    ("step_time_p50_sec", "number?", "s", "median step time"),
    ("step_time_p95_sec", "number?", "s", "95th percentile of the step times"),
    ("step_time_p99_sec", "number?", "s", "99th percentile of the step times"),
    ("step_time_max_sec", "number?", "s", "slowest step"),
    ("step_time_cv", "number?", "", "robust coefficient of variation of the step times (1.4826 × MAD / median)"),
    ("data_wait_sec_per_step", "number?", "s", "mean time a step waited for its next batch"),
    ("compute_sec_per_step", "number?", "s", "forward, backward and optimizer step alone (the compute probe's median; null without the probe)"),
    ("exposed_comm_sec_per_step", "number?", "s", "mean time a step waited on the backend's gradient reductions after its last gradient was ready (measured on the collectives; 0 where nothing was reduced)"),
    ("overhead_sec_per_step", "number?", "s", "the rest of the mean step: the loop, the backend's wrappers, host-device copies, and whatever competed for the rank's cores (null without the probe)"),
    ("comm_sec_per_step", "number?", "s", "mean communication span per step: first reduction launched to last finished"),
    ("overlapped_comm_sec_per_step", "number?", "s", "the part of the communication span hidden behind backward compute"),
    ("reduction_wait_sec_per_step", "number?", "s", "the backend's reduction calls as measured: time waited on them after the last gradient was ready (on several ranks the exposed communication; on one rank, where they move nothing, part of the overhead)"),
    ("reduction_span_sec_per_step", "number?", "s", "the reduction calls' span as measured: first launched to last finished (on several ranks the communication span)"),
    ("data_wait_fraction", "number?", "of step", "data wait as a share of the mean step"),
    ("compute_fraction", "number?", "of step", "compute as a share of the mean step"),
    ("comm_fraction", "number?", "of step", "exposed communication as a share of the mean step"),
    ("overhead_fraction", "number?", "of step", "overhead as a share of the mean step"),
    ("split_note", "string?", "", "why the split is approximate, when it is (the compute probe took longer than the loop's compute)"),
    ("allreduce_bytes_per_step", "integer?", "bytes", "gradient bytes each rank reduces per optimizer step"),
    ("comm_messages_bytes", "array?", "bytes", "the reductions of one step as the backend launched them (DDP buckets, Horovod tensors, DeepSpeed buffers)"),
    ("optimizer_state_bytes", "integer?", "bytes", "the optimizer state (momentum, Adam moments) of the rank holding the most; under sharding, that rank's shard"),
    ("peak_host_rss_bytes", "integer?", "bytes", "the highest peak resident memory of any rank's process"),
    ("peak_cuda_bytes", "integer?", "bytes", "the most CUDA memory torch's allocator held on any rank (null on CPUs)"),
    ("flops_per_image", "number?", "FLOP", "forward + backward FLOPs per image, counted on the model"),
    ("achieved_tflops_per_device", "number?", "TFLOP/s", "`flops_per_image` × throughput / world size"),
    ("peak_precision", "string?", "", "the arithmetic the peaks are for: `bf16`, `fp16`, `tf32` or `fp32`"),
    ("peak_tflops_table", "number?", "TFLOP/s", "the GPU model's published dense peak (null on CPUs and unlisted GPUs)"),
    ("mfu_table", "number?", "", "model FLOPs utilisation against `peak_tflops_table`"),
    ("peak_tflops_measured", "number?", "TFLOP/s", "what a matrix-product probe achieves on this device (median over ranks)"),
    ("mfu_measured", "number?", "", "model FLOPs utilisation against `peak_tflops_measured`"),
    ("unstable", "boolean?", "", "whether the step times say the run was disturbed"),
    ("unstable_reasons", "array", "", "why (a shift mid-window, stalls, an unsettled warm-up)"),
    ("straggler", "object?", "", "`{rank, host, last_share, lag_sec_per_step, cost_sec, slower_by}` of a rank the others waited for in the window"),
    ("ranks", "array", "", "every rank: `{rank, host, device, step_time_p50_sec, data_wait_sec_per_step, compute_sec_per_step, exposed_comm_sec_per_step, overhead_sec_per_step, comm_sec_per_step, ready_sec_per_step, optimizer_state_bytes, peak_host_rss_bytes, peak_cuda_bytes}`; in a failed run's record, the host each rank that started ran on"),
    ("final_top1", "number?", "", "top-1 at the last evaluation"),
    ("final_top5", "number?", "", "top-5 at the last evaluation"),
    ("target_top1", "number?", "", "the top-1 target of time to accuracy"),
    ("time_to_accuracy_sec", "number?", "s", "from the start of training to the first evaluation at or above the target (null: not reached)"),
    ("epochs_to_accuracy", "number?", "epochs", "epochs to that evaluation"),
    ("eval_history", "array", "", "every evaluation: `{step, epoch, top1, top5, elapsed_sec}`"),
    ("event_log", "string?", "", "the run's MLPerf event log, relative to the results folder"),
    ("telemetry", "string?", "", "the run's layer-wise optimizer telemetry file"),
    ("transport", "string?", "", "the transport the backend's collectives used (`gloo`, `nccl`, ...)"),
    ("steps_file", "string?", "", "every rank's per-step measurements, one line per rank"),
    ("log", "string?", "", "the run's launcher and library output (local runs)"),
    ("unreachable_nodes", "array?", "", "for a failed Slurm run on several nodes, the nodes the first one could not reach when the job ended (`[]`: all answered)"),
    ("repeats_decision", "object?", "", "in a series of repeats run until their throughput is known well enough (`repeats: auto`), what was decided after this run: `{series, decision, reason, runs, clean_runs, mean, half_width, target, max_runs}`, `decision` being `continue` or `stop` (`reason` says why: the target reached, the cap, a run that did not finish ok); null outside such a series"),
    ("provenance", "object", "", "where the numbers came from: the table below"),
)

PROVENANCE = _keys(
    ("timestamp_utc", "string", "", "when rank 0 collected it (ISO 8601)"),
    ("larsbench", "string", "", "larsbench's version"),
    ("git_commit", "string?", "", "the checkout's commit, `-dirty` with local edits"),
    ("versions", "object", "", "python, torch, torchvision, CUDA build, cuDNN, NCCL, and the backend's library"),
    ("host", "string", "", "rank 0's machine"),
    ("platform", "string", "", "rank 0's operating system"),
    ("cpu_model", "string", "", "rank 0's CPU model"),
    ("cpu_count", "integer?", "", "CPUs of rank 0's machine"),
    ("torch_threads", "integer", "", "intra-op threads of rank 0"),
    ("cpu_affinity_count", "integer?", "", "cores rank 0's process may run on"),
    ("gpu_model", "string?", "", "rank 0's GPU model"),
    ("gpu_count", "integer", "", "GPUs rank 0 sees"),
    ("launcher", "string?", "", "what started the ranks: `larsbench` (local runs), `torchrun` or `horovodrun` (ranks a user started with them), `slurm`, `single`"),
    ("num_nodes", "integer", "", "nodes of the allocation"),
    ("node_list", "string?", "", "the allocation's nodes"),
    ("slurm_job_id", "string?", "", "the Slurm job (null for local runs)"),
    ("slurm_array_task_id", "string?", "", "the job array index"),
    ("allocation", "object?", "", "the shape `larsbench slurm` asked for (nodes, tasks per node, resources)"),
    ("slurm_restart_count", "integer", "", "how often Slurm requeued the job"),
    ("transport", "object?", "", "how the backend's collectives travel: library, transport, and how the library was built"),
    ("environment", "object", "", "the variables that steer communication and threads (`NCCL_*`, `GLOO_*`, `HOROVOD_*`, `OMP_*`, ...)"),
    ("argv", "array", "", "rank 0's command line"),
    ("config", "object", "", "every resolved run setting (the run spec)"),
)

RECORD_KEYS: tuple[str, ...] = tuple(k.name for k in RECORD)
_BY_NAME = {k.name: k for k in RECORD}


def key(name: str) -> str:
    """``name``, checked to be a record key: readers name their keys through this, so a key
    renamed in the schema fails at import instead of reading as an empty column."""
    if name not in _BY_NAME:
        raise KeyError(f"{name!r} is not a key of the result record (core/schema.py)")
    return name


def unit(name: str) -> str:
    return _BY_NAME[key(name)].unit


def problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a record against the schema: missing, unknown or mistyped keys."""
    found = []
    for spec in RECORD:
        if spec.name not in record:
            found.append(f"missing key {spec.name}")
        elif not spec.accepts(record[spec.name]):
            found.append(f"{spec.name} must be {spec.type} (got {type(record[spec.name]).__name__})")
    found += [f"unknown key {name}" for name in record if name not in _BY_NAME]
    prov = record.get("provenance")
    if isinstance(prov, dict):
        for spec in PROVENANCE:
            if spec.name in prov and not spec.accepts(prov[spec.name]):
                found.append(f"provenance.{spec.name} must be {spec.type} (got {type(prov[spec.name]).__name__})")
    return found


def markdown(keys: tuple[Key, ...]) -> str:
    """The documentation table of ``keys`` (docs/records.md holds these verbatim)."""
    lines = ["| key | type | unit | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k.name}` | {k.type} | {k.unit} | {k.doc} |" for k in keys]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m larsbench.core.schema: the tables for docs/records.md
    print("## Top-level keys\n\n" + markdown(RECORD) + "\n\n## `provenance`\n\n" + markdown(PROVENANCE))
