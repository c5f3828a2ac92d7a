"""Where a rank finds out who it is: torchrun's variables, Slurm's, or a lone process.

Detection happens here, once, in one ordered list; backends receive a ``ClusterEnvironment``
and never read ``RANK`` or ``SLURM_*`` themselves. Detection never fails; ``check_rendezvous``,
``allocation_mismatch`` and ``use_interface`` then say, in one line, what a rank cannot start
with, before it waits on any peer.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from larsbench.core.errors import ConfigError

# Set by larsbench's own local launcher (suite.local_ranks), which starts ranks with torchrun's
# variables: the record then names what really started them.
LAUNCHER_ENV = "LARSBENCH_LAUNCHER"


@dataclass(frozen=True)
class ClusterEnvironment:
    source: str  # "torchrun", "larsbench", "horovodrun", "slurm" or "single"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    job_id: str | None = None
    array_task_id: str | None = None
    node_list: str | None = None
    num_nodes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> ClusterEnvironment:
    env = os.environ if environ is None else environ
    for probe in (_from_torchrun, _from_horovodrun, _from_slurm):
        found = probe(env)
        if found is not None:
            return found
    return ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", int(env.get("MASTER_PORT", 29500)))


def _from_torchrun(env: Mapping[str, str]) -> ClusterEnvironment | None:
    # torchrun (and torch.distributed's env:// convention) always sets all four; so does
    # larsbench's local launcher, which says so in LAUNCHER_ENV.
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return None
    world = int(env["WORLD_SIZE"])
    # torchrun says LOCAL_WORLD_SIZE; DeepSpeed's launcher says LOCAL_SIZE.
    local_world = int(env.get("LOCAL_WORLD_SIZE") or env.get("LOCAL_SIZE") or world)
    return ClusterEnvironment(
        source="larsbench" if env.get(LAUNCHER_ENV) == "larsbench" else "torchrun",
        rank=int(env["RANK"]),
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=local_world,
        node_rank=int(env.get("GROUP_RANK", 0)),
        master_addr=env["MASTER_ADDR"],
        master_port=int(env["MASTER_PORT"]),
        job_id=env.get("SLURM_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        node_list=env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
        num_nodes=max(1, world // max(1, local_world)),
    )


def _from_horovodrun(env: Mapping[str, str]) -> ClusterEnvironment | None:
    if not all(k in env for k in ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK")):
        return None
    return ClusterEnvironment(
        source="horovodrun",
        rank=int(env["HOROVOD_RANK"]),
        world_size=int(env["HOROVOD_SIZE"]),
        local_rank=int(env["HOROVOD_LOCAL_RANK"]),
        local_world_size=int(env.get("HOROVOD_LOCAL_SIZE", env["HOROVOD_SIZE"])),
        node_rank=int(env.get("HOROVOD_CROSS_RANK", 0)),
        master_addr=env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR", "127.0.0.1"),
        master_port=int(env.get("HOROVOD_GLOO_RENDEZVOUS_PORT", 0)),
        job_id=env.get("SLURM_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        node_list=env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
        num_nodes=int(env.get("HOROVOD_CROSS_SIZE", 1)),
    )


def _from_slurm(env: Mapping[str, str]) -> ClusterEnvironment | None:
    # An srun task has SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; the batch step alone lacks STEP_ID.
    if not all(k in env for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID")):
        return None
    node_list = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    job_id = env["SLURM_JOB_ID"]
    return ClusterEnvironment(
        source="slurm",
        rank=int(env["SLURM_PROCID"]),
        world_size=int(env["SLURM_NTASKS"]),
        local_rank=int(env["SLURM_LOCALID"]),
        local_world_size=tasks_on_this_node(env),
        node_rank=int(env.get("SLURM_NODEID", 0)),
        # Empty when there is neither: check_rendezvous says so, rather than guess localhost.
        master_addr=env.get("MASTER_ADDR") or (first_host(node_list) if node_list else ""),
        master_port=int(env.get("MASTER_PORT") or port_for_job(job_id)),
        job_id=job_id,
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        node_list=node_list,
        num_nodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
    )


def tasks_on_this_node(env: Mapping[str, str]) -> int:
    """Tasks Slurm placed on this node, from SLURM_TASKS_PER_NODE (e.g. ``4(x2),3``)."""
    spec = env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return int(env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_NTASKS", 1))
    counts = tasks_per_node(spec)
    node = int(env.get("SLURM_NODEID", 0))
    return counts[node] if node < len(counts) else counts[-1]


def tasks_per_node(spec: str) -> list[int]:
    """Slurm's compressed task counts, one per node: ``4(x2),3`` → ``[4, 4, 3]``."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"cannot parse SLURM_TASKS_PER_NODE={spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def first_host(node_list: str) -> str:
    """First host of a Slurm hostlist: ``gpu[007-010,12],cpu3`` → ``gpu007``."""
    depth, end = 0, len(node_list)
    for i, char in enumerate(node_list):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    first = node_list[:end].strip()

    def first_of_range(match: re.Match[str]) -> str:
        return match.group(1).split(",")[0].split("-")[0]

    return re.sub(r"\[([^\]]*)\]", first_of_range, first)


