"""What a number needs next to it to be trusted later: versions, hardware, job, commit, config."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from larsbench import __version__
from larsbench.core.environment import ClusterEnvironment


# Environment variables that steer how ranks communicate and compute: recorded with every run.
STEERING_PREFIXES = ("NCCL_", "GLOO_", "HOROVOD_", "LARSBENCH_HOROVOD_", "TORCH_NCCL_", "TORCH_DISTRIBUTED_", "UCX_", "FI_", "OMP_", "MKL_",
                     "OPENBLAS_", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


def steering_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith(STEERING_PREFIXES)}


def collect(
    config: dict[str, Any], env: ClusterEnvironment | None, backend_versions: dict[str, str],
    transport: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "larsbench": __version__,
        "git_commit": git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": _version_of("torchvision"),
            "torch_cuda_build": torch.version.cuda,
            "cudnn": _cudnn(),
            "nccl": _nccl(),
            **backend_versions,
        },
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        # Ranks sharing a node split its cores; throughput depends on it as much as on the CPU.
        "torch_threads": torch.get_num_threads(),
        "cpu_affinity_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "gpu_model": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "launcher": env.source if env else None,
        "num_nodes": env.num_nodes if env else 1,
        "slurm_job_id": env.job_id if env else os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": env.array_task_id if env else os.environ.get("SLURM_ARRAY_TASK_ID"),
        "node_list": env.node_list if env else os.environ.get("SLURM_JOB_NODELIST"),
        # The allocation shape `larsbench slurm` requested, and how often Slurm requeued the job.
        "allocation": json.loads(os.environ.get("LARSBENCH_ALLOCATION") or "null"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
        # How the backend's collectives really travel, and what steered them (fairness between backends).
        "transport": transport,
        "environment": steering_environment(),
        "argv": sys.argv,
        "config": config,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """Commit of the larsbench checkout that is running, with ``-dirty`` for local edits."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version_of(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _cudnn() -> str | None:
    version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return str(version) if version else None


def _nccl() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        return ".".join(map(str, torch.cuda.nccl.version()))
    except (AttributeError, RuntimeError):
        return None
