"""The ranks of test_sharding_integration.py, started once by torchrun (2 gloo CPU ranks): each
rank trains every setting in turn (backend × optimizer_sharding × layer-wise optimizer) through
the real backends and the suite's Trainer, and rank 0 appends each run's record (the suite's own
record builder) to ``OUT/results.jsonl``. One start of the ranks for all settings: imports and
rendezvous are most of a tiny run's time on 2 cores.

Beside the records, ``OUT/marks.jsonl`` holds, per run and measured step, how many collectives
the backend timed as launched reductions and as collectives the step waited on whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from larsbench.backends.registry import get_backend
from larsbench.core import environment
from larsbench.core.layout import RunFiles
from larsbench.core.results import append_record
from larsbench.loop import provenance
from larsbench.loop.record import build_record
from larsbench.loop.trainer import RunContext, Trainer
from larsbench.suite.config import build_spec
from larsbench.workloads.optimizers import OPTIMIZERS

SHARDINGS = (("ddp", "none"), ("ddp", "zero1"), ("deepspeed", "none"), ("deepspeed", "zero1"), ("deepspeed", "zero2"))
LAYERWISE = tuple(name for name, c in OPTIMIZERS.items() if c.layerwise and c.shards)
RUN = {"model": "tiny_cnn", "dataset": "synthetic", "image_size": 16, "world_size": 2, "micro_batch_size": 8,
       "steps": 12, "synthetic_samples": 256, "device": "cpu", "seed": 0, "log_every_steps": 4,
       "telemetry_every_steps": 4, "compute_probe_steps": 2, "timing_warmup_steps": 2, "weight_decay": 1e-2}  # fmt: skip


def main(out: Path) -> None:
    env = environment.detect()
    device = torch.device("cpu")
    for optimizer in LAYERWISE:
        for backend_name, sharding in SHARDINGS:
            spec = build_spec([("flags", {**RUN, "backend": backend_name, "optimizer": optimizer,
                                          "optimizer_sharding": sharding})])  # fmt: skip
            run_id = f"{backend_name}-{sharding}-{optimizer}"
            backend = get_backend(spec.backend)(spec.backend_config)
            backend.setup(env, device, 120)  # the process group of the first run serves them all
            marks = []
            take = backend.comm_timer.take

            def counted(take=take, marks=marks):
                taken = take()
                marks.append({"launched": len(taken.messages), "waited": len(taken.waited)})
                return taken

            backend.comm_timer.take = counted
            files = RunFiles.of(out, run_id)
            metrics = Trainer(spec, backend, device, env.rank, env.world_size, RunContext(files=files)).run()
            if env.is_main:
                info = provenance.collect(spec.to_dict(), env, backend.versions(), backend.transport())
                append_record(files.results, build_record(spec, run_id, "sharding", info, metrics, device="cpu", files=files))
                with (out / "marks.jsonl").open("a") as handle:
                    handle.write(json.dumps({"run_id": run_id, "steps": marks}) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
