"""Entry point of one rank: ``python -m suite.worker --spec-json ... --run-id ... --results ...``.

Started by a backend's launcher (torchrun locally, srun on Slurm). Rank 0 appends the
record. Any rank that fails leaves a one-line reason in ``<results dir>/.larsbench/errors/``
so the launcher can say which rank died and why.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

from backends.registry import get_backend
from suite import environment, provenance
from suite.config import build_spec
from suite.errors import ConfigError
from suite.record import build_record
from suite.results import append_record
from suite.checkpoint import checkpoint_root
from suite.eventlog import EventLog
from suite.telemetry import telemetry_path
from suite.preemption import EXIT_PREEMPTED, PreemptionNotice
from suite.train import RunContext, train


def error_dir(results: Path) -> Path:
    return results.parent / ".larsbench" / "errors"


def pid_dir(results: Path) -> Path:
    return results.parent / ".larsbench" / "pids"


def event_log_path(results: Path, run_id: str) -> Path:
    return results.parent / "mllog" / f"{run_id}.log"


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device", "cuda was requested but no CUDA device is visible; use --device cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="suite.worker")
    parser.add_argument("--spec-json", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--experiment", default="cli")
    args = parser.parse_args(argv)

    env = environment.detect()
    # Installed first: until then the preemption signal's default action would kill the rank.
    ctx = RunContext(checkpoints=checkpoint_root(args.results, args.run_id), preemption=PreemptionNotice())
    _leave_pid(args, env.rank)
    # A launcher (torchrun, srun --kill-on-bad-exit) stops the survivors of a dead rank with
    # SIGTERM: saying so leaves the rank that died as the only one without a word.
    signal.signal(signal.SIGTERM, lambda signum, frame: (_leave_error(args, env.rank, "stopped by its launcher (SIGTERM)"), os._exit(143)))
    backend = None
    try:
        spec = build_spec([("spec", json.loads(args.spec_json))])
        if env.world_size != spec.world_size:
            raise ConfigError(
                "world_size",
                f"the run asks for {spec.world_size} ranks but {env.source} started {env.world_size};"
                " make the launcher's task count match world_size",
            )
        backend = get_backend(spec.backend)(spec.backend_config)
        device = pick_device(spec.device, env.local_rank)
        backend.setup(env, device, spec.collective_timeout_sec)
        ctx.checkpoint_every_steps = spec.checkpoint_every_steps
        # Set by the Slurm script (slurm.job queue-time); absent for local runs.
        queued = os.environ.get("LARSBENCH_QUEUE_SEC")
        ctx.queue_sec = float(queued) if queued else None
        log_path = event_log_path(args.results, args.run_id)
        ctx.events = EventLog(log_path if env.is_main else None)
        ctx.telemetry = telemetry_path(args.results, args.run_id)
        metrics = train(spec, backend, device, env.rank, env.world_size, ctx)
        if metrics.status == "preempted":
            return EXIT_PREEMPTED  # checkpointed; the record comes when the run completes
        if env.is_main:
            info = provenance.collect(spec.to_dict(), env, backend.versions())
            event_log = str(log_path.relative_to(args.results.parent))
            side = ctx.telemetry if ctx.telemetry.exists() else None
            record = build_record(
                spec, args.run_id, args.experiment, info, metrics, device=str(device), event_log=event_log,
                telemetry=str(side.relative_to(args.results.parent)) if side else None,
            )  # fmt: skip
            append_record(args.results, record)
        return 0
    except ConfigError as exc:
        _leave_error(args, env.rank, str(exc))
        print(f"larsbench: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        _leave_error(args, env.rank, "".join(traceback.format_exception_only(exc)).strip())
        raise
    finally:
        if backend is not None:
            backend.teardown()


def _leave_pid(args: argparse.Namespace, rank: int) -> None:
    folder = pid_dir(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{args.run_id}.rank{rank}").write_text(f"{os.getpid()}\n")


def _leave_error(args: argparse.Namespace, rank: int, message: str) -> None:
    try:
        folder = error_dir(args.results)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{args.run_id}.rank{rank}").write_text(message.splitlines()[-1] + "\n")
    except OSError:
        pass  # the launcher still records the failure, with less detail


if __name__ == "__main__":
    sys.exit(main())
