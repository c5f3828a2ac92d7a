"""Synthetic result records: the suite's schema with hand-picked numbers."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from larsbench.core.results import SCHEMA_VERSION
from larsbench.workloads.optimizers import get_optimizer

_ids = itertools.count()


def record(**overrides):
    """One record of the suite's schema: tiny_cnn on a test CPU, N=1 × micro 8, 100 images/s."""
    r = {
        "schema_version": SCHEMA_VERSION, "run_id": f"run-{next(_ids)}", "experiment": "test", "label": None,
        "status": "ok", "error": None, "backend": "ddp", "model": "tiny_cnn", "dataset": "synthetic",
        "image_size": 32, "num_classes": 10, "device": "cpu", "world_size": 1, "micro_batch_size": 8,
        "accumulation_steps": 1, "optimizer": "lars", "scaling_rule": "none", "base_lr": 2.0, "lr": 2.0,
        "warmup_epochs": 0.5, "seed": 0, "steps": 30, "steps_per_epoch": 10, "epochs": 3.0,
        "throughput_images_per_sec": 100.0, "step_time_p50_sec": 0.08, "step_time_p95_sec": 0.1,
        "data_wait_fraction": 0.1, "final_top1": 0.5, "final_top5": 0.9, "target_top1": 0.4,
        "time_to_accuracy_sec": 10.0, "epochs_to_accuracy": 2.0, "eval_history": [], "loss_curve": [[1, 2.3]],
        "diverged_at_step": None, "param_checksum": 1.0, "wall_time_sec": 12.0,
    }  # fmt: skip
    cpu = overrides.pop("cpu_model", "Test CPU")
    gpu = overrides.pop("gpu_model", None)
    r.update(overrides)
    r["global_batch_size"] = r["world_size"] * r["micro_batch_size"] * r["accumulation_steps"]
    r.setdefault("layer_telemetry", get_optimizer(r["optimizer"]).telemetry)
    if r["label"] is None:
        r["label"] = f"ddp-tiny_cnn-w{r['world_size']}-gb{r['global_batch_size']}-{r['optimizer']}"
    if r["status"] != "ok":
        for key in ("throughput_images_per_sec", "step_time_p50_sec", "step_time_p95_sec", "data_wait_fraction",
                    "final_top1", "final_top5", "time_to_accuracy_sec", "epochs_to_accuracy"):  # fmt: skip
            if key not in overrides:
                r[key] = None
    config = {k: r[k] for k in ("backend", "model", "dataset", "image_size", "num_classes", "world_size",
                                "micro_batch_size", "accumulation_steps", "global_batch_size", "optimizer",
                                "scaling_rule", "warmup_epochs", "target_top1", "seed")}  # fmt: skip
    config.update(lr=r["base_lr"], epochs=3.0, steps=None, device="cpu", data_dir=f"/data/s{r['seed']}")
    r["provenance"] = {
        "timestamp_utc": "2026-01-01T00:00:00+00:00", "larsbench": "0.1.0", "git_commit": "abc",
        "versions": {"python": "3.11", "torch": "2.5"}, "host": "h", "cpu_model": cpu, "cpu_count": 2,
        "gpu_model": gpu, "gpu_count": 1 if gpu else 0, "launcher": "torchrun", "num_nodes": 1, "config": config,
    }  # fmt: skip
    return r


def write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
