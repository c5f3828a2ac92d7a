"""A large-batch study for tests, of records made by the suite's record builder: LARS and SGD
(linear rule) at B = 8…64 by accumulation on one worker, a throughput sweep that reaches
B = 16…64 with more workers, and LARS telemetry files."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reports.report_records import record

TRAIN_IMAGES = 640  # steps_per_epoch × B for every study run


def study_run(optimizer: str, batch: int, **overrides):
    """One worker, micro-batch 8, accumulation B/8: how a small machine reaches a large batch."""
    fields = {"optimizer": optimizer, "world_size": 1, "micro_batch_size": 8, "accumulation_steps": batch // 8,
              "steps_per_epoch": TRAIN_IMAGES // batch, "throughput_images_per_sec": 100.0}  # fmt: skip
    if optimizer == "sgd":
        fields.update(scaling_rule="linear", warmup_epochs=0.0, base_lr=0.1, reference_batch_size=8)
    fields.update(overrides)
    return record(**fields)


def sweep_run(world_size: int, throughput: float):
    """A throughput-only run (no evaluation): N workers × micro 8, no accumulation."""
    return record(world_size=world_size, micro_batch_size=8, throughput_images_per_sec=throughput,
                  final_top1=None, final_top5=None, time_to_accuracy_sec=None, epochs_to_accuracy=None)  # fmt: skip


def study():
    history = [{"step": 10, "epoch": 1.0, "top1": 0.6, "top5": 0.9, "elapsed_sec": 5.0},
               {"step": 20, "epoch": 2.0, "top1": 0.54, "top5": 0.9, "elapsed_sec": 9.0}]  # fmt: skip
    lars = [
        study_run("lars", 8, seed=0, final_top1=0.50, epochs_to_accuracy=2.0, time_to_accuracy_sec=12.0),
        study_run("lars", 8, seed=1, final_top1=0.54, epochs_to_accuracy=2.0, time_to_accuracy_sec=14.0,
                  eval_history=history),
        study_run("lars", 16, final_top1=0.52, epochs_to_accuracy=2.0, time_to_accuracy_sec=13.0),
        study_run("lars", 32, final_top1=0.50, epochs_to_accuracy=2.2, time_to_accuracy_sec=14.0),
        study_run("lars", 64, final_top1=0.45, epochs_to_accuracy=3.6, time_to_accuracy_sec=24.0),
    ]  # fmt: skip
    sgd = [
        study_run("sgd", 8, final_top1=0.50, epochs_to_accuracy=2.0, time_to_accuracy_sec=12.0),
        study_run("sgd", 16, final_top1=0.45, epochs_to_accuracy=2.5, time_to_accuracy_sec=16.0),
        study_run("sgd", 32, status="diverged", diverged_at_step=12),
        study_run("sgd", 64, final_top1=0.20, epochs_to_accuracy=None, time_to_accuracy_sec=None),
    ]
    return lars + sgd + [sweep_run(2, 190.0), sweep_run(4, 360.0), sweep_run(8, 640.0)]


def telemetry_rows(steps, layers=("conv1.weight", "layer1.conv.weight", "fc.weight"), lr=1.0):
    """Rows of a telemetry file: trust ratio 0.01 × (layer + 1) × step, effective LR = lr × that."""
    return [
        {"step": s, "layer": name, "layer_index": i, "w_norm": 1.0, "g_norm": 2.0,
         "trust_ratio": 0.01 * (i + 1) * s, "lr": lr, "effective_lr": lr * 0.01 * (i + 1) * s}
        for s in steps for i, name in enumerate(layers)
    ]  # fmt: skip


def write_lines(path: Path, rows, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path
