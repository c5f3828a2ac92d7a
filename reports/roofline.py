"""The network roofline of a measured multi-rank run: the step time its network and its own
compute allow, and, for a run more than ``SLOWER`` above it, the likely causes its records support.

    roofline = max(compute, network)

- compute: the run's own compute probe (forward, backward and optimizer step, nothing reduced);
- network: what the run's whole gradient (``allreduce_bytes_per_step``) takes as one all-reduce on
  its allocation, at the fastest any backend showed there (``larsbench comm`` records: measured at
  that allocation, or scaled as ``predict_comm`` scales); without such records, the run's own
  communication span, labelled so.

It is the step of a perfect overlap, with no data wait and no overhead: nothing a run can beat,
and what a well-configured one comes near. Each cause is a measured part of the gap between the
step and the roofline, named where it explains at least ``SHARE`` of it (or, for a straggler and
a host transport, where the records name one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from larsbench.reports.predict import fusion_bytes, ready_times, simulate
from larsbench.reports.predict_comm import Network

SLOWER = 0.20  # a run this much above its roofline is marked
SHARE = 0.25  # a cause must explain at least this share of the gap


@dataclass
class Roofline:
    run_id: str
    label: str
    backend: str
    world_size: int
    nodes: int
    global_batch: int
    step_sec: float
    compute_sec: float
    network_sec: float
    network_source: str
    causes: list[str] = field(default_factory=list)

    @property
    def roofline_sec(self) -> float:
        return max(self.compute_sec, self.network_sec)

    @property
    def ratio(self) -> float:
        return self.step_sec / self.roofline_sec if self.roofline_sec > 0 else math.inf

    @property
    def marked(self) -> bool:
        return self.ratio > 1 + SLOWER


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if abs(ms) >= 100 else f"{ms:.3g} ms"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _allocation(record: dict[str, Any]) -> tuple[int, int]:
    hosts = [r.get("host") for r in record.get("ranks") or [] if isinstance(r, dict)]
    nodes = int((record.get("provenance") or {}).get("num_nodes") or len(set(hosts)) or 1)
    return nodes, max(1, int(record["world_size"]) // nodes)


def _network(record: dict[str, Any], networks: dict[str, Network], gradient: int) -> tuple[float | None, str, dict[str, Any]]:
    """The gradient's all-reduce time at the fastest backend measured on the run's allocation;
    without comm records, the run's own communication span; None when there is neither."""
    nodes, per_node = _allocation(record)
    device = str(record.get("device") or "").split(":")[0]
    found = []
    for name, network in networks.items():
        estimate = network.at(nodes, per_node)
        if estimate is not None and (estimate.source.device in (None, device)):
            found.append((estimate.seconds(gradient), name, estimate))
    if found:
        seconds, name, estimate = min(found, key=lambda item: item[0])
        own = next((e for t, n, e in found if n == record.get("backend")), None)
        return seconds, f"{gradient / 2**20:.3g} MiB as one all-reduce, {name}'s ({estimate.how})", {"best": (seconds, name), "own": own}
    span = _number(record.get("comm_sec_per_step"))
    if span is None:
        return None, "", {}
    return span, "the run's own communication span (no larsbench comm records for this allocation)", {}


def roofline(record: dict[str, Any], networks: dict[str, Network]) -> Roofline | None:
    """The roofline of an ok multi-rank run with a compute probe (None otherwise)."""
    step, compute = _number(record.get("step_time_mean_sec")), _number(record.get("compute_sec_per_step"))
    if record.get("status") != "ok" or int(record.get("world_size") or 1) < 2 or step is None or compute is None:
        return None
    messages = [int(m) for m in record.get("comm_messages_bytes") or []]
    gradient = int(record.get("allreduce_bytes_per_step") or sum(messages))
    network, source, found = _network(record, networks, gradient) if gradient else (0.0, "nothing reduced", {})
    if network is None:  # a record from before communication was timed, and no comm records
        return None
    nodes, _ = _allocation(record)
    result = Roofline(str(record["run_id"]), str(record.get("label")), str(record["backend"]), int(record["world_size"]),
                      nodes, int(record["global_batch_size"]), step, compute, network, source)  # fmt: skip
    if result.marked:
        result.causes = causes(record, result, messages, gradient, found)
    return result


