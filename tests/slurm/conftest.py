"""Fixtures for the Slurm tests: a real single-node Slurm (slurm/local_cluster.sh) and helpers.

Without ``sbatch`` on the machine the real-Slurm tests skip, with the reason, unless ``CI`` is
set: in CI they never skip, and a cluster that cannot start fails them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "slurm" / "local_cluster.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local Slurm; SLURM_CONF points at it for this session. Started if needed
    (idempotent) and stopped afterwards only if this fixture started it."""
    if shutil.which("sbatch") is None and not in_ci():
        pytest.skip("Slurm is not installed (no sbatch on PATH); `bash slurm/local_cluster.sh start` "
                    "installs (apt, root) and starts a single-node cluster; in CI these tests never skip")  # fmt: skip
    was_up = subprocess.run(["bash", str(LOCAL_CLUSTER), "status"], capture_output=True, text=True).returncode == 0
    started = subprocess.run(["bash", str(LOCAL_CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        message = f"local Slurm did not start: {started.stderr.strip()[-2000:]}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    exports = dict(
        word.split("=", 1) for line in started.stdout.splitlines() if line.startswith("export ")
        for word in shlex.split(line)[1:]
    )  # fmt: skip
    saved = {k: os.environ.get(k) for k in exports}
    os.environ.update(exports)
    yield exports
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if not was_up:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "stop"], capture_output=True, timeout=120, env={**os.environ, **exports})


def larsbench_slurm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``larsbench slurm ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "larsbench", "slurm", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def job_ids(stdout: str) -> list[str]:
    return [line.rsplit("job ", 1)[1].strip() for line in stdout.splitlines() if line.startswith("submitted ")]


def records(output: Path) -> list[dict]:
    path = output / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def job_field(job_id: str, field: str) -> str | None:
    """One field of ``scontrol show job`` (first record), e.g. Restarts or JobState."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    for word in shown.stdout.split():
        if word.startswith(field + "="):
            return word.split("=", 1)[1]
    return None


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def logs(output: Path) -> str:
    folder = output / "slurm" / "logs"
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob("*"))) if folder.is_dir() else ""