def port_for_job(job_id: str) -> int:
    # Every task of a job computes the same port with no communication; distinct jobs sharing
    # a node rarely collide. Array tasks have their own job ids.
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits[-9:]) % 20000



# -- checks before a rank waits on its peers ---------------------------------------------------

Resolver = Callable[..., list[tuple[Any, ...]]]


def check_rendezvous(env: ClusterEnvironment, resolve: Resolver = socket.getaddrinfo) -> None:
    """The rendezvous host of a Slurm-started rank must be known, resolve on this node, and,
    when the job spans several nodes, not be a loopback address the other nodes cannot reach.
    Without this a rank would wait out the whole collective timeout, or rendezvous with itself."""
    if env.source != "slurm":
        return  # torchrun's and horovodrun's agents have rendezvoused already
    here = socket.gethostname()
    if not env.master_addr:
        raise ConfigError(
            "rendezvous", "Slurm gave this task no node list (SLURM_JOB_NODELIST) and MASTER_ADDR is unset; "
            "start the ranks with srun inside an allocation, or export MASTER_ADDR=<the first node's address>"
        )  # fmt: skip
    where = f"the first node of {env.node_list}" if env.node_list and first_host(env.node_list) == env.master_addr else "MASTER_ADDR"
    try:
        found = {info[4][0] for info in resolve(env.master_addr, env.master_port, 0, socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            "rendezvous", f"the rendezvous host {env.master_addr!r} ({where}) does not resolve on {here} ({exc}); "
            "make it resolve on every node (DNS or /etc/hosts), or export MASTER_ADDR=<its address> before srun"
        ) from None  # fmt: skip
    if env.num_nodes > 1 and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found):
        raise ConfigError(
            "rendezvous", f"the rendezvous host {env.master_addr!r} ({where}) resolves to {', '.join(sorted(found))} on {here}, "
            f"a loopback address the job's other {env.num_nodes - 1} node(s) cannot reach; map it to its network address "
            "(DNS or /etc/hosts), or export MASTER_ADDR=<its network address>"
        )  # fmt: skip


def allocation_mismatch(requested: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """Why the allocation Slurm gave (``env``: the batch step's SLURM_* variables) does not
    match the shape the script asked for (``requested``: nodes, ntasks_per_node); None when
    it does. Options given to sbatch on its command line override the script's own."""
    nodes, per_node = requested.get("nodes"), requested.get("ntasks_per_node")
    if nodes is None or per_node is None:
        return None
    got = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if not got:
        return None  # not inside an allocation: nothing to compare
    got_nodes = int(got)
    spec = env.get("SLURM_TASKS_PER_NODE")
    counts = tasks_per_node(spec) if spec else None
    if got_nodes == nodes and (counts is None or counts == [per_node] * nodes):
        return None
    given = f"{got_nodes} node(s)" + (f" with {spec} task(s) per node" if spec else "")
    return (
        f"the script asks for {nodes} node(s) x {per_node} task(s) but the job got {given}: sbatch options on the "
        "command line override the script's #SBATCH lines; submit it without --nodes/--ntasks/--ntasks-per-node, "
        "or write it again with larsbench slurm --nodes/--ntasks-per-node"
    )


INTERFACE_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "HOROVOD_GLOO_IFACE")


def use_interface(name: str, environ: dict[str, str] | None = None) -> None:
    """Point gloo, NCCL and Horovod's gloo at network interface ``name`` on this node (set
    before a backend starts; recorded with the steering environment)."""
    interfaces = sorted(n for _, n in socket.if_nameindex())
    if name not in interfaces:
        raise ConfigError(
            "network_interface", f"{socket.gethostname()} has no network interface {name!r} (it has {', '.join(interfaces)}); "
            "name one every node has, or leave network_interface unset for the libraries' own choice"
        )  # fmt: skip
    target = os.environ if environ is None else environ
    target.update(dict.fromkeys(INTERFACE_VARIABLES, name))