def causes(record: dict[str, Any], roof: Roofline, messages: list[int], gradient: int, found: dict[str, Any]) -> list[str]:
    """The likely causes of the gap between a marked run's step and its roofline, largest first."""
    gap = roof.step_sec - roof.roofline_sec
    step = roof.step_sec
    named: list[tuple[float, str]] = []
    data = _number(record.get("data_wait_sec_per_step")) or 0.0
    if data >= SHARE * gap:
        named.append((data, f"data starvation: each step waited {_ms(data)} for its batch ({data / step:.0%} of the step); "
                            "more data_workers or faster decoding"))  # fmt: skip
    straggler = record.get("straggler") if isinstance(record.get("straggler"), dict) else {}
    lag = _number(straggler.get("lag_sec_per_step")) or 0.0
    if straggler and lag >= SHARE * gap:
        named.append((lag, f"a straggler: rank {straggler.get('rank')} on {straggler.get('host')} was ready last, "
                           f"{_ms(lag)} per step after the others"))  # fmt: skip
    transport = str(record.get("transport") or "")
    if "host memory" in transport or (str(record.get("device") or "").startswith("cuda") and transport == "gloo"):
        named.append((gap, f"host transport: its gradients travel through host memory ({transport})"))
    exposed = _number(record.get("exposed_comm_sec_per_step")) or 0.0
    span = _number(record.get("comm_sec_per_step")) or 0.0
    own = found.get("own")
    if own is not None and messages:
        # As the network saw them: Horovod fuses the tensors ready when its network is free.
        window = _number(record.get("overlapped_comm_sec_per_step")) or 0.0
        fuse = fusion_bytes(str(record.get("backend")), (record.get("provenance") or {}).get("environment") or {})
        _, sent = simulate(messages, ready_times(len(messages), window), own.seconds, fuse)
        split = sum(own.seconds(m) for m in sent)
        whole = own.seconds(gradient)
        if split - whole >= SHARE * gap:
            named.append((split - whole, f"small buckets: {len(sent)} reductions of {gradient / len(sent) / 2**10:.3g} KiB on "
                                         f"average cost {_ms(split - whole)} more per step than one of the whole gradient on "
                                         "this network; raise bucket_cap_mb (DDP), HOROVOD_FUSION_THRESHOLD or "
                                         "HOROVOD_CYCLE_TIME (Horovod)"))  # fmt: skip
        if span > 1.5 * split and exposed >= SHARE * gap:
            named.append((span - split, f"a slow interface or path: its reductions took {_ms(span)} per step, against "
                                        f"{_ms(split)} for the same messages in larsbench comm on this allocation; check "
                                        "network_interface and the path between the nodes"))  # fmt: skip
    best = found.get("best")
    if own is not None and best is not None and best[1] != record.get("backend"):
        mine = own.seconds(gradient)
        if mine > 2 * best[0] and mine - best[0] >= SHARE * gap:
            named.append((mine - best[0], f"a slower library path: {record.get('backend')}'s all-reduce of the gradient takes "
                                          f"{_ms(mine)} here, {best[1]}'s {_ms(best[0])}"))  # fmt: skip
    if exposed >= SHARE * gap and span > 0 and (span - exposed) < 0.1 * span:
        named.append((exposed, f"communication not overlapped: {_ms(exposed)} of its {_ms(span)} of reductions "
                               "came after the last gradient was ready"))  # fmt: skip
    overhead = _number(record.get("overhead_sec_per_step")) or 0.0
    if overhead >= SHARE * gap:
        named.append((overhead, f"overhead: {_ms(overhead)} per step beyond compute, data and communication (the loop, "
                                "the backend's wrappers, and whatever else used the rank's cores: on CPUs the collectives' "
                                "own copies and sums, other processes)"))  # fmt: skip
    if record.get("unstable"):
        reasons = "; ".join(record.get("unstable_reasons") or []) or "unstable"
        named.append((SHARE * gap, f"a disturbed run: its own step times were unstable ({reasons})"))
    if not named:
        return [f"no cause the records support: the gap ({_ms(gap)}) is spread over the step's parts"]
    return [text for _, text in sorted(named, key=lambda item: -item[0])]


def rooflines(records: list[dict[str, Any]], networks: dict[str, Network]) -> list[Roofline]:
    found = [roofline(r, networks) for r in records]
    return sorted((r for r in found if r is not None), key=lambda r: (r.backend, r.world_size, r.global_batch, r.run_id))


def roofline_blocks(runs: list[Roofline], workload: str, prefix, images: list) -> list:
    """The report's roofline section of one workload: a table, the marked runs' causes, a plot."""
    from larsbench.reports import plots
    from larsbench.reports.render import Bullets, Heading, Table, Text, draw_plots

    blocks: list = [Heading("Network roofline", 4)]
    if not runs:
        return blocks + [Text("Not computed: no ok multi-rank run with a compute probe.")]
    blocks.append(Text(
        f"The step time each multi-rank run's network and its own compute allow: max(compute, network), with "
        f"compute its own probe and network its whole gradient as one all-reduce at the fastest bus bandwidth "
        f"`larsbench comm` measured on its allocation. A run more than {SLOWER:.0%} above it is marked with the "
        "causes its records support."
    ))  # fmt: skip
    rows = []
    for r in runs:
        rows.append([r.backend, str(r.world_size), str(r.nodes), str(r.global_batch), f"{r.step_sec * 1e3:.1f}",
                     f"{r.compute_sec * 1e3:.1f}", f"{r.network_sec * 1e3:.1f}", f"{r.roofline_sec * 1e3:.1f}",
                     f"{r.ratio:.2f}", "marked" if r.marked else "", r.network_source])  # fmt: skip
    blocks.append(Table(["backend", "N", "nodes", "B", "step ms", "compute ms", "network ms", "roofline ms", "step / roofline",
                         "", "network from"], rows, (1, 2, 3, 4, 5, 6, 7, 8)))  # fmt: skip
    marked = [r for r in runs if r.marked]
    if marked:
        blocks.append(Bullets([f"{r.label} (run {r.run_id}) is {r.ratio:.2f}× its roofline: {'; '.join(r.causes)}." for r in marked]))
    drawn, _ = draw_plots(prefix, [("roofline", "step time against the network roofline",
                                    lambda p: plots.plot_roofline(runs, SLOWER, workload, p), "")], images)  # fmt: skip
    blocks.extend(drawn.values())
    return blocks
