"""The slow-interconnect sweep behind docs/studies/slow-links: every backend on one node and
across the two nodes of the local 2-node Slurm, at each link rate, then ``larsbench report``::

    python -m benchmarks.slow_links --output docs/studies/slow-links [--rates unlimited,10gbit,1gbit,200mbit]

For each rate it limits both nodes' links (``local_cluster.sh shape RATE``: a tbf rate limit on
the host end of each node's veth pair, so each direction between the nodes is limited once),
runs ``suite/experiments/slow-links.yaml`` through ``larsbench slurm --wait`` with
``--conditions '{"link_rate": RATE}'`` (the rate becomes part of each run's setting), and lifts
the limit whatever happens. The nodes share this machine's cores, so it first waits until the
1-minute load is below ``--max-load`` and prints the load, CPU and date it ran with.

Needs root (namespaces, tc).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local_cluster.sh"
EXPERIMENT = REPO / "suite" / "experiments" / "slow-links.yaml"


def cluster_environment() -> dict[str, str]:
    """Start (or find) the 2-node cluster; the environment its clients need."""
    started = subprocess.run(["bash", str(CLUSTER), "start", "--nodes", "2"], capture_output=True, text=True, check=True)
    exports = dict(
        word.split("=", 1) for line in started.stdout.splitlines() if line.startswith("export ")
        for word in shlex.split(line)[1:]
    )  # fmt: skip
    folder = Path(exports["LARSBENCH_SLURM_NODES_DIR"])
    return {**os.environ, "SLURM_CONF": exports["SLURM_CONF"], "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def wait_for_quiet(max_load: float, patience_sec: float) -> float:
    """The 1-minute load once it is below ``max_load`` (or when patience runs out)."""
    deadline = time.monotonic() + patience_sec
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < deadline:
        print(f"load {load:.2f} > {max_load}: other work is on the cores; waiting", flush=True)
        time.sleep(60)
        load = os.getloadavg()[0]
    return load


def shape(rate: str) -> None:
    subprocess.run(["bash", str(CLUSTER), "shape", "off" if rate == "unlimited" else rate], check=True)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_links", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="results and report folder")
    parser.add_argument("--rates", default="unlimited,10gbit,1gbit,200mbit", help="link rates, comma-separated (tc units)")
    parser.add_argument("--max-load", type=float, default=1.5, help="start only below this 1-minute load (default 1.5)")
    parser.add_argument("--patience-minutes", type=float, default=30, help="how long to wait for it (default 30)")
    args = parser.parse_args(argv)

    env = cluster_environment()
    load = wait_for_quiet(args.max_load, args.patience_minutes * 60)
    began = datetime.datetime.now(datetime.timezone.utc)
    print(f"{began:%Y-%m-%d %H:%M} UTC, {cpu_model()} ({os.cpu_count()} vCPUs), 1-minute load {load:.2f}", flush=True)
    failed = []
    for rate in args.rates.split(","):
        shape(rate)
        try:
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "larsbench", "slurm", str(EXPERIMENT), "--conditions", f'{{"link_rate": "{rate}"}}',
                 "--output", str(args.output), "--wait", "--poll-seconds", "2"],
                env=env, cwd=REPO,
            )  # fmt: skip
            print(f"{rate}: {time.monotonic() - started:.0f} s, exit status {done.returncode}", flush=True)
            if done.returncode != 0:
                failed.append(rate)
        finally:
            shape("unlimited")
    print(f"load at the end: {os.getloadavg()[0]:.2f}", flush=True)
    report = subprocess.run([sys.executable, "-m", "larsbench", "report", str(args.output), "-o", str(args.output)], cwd=REPO)
    if failed:
        print(f"runs did not complete at: {', '.join(failed)}")
    return 1 if failed or report.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
