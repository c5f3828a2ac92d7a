"""The validation behind docs/studies/prediction: predictions of 3- and 4-node runs made from
one-node runs and ``larsbench comm`` alone, then checked against those runs::

    python -m benchmarks.prediction --output docs/studies/prediction [--rates 1gbit,200mbit] [--dry-run]

It starts a local Slurm of 4 nodes of its own (``local_cluster.sh start --nodes 4`` with its own
state folder, name, subnet and ports) in which every node may use ``--cpu-share`` of the
machine's CPUs (``LARSBENCH_SLURM_NODE_CPU_SHARE``): the nodes share this machine's cores, and
without a fixed share a rank alone on one node would compute faster than one of four. For each
link rate (a tbf limit on every node's link, ``local_cluster.sh shape``) and in this order:

1. the one-node runs of ``suite/experiments/prediction.yaml`` (every backend, 1 rank), into
   ``OUTPUT/base`` (the same runs at every rate: no link is used);
2. ``larsbench slurm --comm`` on 4 nodes, all-reduce only, into ``OUTPUT/comm-RATE`` (the 3-node
   predictions scale it in the rank count, as ``predict`` does for an allocation not measured);
3. ``larsbench predict OUTPUT/base --comm OUTPUT/comm-RATE --nodes 3,4 --json`` into
   ``OUTPUT/predictions-RATE.json``: written before any run it predicts exists;
4. the 3- and 4-node runs, into ``OUTPUT/heldout-RATE`` (named ``link_rate`` RATE).

Horovod's ranks wait for their collectives by sleeping, not by Horovod's spin
(``LARSBENCH_HOROVOD_WAIT=sleep``, ``--horovod-wait``; backends/horovod.py): a node held to 0.45 CPU
has no spare core for the spin, which would take the quota its background thread needs.

Then the comparison (``benchmarks.prediction_table``: the table and plot), a report per rate
(``OUTPUT/report-RATE``), and the cluster is stopped and the links are unlimited again whatever happened. Needs root
(namespaces, tc, cgroups). ``--dry-run`` prints the commands without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.slow_links import cpu_model

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local_cluster.sh"
EXPERIMENT = REPO / "suite" / "experiments" / "prediction.yaml"
# A cluster of its own: never the test suite's (lbnodes, 10.77.0, 6827/6828).
CLUSTER_ENV = {
    "LARSBENCH_SLURM_NODES_DIR": "/tmp/larsbench-prediction-nodes",
    "LARSBENCH_SLURM_NODES_NAME": "lbpred",
    "LARSBENCH_SLURM_NODES_SUBNET": "10.79.0",
    "LARSBENCH_SLURM_NODES_CTLD_PORT": "6847",
    "LARSBENCH_SLURM_NODES_SLURMD_PORT": "6848",
}
NODES = 4
HELD_OUT = (3, 4)
COMM_AT = 4  # the largest allocation only: the 3-node predictions scale it, as predict states
COMM_MAX = "32M"  # the largest DDP bucket is 25 MiB; larger messages are extrapolated at its bandwidth


class Campaign:
    def __init__(self, output: Path, cpu_share: float, dry_run: bool, horovod_wait: str = "sleep") -> None:
        self.output, self.dry_run = output, dry_run
        self.cluster_env = {**os.environ, **CLUSTER_ENV, "LARSBENCH_SLURM_NODE_CPU_SHARE": f"{cpu_share:g}",
                            "LARSBENCH_HOROVOD_WAIT": horovod_wait}  # fmt: skip
        self.env: dict[str, str] = dict(self.cluster_env)
        self.log: list[str] = []

    def run(self, words: list[str], env: dict[str, str] | None = None, capture: bool = False) -> subprocess.CompletedProcess:
        line = " ".join(shlex.quote(w) for w in words)
        print(f"$ {line}", flush=True)
        self.log.append(line)
        if self.dry_run:
            return subprocess.CompletedProcess(words, 0, "", "")
        started = time.monotonic()
        done = subprocess.run(words, env=env or self.env, cwd=REPO, text=True, capture_output=capture)
        print(f"  ({time.monotonic() - started:.0f} s, exit status {done.returncode})", flush=True)
        return done

    def cluster(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["bash", str(CLUSTER), *args], env=self.cluster_env, capture=True)

    def start(self) -> None:
        started = self.cluster("start", "--nodes", str(NODES))
        if started.returncode != 0:
            raise SystemExit(f"the {NODES}-node cluster did not start: {started.stderr[-2000:]}")
        if self.dry_run:
            return
        exports = dict(
            word.split("=", 1) for line in started.stdout.splitlines() if line.startswith("export ")
            for word in shlex.split(line)[1:]
        )  # fmt: skip
        folder = Path(exports["LARSBENCH_SLURM_NODES_DIR"])
        self.env = {**self.cluster_env, "SLURM_CONF": exports["SLURM_CONF"],
                    "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}  # fmt: skip

    def larsbench(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "larsbench", *args], capture=capture)

    def slurm(self, out: str, *args: str) -> bool:
        done = self.larsbench("slurm", str(EXPERIMENT), *args, "--output", str(self.output / out), "--wait", "--poll-seconds", "2")
        return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prediction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="study folder")
    parser.add_argument("--rates", default="1gbit,200mbit", help="link rates, comma-separated (tc units)")
    parser.add_argument("--cpu-share", type=float, default=0.45, help="CPUs each node may use (default 0.45: 4 nodes in 1.8 of 2 cores)")
    parser.add_argument("--horovod-wait", choices=("sleep", "spin"), default="sleep",
                        help="how Horovod's ranks wait for a collective (default sleep: a node under a CPU quota has no core to spin on)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    campaign = Campaign(args.output, args.cpu_share, args.dry_run, args.horovod_wait)
    began = datetime.datetime.now(datetime.timezone.utc)
    print(f"{began:%Y-%m-%d %H:%M} UTC, {cpu_model()} ({os.cpu_count()} vCPUs), load {os.getloadavg()[0]:.2f}, "
          f"{NODES} nodes at {args.cpu_share:g} CPU each, Horovod waits by {args.horovod_wait}", flush=True)  # fmt: skip
    failed: list[str] = []
    campaign.start()
    try:
        for rate in args.rates.split(","):
            campaign.cluster("shape", rate)
            if not campaign.slurm("base", "--world-size", "1"):
                failed.append(f"base at {rate}")
            if not campaign.slurm(f"comm-{rate}", "--comm", "--world-size", str(COMM_AT), "--operations", "all_reduce",
                                  "--min-bytes", "4K", "--max-bytes", COMM_MAX, "--iterations", "5"):  # fmt: skip
                failed.append(f"comm at {rate}")
                continue
            predicted = campaign.larsbench("predict", str(args.output / "base"), "--comm", str(args.output / f"comm-{rate}"),
                                           "--nodes", ",".join(map(str, HELD_OUT)), "--ranks-per-node", "1", "--json", capture=True)  # fmt: skip
            if not args.dry_run:
                if predicted.returncode != 0:
                    failed.append(f"predict at {rate}: {predicted.stderr.strip()}")
                    continue
                (args.output / f"predictions-{rate}.json").write_text(predicted.stdout)
            for n in HELD_OUT:
                if not campaign.slurm(f"heldout-{rate}", "--world-size", str(n), "--conditions", json.dumps({"link_rate": rate})):
                    failed.append(f"{n} nodes at {rate}")
    finally:
        campaign.cluster("shape", "off")
        campaign.cluster("stop", "--nodes", str(NODES))
    ended = datetime.datetime.now(datetime.timezone.utc)
    print(f"{ended:%Y-%m-%d %H:%M} UTC: {(ended - began).total_seconds() / 60:.0f} minutes, load {os.getloadavg()[0]:.2f}", flush=True)
    if not args.dry_run:
        (args.output / "campaign.log").write_text(
            f"{began:%Y-%m-%d %H:%M} to {ended:%H:%M} UTC on {cpu_model()} ({os.cpu_count()} vCPUs), {NODES} nodes at "
            f"{args.cpu_share:g} CPU each, Horovod waits by {args.horovod_wait}\n" + "\n".join(campaign.log) + "\n" + "".join(f"failed: {f}\n" for f in failed)
        )  # fmt: skip
        for rate in args.rates.split(","):  # comm records name no link rate: one report per rate
            parts = [args.output / name for name in ("base", f"heldout-{rate}", f"comm-{rate}")]
            campaign.larsbench("report", *(str(p) for p in parts if p.exists()), "-o", str(args.output / f"report-{rate}"))
        campaign.run([sys.executable, "-m", "benchmarks.prediction_table", str(args.output)])
    if failed:
        print("did not complete: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
