"""How fast ``larsbench history`` loads and groups a large results store:
``python -m benchmarks.history_store [--records 10000] [--nights 400] [--report]``.

Generates a store of one results folder per night from three clusters whose hardware and node
counts differ (an 8-GPU H100 node and 4 of them, 2 A100 nodes, a CPU box), each running its
grid of settings with two repeats every night, records the size of real ones (a loss curve
of 400 points, ten evaluations, full provenance), then times:

1. loading and grouping (``history_store.load_store``), three times (the median counts);
2. the series and their change points (``history.build_history``);
3. writing the report (Markdown, HTML, one PNG per series), with ``--report``.

Prints each figure with the machine's CPU; exit status 1 when loading and grouping takes
longer than ``--target`` seconds.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

CLUSTERS = (  # name, gpu model, nodes, settings (backend, world size, micro batch)
    ("hopper", "NVIDIA H100 80GB HBM3", 1, [("ddp", 8, 256), ("deepspeed", 8, 256), ("horovod", 8, 256)]),
    ("hopper", "NVIDIA H100 80GB HBM3", 4, [("ddp", 32, 256), ("deepspeed", 32, 256), ("horovod", 32, 256)]),
    ("ampere", "NVIDIA A100-SXM4-80GB", 2, [("ddp", 16, 128), ("deepspeed", 16, 128), ("horovod", 16, 128)]),
    ("cpu", None, 1, [("ddp", 2, 16), ("deepspeed", 2, 16), ("horovod", 2, 16), ("ddp", 2, 32)]),
)
REPEATS = 2


def make_record(rng: random.Random, night: int, cluster: tuple, setting: tuple, repeat: int) -> dict:
    name, gpu, nodes, _ = cluster
    backend, world, micro = setting
    stamp = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=datetime.timezone.utc) + datetime.timedelta(days=night, minutes=7 * repeat)
    base = {"ddp": 1.0, "deepspeed": 0.96, "horovod": 0.9}[backend] * world * (2900 if gpu else 40)
    throughput = base * (0.9 if name == "ampere" and night >= 300 else 1.0) * rng.gauss(1, 0.02)
    config = {
        "backend": backend, "backend_config": None, "model": "resnet50", "dataset": "imagefolder",
        "data_dir": "/datasets/imagenet", "image_size": 224, "num_classes": 1000, "world_size": world,
        "micro_batch_size": micro, "accumulation_steps": 1, "global_batch_size": world * micro, "optimizer": "lars",
        "lr": 10.0, "scaling_rule": "none", "reference_batch_size": 256, "momentum": 0.9, "weight_decay": 5e-5,
        "trust_coefficient": 0.001, "lars_eps": 0.0, "warmup_epochs": 5.0, "end_lr": 0.0, "poly_power": 2.0,
        "epochs": 1.0, "steps": 400, "target_top1": 0.05, "eval_every_epochs": 1, "seed": repeat,
        "device": "cuda" if gpu else "cpu", "precision": "bf16" if gpu else "fp32", "channels_last": bool(gpu),
        "cudnn_benchmark": True, "compile": False, "data_workers": 8, "synthetic_samples": 1024,
        "train_images_per_class": 64, "val_images_per_class": 16, "timing_warmup_steps": 20,
        "log_every_steps": 1, "telemetry_every_steps": None, "checkpoint_every_steps": None,
        "collective_timeout_sec": 600.0,
    }  # fmt: skip
    run_id = f"{name}-{night * 100 + repeat}-{backend}-{world}-{micro}"
    top1 = 0.07 * rng.gauss(1, 0.01)
    return {
        "schema_version": 2, "run_id": run_id, "experiment": f"nightly-{name}", "label": run_id, "status": "ok",
        "error": None, **{k: config[k] for k in ("backend", "model", "dataset", "image_size", "num_classes",
        "world_size", "micro_batch_size", "accumulation_steps", "global_batch_size", "optimizer", "scaling_rule",
        "warmup_epochs", "seed", "precision", "channels_last", "compile")},
        "device": config["device"], "base_lr": 10.0, "lr": 10.0 * world * micro / 256, "steps": 400,
        "steps_per_epoch": 400, "epochs": 1.0, "throughput_images_per_sec": throughput,
        "step_time_p50_sec": world * micro / throughput, "step_time_p95_sec": 1.1 * world * micro / throughput,
        "data_wait_fraction": 0.02, "final_top1": top1, "final_top5": 0.2, "target_top1": 0.05,
        "time_to_accuracy_sec": 400 * world * micro / throughput, "epochs_to_accuracy": 1.0,
        "eval_history": [{"epoch": e, "step": 40 * e, "top1": top1 * e / 10, "top5": 0.02 * e, "time_sec": 9.0 * e}
                         for e in range(1, 11)],
        "loss_curve": [[step, round(6.9 - step / 200 + rng.random() / 10, 6)] for step in range(1, 401)],
        "diverged_at_step": None, "param_checksum": rng.random() * 1e5, "wall_time_sec": 460.0,
        "restarts": 0, "restart_overhead_sec": 0.0,
        "provenance": {
            "timestamp_utc": stamp.isoformat(timespec="seconds"), "larsbench": "0.1.0",
            "git_commit": hashlib.sha1(str(night // 7).encode()).hexdigest(),
            "versions": {"python": "3.11.7", "torch": "2.13.0" if night < 150 else "2.14.1", "torchvision": "0.28.0",
                         "torch_cuda_build": "13.0", "cudnn": "92400", "nccl": "2.27.3" if night < 300 else "2.28.1"},
            "host": f"{name}-n001", "platform": "Linux-6.1.0-x86_64-with-glibc2.36", "cpu_model": "AMD EPYC 9654",
            "cpu_count": 192, "torch_threads": 12, "gpu_model": gpu, "gpu_count": 8 if gpu else 0, "launcher": "slurm",
            "num_nodes": nodes, "slurm_job_id": str(100000 + night), "slurm_array_task_id": str(repeat),
            "node_list": f"{name}-n[001-{nodes:03d}]", "allocation": {"nodes": nodes, "ntasks_per_node": world // nodes},
            "slurm_restart_count": 0, "argv": ["-m", "larsbench.suite.worker", "--spec-json", json.dumps(config)],
            "config": config,
        },
    }  # fmt: skip


def generate(root: Path, records: int, nights: int, seed: int = 0) -> int:
    """One folder per night under ``root``; returns the number of records written."""
    rng = random.Random(seed)
    per_night = sum(len(c[3]) for c in CLUSTERS) * REPEATS
    written = 0
    for night in range(nights):
        lines = []
        for cluster in CLUSTERS:
            for setting in cluster[3]:
                for repeat in range(REPEATS):
                    if written + len(lines) < records:
                        lines.append(json.dumps(make_record(rng, night, cluster, setting, repeat), separators=(",", ":")))
        if lines:
            folder = root / f"{night:03d}"
            folder.mkdir(parents=True)
            (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
            written += len(lines)
    if written < records:
        raise SystemExit(f"{nights} nights of {per_night} records hold only {written}; ask for more nights")
    return written


def timed(what, *args, **kwargs):
    start = time.perf_counter()
    value = what(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history_store", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--nights", type=int, default=400)
    parser.add_argument("--target", type=float, default=3.0, help="seconds allowed for loading and grouping")
    parser.add_argument("--report", action="store_true", help="also write the report and time it")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="generate into DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)

    from benchmarks.run import OtherLoad
    from larsbench.loop.provenance import cpu_model
    from larsbench.reports.history import build_history
    from larsbench.reports.history_store import load_store

    with tempfile.TemporaryDirectory(prefix="larsbench-history-") as tmp:
        root = args.keep or Path(tmp) / "store"
        count, seconds = timed(generate, root, args.records, args.nights)
        size = sum(p.stat().st_size for p in root.rglob("results.jsonl"))
        print(f"store: {count} records, {args.nights} nights, {size / 1e6:.0f} MB of results files ({seconds:.1f} s to write)")
        print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        loads = []
        with OtherLoad() as load:
            for _ in range(3):
                store, seconds = timed(load_store, [root])
                loads.append(seconds)
        median = statistics.median(loads)
        verdict = "PASS" if median <= args.target else "FAIL"
        print(f"load and group: {median:.2f} s median of {', '.join(f'{t:.2f}' for t in loads)} "
              f"(target <= {args.target:g} s) {verdict}; {len(store.nights)} nights, {len(store.settings)} settings; "
              + (f"other processes used {load.cores:.2f} of {os.cpu_count()} cores meanwhile" if load.cores is not None else ""))  # fmt: skip
        history, seconds = timed(build_history, store)
        found = history.findings
        print(f"series and change points: {seconds:.2f} s for {len(history.series)} series; {len(found)} step(s): "
              + "; ".join(f"{f.setting.split(' on ')[-1]} {f.metric.name} {f.size} at {f.first_bad.label}" for f in found[:6]))  # fmt: skip
        if args.report:
            from larsbench.reports.history_report import write_history

            files, seconds = timed(write_history, history, root.with_name(root.name + "-report"), [str(root)])
            print(f"report: {seconds:.1f} s for {len(files.images)} plots ({files.html})")
        return 0 if median <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
