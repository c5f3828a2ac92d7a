"""How long one all-reduce of S bytes takes on an allocation, from ``larsbench comm`` records.

A ``Network`` holds the all-reduce records of one backend on the allocations it was measured
on. ``Network.at(nodes, ranks_per_node)`` answers for a target allocation:

- measured there (same node count and ranks per node): the records as they are;
- otherwise from the measurement with the most ranks among those of the same kind: inter-node
  records (2 or more nodes) for a target of several nodes, intra-node records (1 node) for a
  target of one. Intra- and inter-node figures are never mixed: a ring that crosses nodes is
  as fast as its slowest link, and a measurement on one node says nothing about that link.
  Scaling from n_m ranks measured to n ranks, as a ring all-reduce does: the latency part (the
  smallest message's time, ``latency_sec``) grows with the ring's 2(n−1) steps, the rest with
  nccl-tests' bus factor 2(n−1)/n (its bus bandwidth held constant in n):

      t_n(S) = lat_m · (n−1)/(n_m−1) + (t_m(S) − lat_m) · [2(n−1)/n] / [2(n_m−1)/n_m]

Between measured sizes the time is interpolated linearly in log(size)–log(time); below the
smallest it is that size's time (never less than the latency); above the largest it grows in
proportion to the size at the largest size's bandwidth. ``time_min_sec`` / ``time_max_sec`` (the
fastest and slowest timed loop) give the low and high ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from larsbench.core.errors import ConfigError


LATENCY_BYTES = 4  # the latency probe's message: one float32 element


def bus_factor(world_size: int) -> float:
    """nccl-tests' all-reduce bus factor 2(n−1)/n."""
    return 2 * (world_size - 1) / world_size


@dataclass(frozen=True)
class Allocation:
    nodes: int
    ranks_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def kind(self) -> str:
        return "inter-node" if self.nodes > 1 else "intra-node"

    def __str__(self) -> str:
        return f"{self.nodes} node{'s' if self.nodes != 1 else ''} × {self.ranks_per_node} rank{'s' if self.ranks_per_node != 1 else ''}"


@dataclass
class Curve:
    """One comm run's all-reduce times by size on one allocation."""

    allocation: Allocation
    run_id: str
    sizes: list[int]
    median: list[float]
    fastest: list[float]
    slowest: list[float]
    latency_sec: float
    transport: str | None
    device: str | None
    timestamp: float

    @property
    def peak_busbw_gbps(self) -> float:
        return max(s / t * bus_factor(self.allocation.world_size) / 1e9 for s, t in zip(self.sizes, self.median))

    def seconds(self, size: float, which: str = "median") -> float:
        times = {"median": self.median, "low": self.fastest, "high": self.slowest}[which]
        sizes = list(self.sizes)
        if sizes[0] > LATENCY_BYTES and self.latency_sec < times[0]:
            # the latency probe is a point of the curve: one float32 element per rank
            sizes, times = [LATENCY_BYTES, *sizes], [self.latency_sec, *times]
        if size <= sizes[0]:
            return times[0]
        if size >= sizes[-1]:
            return times[-1] * size / sizes[-1]
        for (s0, t0), (s1, t1) in zip(zip(sizes, times), zip(sizes[1:], times[1:])):
            if s0 <= size <= s1:
                w = (math.log(size) - math.log(s0)) / (math.log(s1) - math.log(s0))
                return math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))
        return times[-1]  # not reached: sizes are sorted


