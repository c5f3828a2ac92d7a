"""Entry point of one rank: ``python -m larsbench.suite.worker --spec-json ... --run-id ... --results ...``.

Started by larsbench's local launcher (``suite.local_ranks``) or horovodrun on one machine, by
srun on Slurm. Rank 0 appends the
record. Any rank that fails leaves a one-line reason (``RunFiles.error``) so the launcher can
say which rank died and why.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import torch

from larsbench.backends.registry import get_backend
from larsbench.core import environment
from larsbench.core.device import pick_device
from larsbench.core.errors import ConfigError, error_line
from larsbench.core.files import free_reserve, space_note
from larsbench.core.layout import RunFiles
from larsbench.core.phases import Phases
from larsbench.core.preemption import EXIT_PREEMPTED, PreemptionNotice
from larsbench.core.results import append_record
from larsbench.loop import provenance
from larsbench.loop.eventlog import EventLog
from larsbench.loop.record import build_record
from larsbench.loop.trainer import RunContext, Trainer
from larsbench.suite import repeats
from larsbench.suite.config import build_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsbench.suite.worker")
    parser.add_argument("--spec-json", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--experiment", default="cli")
    parser.add_argument("--series-json", help="the adaptive series this run belongs to (suite.repeats): rank 0 records the decision after it")
    args = parser.parse_args(argv)
    # This module's imports are done: the launcher's and the imports' phases end here.
    phases = Phases.of_this_process()

    env = environment.detect()
    files = RunFiles.of(args.results, args.run_id)
    # Installed first: until then the preemption signal's default action would kill the rank.
    ctx = RunContext(files=files, preemption=PreemptionNotice(), phases=phases)
    # With its host: on several nodes a pid alone names no process, and the host names the node
    # that a rank which fell silent ran on.
    _leave(files.pid(env.rank), f"{os.getpid()} {socket.gethostname()}")
    # A launcher (larsbench's own, horovodrun, srun --kill-on-bad-exit) stops the survivors of a dead rank with
    # SIGTERM: saying so leaves the rank that died as the only one without a word.
    signal.signal(
        signal.SIGTERM, lambda signum, frame: (_leave(files.error(env.rank), "stopped by its launcher (SIGTERM)"), os._exit(143))
    )
    backend = trainer = None
    try:
        spec = build_spec([("spec", json.loads(args.spec_json))])
        if env.world_size != spec.world_size:
            raise ConfigError(
                "world_size",
                f"the run asks for {spec.world_size} ranks but {env.source} started {env.world_size};"
                " make the launcher's task count match world_size",
            )
        environment.check_rendezvous(env)
        if spec.network_interface is not None:
            environment.use_interface(spec.network_interface)
        if spec.threads_per_rank is not None:  # also exported as OMP_NUM_THREADS by the launchers
            torch.set_num_threads(spec.threads_per_rank)
        with phases.timed("imports"):
            backend_class = get_backend(spec.backend)
            backend_class.load()  # the backend's library (DeepSpeed, Horovod): an import, not the rendezvous
        backend = backend_class(spec.backend_config)
        device = pick_device(spec.device, env.local_rank)
        with phases.timed("rendezvous"):
            backend.setup(env, device, spec.collective_timeout_sec)
        ctx.checkpoint_every_steps = spec.checkpoint_every_steps
        # Set by the Slurm script (larsbench.slurm.job queue-time); absent for local runs.
        queued = os.environ.get("LARSBENCH_QUEUE_SEC")
        ctx.queue_sec = float(queued) if queued else None
        ctx.events = EventLog(files.event_log if env.is_main else None)
        ctx.platform_nodes = env.num_nodes
        trainer = Trainer(spec, backend, device, env.rank, env.world_size, ctx)
        metrics = trainer.run()
        if metrics.status == "preempted":
            return EXIT_PREEMPTED  # checkpointed; the record comes when the run completes
        if env.is_main:
            info = provenance.collect(spec.to_dict(), env, backend.versions(), backend.transport())
            metrics.setup_sec, metrics.phases_sec = phases.setup_sec, phases.as_dict()
            record = build_record(spec, args.run_id, args.experiment, info, metrics, device=str(device), files=files)
            phases.end_record()  # up to here: the record's own statistics included
            record["phases_sec"] = phases.as_dict()
            record["timestamp_end"] = time.time()  # written now, not when its building began
            if args.series_json:
                record["repeats_decision"] = repeats.decide_for(files.results, record, json.loads(args.series_json))
            append_record(files.results, record)
        return 0
    except ConfigError as exc:
        _leave(files.error(env.rank), str(exc))
        print(error_line(exc), file=sys.stderr)
        return 2
    except BaseException as exc:
        reason = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
        if "No space left on device" in reason and (full := space_note([files.folder, "/dev/shm"])):
            reason += f" ({full})"
        _leave(files.error(env.rank), reason, files.reserve)
        raise
    finally:
        # In order, while Python still runs: the trainer (its model, optimizer and DDP's reducer,
        # which holds the process group) is freed before the process group is destroyed. Left to
        # the interpreter's exit, the reducer could outlive the group's threads and abort the
        # process ("terminate called without an active exception") after a finished run.
        if trainer is not None:
            trainer.data.close()  # its data-loader workers first, while their queues still work
        trainer = None
        gc.collect()
        if backend is not None:
            backend.teardown()


def _leave(path: Path, text: str, reserve: Path | None = None) -> None:
    """A one-line note for the launcher (this rank's pid, or why it failed). On a full disk
    ``reserve`` makes room for it (``core.files.hold_reserve``)."""
    for _ in range(2):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((text.splitlines() or [""])[-1] + "\n")
            return
        except OSError as exc:
            if exc.errno != errno.ENOSPC or reserve is None or not free_reserve(reserve):
                return  # the launcher still records the failure, with less detail


if __name__ == "__main__":
    code = main()
    # By now the record is written, the trainer (data-loader workers included) freed and the
    # process group destroyed: the interpreter's own teardown of torch and the backend's
    # library only adds half a second to every rank's exit, which the launcher waits for.
    logging.shutdown()  # the event log's handlers, flushed and closed
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
