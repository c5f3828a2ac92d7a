"""Result records for the report tests, made by the suite's record builder (``tests.records.make_record``,
which calls ``loop.record.build_record``): tiny_cnn on a test CPU, N=1 × micro 8, 100 images/s.

``record(**keys)`` takes record keys (``throughput_images_per_sec``, ``final_top1``,
``time_to_accuracy_sec``, ``base_lr``, ``compute_sec_per_step``, ...) and run settings by name and
turns them into what a run would have measured, so the builder derives every figure itself. A
run flagged ``unstable`` is one whose step times shifted mid-window (``disturbed=True``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.records import make_record

DEFAULT_STEP_SEC = 0.08
# Per-step measurements of a record, by the record key they end up under.
_PER_STEP = {"data_wait_sec_per_step": "data_wait_sec", "compute_sec_per_step": "compute_sec",
             "exposed_comm_sec_per_step": "exposed_comm_sec", "step_time_mean_sec": "step_sec"}  # fmt: skip


def disturbed_steps(steps: int = 40, before: float = DEFAULT_STEP_SEC, after: float = 1.5 * DEFAULT_STEP_SEC) -> list[float]:
    """A window whose step time shifts halfway (``before`` → ``after``): the builder flags it unstable."""
    return [before] * (steps // 2) + [after] * (steps - steps // 2)


def record(*, disturbed: bool = False, **keys: Any) -> dict[str, Any]:
    """One record as the suite writes it (see the module docstring)."""
    status = keys.pop("status", "ok")
    ok = status == "ok"
    args: dict[str, Any] = {"status": status, "image_size": 32, "micro_batch_size": 8, "warmup_epochs": 0.5,
                            "target_top1": 0.4, "cpu_model": "Test CPU"}  # fmt: skip
    if keys.get("gpu_model"):
        args["gpu_count"] = 1
    args["throughput"] = keys.pop("throughput_images_per_sec", 100.0 if ok else None)
    if "base_lr" in keys:
        args["lr"] = keys.pop("base_lr")
    top1 = keys.pop("final_top1", 0.5 if ok else None)
    top5 = keys.pop("final_top5", 0.9)
    evals = keys.pop("eval_history", None)
    if evals is None and top1 is not None:
        evals = [{"step": 30, "epoch": 3.0, "top1": top1, "top5": top5, "elapsed_sec": 10.0}]
    args["evals"] = evals
    args["time_to_accuracy_sec"] = keys.pop("time_to_accuracy_sec", 10.0 if ok else None)
    args["epochs_to_accuracy"] = keys.pop("epochs_to_accuracy", 2.0 if ok else None)
    if "transport" in keys:  # what the backend reports in provenance; the builder copies it up
        args["transport"] = {"collectives": keys.pop("transport")}
    for key, arg in _PER_STEP.items():
        if key in keys:
            args[arg] = keys.pop(key)
    step = args.get("step_sec", DEFAULT_STEP_SEC)
    for key, arg in (("compute_fraction", "compute_sec"), ("comm_fraction", "exposed_comm_sec")):
        if key in keys:
            args.setdefault(arg, keys.pop(key) * step)
    if disturbed:
        args["step_sec"] = disturbed_steps()
    args.update(keys)
    return make_record(**args)


def write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