@dataclass
class Estimate:
    """All-reduce times on a target allocation: how they were obtained, and the function."""

    target: Allocation
    source: Curve
    scaled: bool

    @property
    def how(self) -> str:
        if not self.scaled:
            return f"measured at {self.target} ({self.target.kind}, comm run {self.source.run_id})"
        return (f"scaled from {self.source.allocation} ({self.source.allocation.kind}, comm run {self.source.run_id}) "
                f"to {self.target.world_size} ranks: latency × (n−1)/(n_m−1), the rest × bus factor 2(n−1)/n")  # fmt: skip

    def seconds(self, size: float, which: str = "median") -> float:
        measured = self.source.seconds(size, which)
        if not self.scaled:
            return measured
        n, m = self.target.world_size, self.source.allocation.world_size
        latency = min(self.source.latency_sec, measured)
        return latency * (n - 1) / (m - 1) + (measured - latency) * bus_factor(n) / bus_factor(m)


@dataclass
class Network:
    """One backend's all-reduce measurements, by allocation (the newest run per allocation)."""

    backend: str
    curves: dict[Allocation, Curve] = field(default_factory=dict)

    def at(self, nodes: int, ranks_per_node: int) -> Estimate | None:
        """All-reduce times at ``nodes`` × ``ranks_per_node`` (None: nothing of its kind measured)."""
        target = Allocation(nodes, ranks_per_node)
        if target in self.curves:
            return Estimate(target, self.curves[target], scaled=False)
        same_kind = [c for a, c in self.curves.items() if (a.nodes > 1) == (nodes > 1) and a.world_size > 1]
        if not same_kind:
            return None
        best = max(same_kind, key=lambda c: (c.allocation.world_size, c.allocation.nodes, c.timestamp))
        return Estimate(target, best, scaled=True)

    def describe(self) -> str:
        return "; ".join(f"{a}: peak bus bandwidth {c.peak_busbw_gbps:.3g} GB/s, latency {c.latency_sec * 1e6:.0f} µs"
                         for a, c in sorted(self.curves.items(), key=lambda item: (item[0].nodes, item[0].ranks_per_node)))  # fmt: skip


def _latency(rows: list[dict[str, Any]]) -> float:
    known = [r["latency_sec"] for r in rows if isinstance(r.get("latency_sec"), (int, float))]
    # Records from before latency was measured (comm schema 1): the smallest message's time.
    return min(known) if known else min(r["time_sec"] for r in rows)


def networks(records: list[dict[str, Any]]) -> dict[str, Network]:
    """backend → its all-reduce measurements, from ``comm.jsonl`` records."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("operation") == "all_reduce" and isinstance(r.get("world_size"), int) and r["world_size"] > 1:
            runs.setdefault((r["backend"], r["run_id"]), []).append(r)
    out: dict[str, Network] = {}
    for (backend, run_id), rows in runs.items():
        rows = sorted(rows, key=lambda r: r["bytes"])
        first = rows[0]
        hosts = first.get("hosts") or []
        nodes = int(first.get("num_nodes") or len(set(hosts)) or 1)
        per_node = int(first.get("ranks_per_node") or max(1, first["world_size"] // nodes))
        curve = Curve(
            allocation=Allocation(nodes, per_node),
            run_id=run_id,
            sizes=[r["bytes"] for r in rows],
            median=[r["time_sec"] for r in rows],
            fastest=[r.get("time_min_sec", r["time_sec"]) for r in rows],
            slowest=[r.get("time_max_sec", r["time_sec"]) for r in rows],
            latency_sec=_latency(rows),
            transport=(first.get("transport") or {}).get("collectives"),
            device=str(first.get("device") or "").split(":")[0] or None,
            timestamp=float(max(r.get("timestamp_end") or 0 for r in rows)),
        )
        network = out.setdefault(backend, Network(backend))
        kept = network.curves.get(curve.allocation)
        if kept is None or kept.timestamp < curve.timestamp:
            network.curves[curve.allocation] = curve
    return out


def require_networks(records: list[dict[str, Any]], option: str = "--comm") -> dict[str, Network]:
    found = networks(records)
    if not found:
        raise ConfigError(option, "holds no all-reduce measurement on 2 or more ranks; run `larsbench comm` "
                          "(or `larsbench slurm --comm`) on the allocation to predict and name its comm.jsonl")  # fmt: skip
    return found
