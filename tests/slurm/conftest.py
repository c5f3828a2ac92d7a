"""Fixtures for the Slurm tests: a real single-node Slurm and a real 2-node one
(slurm/local_cluster.sh, without and with --nodes 2), and helpers.

Without ``sbatch`` on the machine (or, for the 2-node cluster, without root and iproute2) the
real-Slurm tests skip, with the reason, unless ``CI`` is set: in CI they never skip, and a
cluster that cannot start fails them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "slurm" / "local_cluster.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def start_cluster(args: list[str], what: str) -> tuple[bool, dict[str, str]]:
    """Start a local cluster (idempotent): whether it was up already, and its ``export`` line's
    variables. In CI a cluster that cannot start fails the test; elsewhere it skips it."""
    command = ["bash", str(LOCAL_CLUSTER)]
    was_up = subprocess.run([*command, "status", *args], capture_output=True, text=True).returncode == 0
    started = subprocess.run([*command, "start", *args], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        message = f"{what} did not start: {started.stderr.strip()[-2000:]}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    exports = dict(
        word.split("=", 1) for line in started.stdout.splitlines() if line.startswith("export ")
        for word in shlex.split(line)[1:]
    )  # fmt: skip
    return was_up, exports


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running local Slurm; SLURM_CONF points at it for the whole test run. Started if needed
    (idempotent) and stopped afterwards only if this fixture started it."""
    if shutil.which("sbatch") is None and not in_ci():
        pytest.skip("Slurm is not installed (no sbatch on PATH); `bash slurm/local_cluster.sh start` "
                    "installs (apt, root) and starts a single-node cluster; in CI these tests never skip")  # fmt: skip
    was_up, exports = start_cluster([], "local Slurm")
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


@dataclass(frozen=True)
class Nodes:
    """The 2-node cluster: ``env`` reaches it (its SLURM_CONF, its client wrappers first on PATH)."""

    env: dict[str, str]
    folder: Path

    def link(self, node: str) -> str:
        """The host end of ``node``'s link: ``ip link set LINK down`` cuts the node off."""
        return subprocess.run(["bash", str(LOCAL_CLUSTER), "link", node], capture_output=True, text=True, check=True, env=self.env).stdout.strip()

    def run(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), capture_output=True, text=True, env=self.env, **kwargs)


@pytest.fixture(scope="session")
def slurm_nodes():
    """A running 2-node local Slurm. Its environment is handed to the commands that use it,
    never put in os.environ: the single-node cluster's tests in the same session use that."""
    missing = [tool for tool in ("sbatch", "ip", "nsenter", "unshare") if shutil.which(tool) is None]
    reason = (f"{', '.join(missing)} missing" if missing else "") or ("" if os.geteuid() == 0 else "not root")
    if reason and not in_ci():
        pytest.skip(f"a 2-node Slurm needs root, Slurm and iproute2 ({reason}); `bash slurm/local_cluster.sh start --nodes 2` "
                    "builds one from network namespaces; in CI these tests never skip")  # fmt: skip
    was_up, exports = start_cluster(["--nodes", "2"], "the 2-node Slurm")
    folder = Path(exports["LARSBENCH_SLURM_NODES_DIR"])
    env = {**os.environ, "SLURM_CONF": exports["SLURM_CONF"], "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONWARNINGS": "ignore"}  # fmt: skip
    yield Nodes(env, folder)
    if not was_up:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "stop", "--nodes", "2"], capture_output=True, timeout=120)


def larsbench_slurm(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``larsbench slurm ARGS`` in a fresh process (``env``: another cluster's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "larsbench", "slurm", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**(env or os.environ), "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def job_ids(stdout: str) -> list[str]:
    return [line.rsplit("job ", 1)[1].strip() for line in stdout.splitlines() if line.startswith("submitted ")]


def records(output: Path) -> list[dict]:
    path = output / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def job_field(job_id: str, field: str, env: dict[str, str] | None = None) -> str | None:
    """One field of ``scontrol show job`` (first record), e.g. Restarts or JobState."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env)
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
