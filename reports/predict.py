"""Predict the step time, throughput, scaling efficiency and time to accuracy of a workload at
allocations that were never run, from runs at a small scale and ``larsbench comm`` records.

The model (``docs/method.md``, "Predicting other scales", says why each part is what it is):

    step(N nodes × R ranks) = data wait + compute + overhead + synchronisation + exposed communication

- data wait, compute (the probe) and overhead come from the base runs (a family's runs on the
  fewest nodes: ``choose_bases``), averaged over their repeats; data wait and compute scale with the
  images each rank processes per step, overhead is per step;
- synchronisation: every step waits for the slowest rank, so it costs the expected maximum of
  N·R/W₀ draws of the base's own step times (its quantiles) beyond their mean;
- exposed communication: the step's reductions as the backend sent them at the base
  (``comm_messages_bytes``; Horovod's fused up to its fusion threshold), each taking what an
  all-reduce of its size takes on the target allocation (``predict_comm``), handed to the
  network one after another as they become ready. The first is ready when the base's first
  reduction was launched and the last at the end of the overlap window the base measured
  (``reduction_span_sec_per_step`` − ``reduction_wait_sec_per_step``: backward compute after the
  first reduction was launched, measured on one rank too),
  the others evenly between; what the network has not finished when the last is ready is
  exposed.

Low and high ends: the base's fastest and slowest repeat for the measured parts, the fastest and
slowest timed loop of the comm records, and for the overlap the two extremes the records cannot
rule out (every reduction hidden but the last one's own time; or every reduction but the first
ready only at the end of the window).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from larsbench.core.errors import ConfigError
from larsbench.reports.load import WORKLOAD_FIELDS, key_of, records_frame, settings, workload_label
from larsbench.reports.predict_comm import Allocation, Estimate, Network
from larsbench.reports.predict_rcp import EpochsSource, epochs_from_rcp
from larsbench.reports.scaling import AXIS

FORMAT_VERSION = 1
# Horovod fuses every gradient ready when its background loop runs, up to this many bytes
# (HOROVOD_FUSION_THRESHOLD; 128 MiB by default since Horovod 0.21).
HOROVOD_FUSION_BYTES = 128 * 2**20


# --- the base: what the small runs measured ---------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A part of the base's step, over its ok repeats: mean, fastest and slowest. One run shows
    no spread between runs: its own step times' robust CV (``spread``) stands in for it."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float | None], spread: float = 0.0) -> Measured | None:
        found = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not found:
            return None
        mean = sum(found) / len(found)
        if len(found) == 1:
            return cls(mean, mean * (1 - spread), mean * (1 + spread))
        return cls(mean, min(found), max(found))

    def scaled(self, factor: float) -> Measured:
        return Measured(self.mean * factor, self.low * factor, self.high * factor)


ZERO = Measured(0.0, 0.0, 0.0)


@dataclass
class Base:
    """The runs of one setting a prediction starts from, and what they measured per step."""

    family: str  # key of the setting without its scaling axis
    label: str
    backend: str
    workload: str
    workload_key: str
    settings: dict[str, Any]
    run_ids: list[str]
    nodes: int
    ranks_per_node: int
    micro_batch_size: int
    accumulation_steps: int
    step: Measured
    throughput: Measured
    data_wait: Measured
    compute: Measured
    overhead: Measured
    overlap_window: Measured
    exposed: Measured
    messages: list[int]
    measured_reductions: bool  # whether messages and overlap window are the base's own
    step_quantiles: list[tuple[float, float]]  # (probability, seconds) of the base's step times
    transport: str | None
    environment: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def per_rank_batch(self) -> int:
        return self.micro_batch_size * self.accumulation_steps

    @property
    def global_batch(self) -> int:
        return self.world_size * self.per_rank_batch

    def fusion_bytes(self) -> int | None:
        return fusion_bytes(self.backend, self.environment)


def fusion_bytes(backend: str, environment: dict[str, Any]) -> int | None:
    """Horovod's fusion threshold (its environment's, else its default); None for backends that
    send each reduction as launched."""
    if backend != "horovod":
        return None
    value = environment.get("HOROVOD_FUSION_THRESHOLD")
    try:
        return int(value) if value is not None else HOROVOD_FUSION_BYTES
    except ValueError:
        return HOROVOD_FUSION_BYTES


def _ranks_per_node(record: dict[str, Any]) -> tuple[int, int]:
    hosts = [r.get("host") for r in record.get("ranks") or [] if isinstance(r, dict)]
    nodes = int((record.get("provenance") or {}).get("num_nodes") or len(set(hosts)) or 1)
    return nodes, max(1, int(record["world_size"]) // nodes)


def _quantiles(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The base's step-time distribution from the records' percentiles (pooled over repeats)."""
    points = []
    for u, key in ((0.05, "step_time_p5_sec"), (0.5, "step_time_p50_sec"), (0.95, "step_time_p95_sec"),
                   (0.99, "step_time_p99_sec"), (1.0, "step_time_max_sec")):  # fmt: skip
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if values:
            points.append((u, float(np.mean(values))))
    if points and points[0][0] > 0:
        points.insert(0, (0.0, points[0][1]))
    return points


def expected_max(quantiles: list[tuple[float, float]], draws: float) -> float:
    """E[max of ``draws`` independent draws] of the distribution whose quantile function is
    linear between ``quantiles``: ∫ Q(u) d(u^draws)."""
    if not quantiles:
        return 0.0
    u = np.linspace(0.0, 1.0, 4001)
    q = np.interp(u, [p for p, _ in quantiles], [v for _, v in quantiles])
    weights = np.diff(u**draws)
    return float(np.sum(weights * (q[1:] + q[:-1]) / 2))


def sync_cost(base: Base, world_size: int) -> float:
    """What waiting for the slowest of ``world_size`` ranks adds to the base's mean step: the
    base's step already waits for its own ranks, so its distribution is drawn W/W₀ times."""
    if world_size <= base.world_size or not base.step_quantiles:
        return 0.0
    mean = expected_max(base.step_quantiles, 1.0)
    return max(0.0, expected_max(base.step_quantiles, world_size / base.world_size) - mean)


def _overhead_without_reductions(record: dict[str, Any]) -> float | None:
    """The record's overhead less the reduction calls its split counted there (on one rank,
    where they move nothing): the model adds those to the network time itself."""
    overhead = record.get("overhead_sec_per_step")
    if overhead is None:
        return None
    moved = (record.get("reduction_wait_sec_per_step") or 0.0) - (record.get("exposed_comm_sec_per_step") or 0.0)
    return max(0.0, overhead - moved)


def build_base(family: str, records: list[dict[str, Any]]) -> Base:
    first = records[0]
    s = settings(first)
    nodes, per_node = _ranks_per_node(first)
    notes: list[str] = []
    cv = min(0.5, float(first.get("step_time_cv") or 0.0)) if len(records) == 1 else 0.0
    compute = Measured.of((r.get("compute_sec_per_step") for r in records), cv)
    overhead = Measured.of((_overhead_without_reductions(r) for r in records), cv)
    data = Measured.of((r.get("data_wait_sec_per_step") for r in records), cv) or ZERO
    step = Measured.of(r.get("step_time_mean_sec") for r in records)
    # The reduction calls as measured: on one rank the split counts them as overhead (they move
    # nothing), but their wait and their window are what the base says about its reductions.
    exposed = Measured.of(r.get("reduction_wait_sec_per_step") for r in records) or ZERO
    if compute is None:
        # No probe: what is not data wait or waiting on the reductions counts as compute.
        compute = Measured.of(((r.get("step_time_mean_sec") or 0) - (r.get("data_wait_sec_per_step") or 0)
                               - (r.get("reduction_wait_sec_per_step") or 0) for r in records), cv)  # fmt: skip
        overhead = ZERO
        notes.append("the base has no compute probe: compute is its step minus data wait and exposed communication")
    messages = next((list(r["comm_messages_bytes"]) for r in records if r.get("comm_messages_bytes")), None)
    # Without a reduction timed (Horovod skips them on one rank) the window is unknown, not zero.
    overlap = Measured.of(((r.get("reduction_span_sec_per_step") or 0) - (r.get("reduction_wait_sec_per_step") or 0)
                           for r in records if r.get("reduction_span_sec_per_step") is not None), cv) if messages else None  # fmt: skip
    gradient = next((int(r["allreduce_bytes_per_step"]) for r in records if r.get("allreduce_bytes_per_step")), None)
    prov = first.get("provenance") or {}
    return Base(
        family=family,
        label=str(first.get("label")),
        backend=str(first["backend"]),
        workload=workload_label(s),
        workload_key=key_of({k: s.get(k) for k in WORKLOAD_FIELDS}),
        settings=s,
        run_ids=[str(r["run_id"]) for r in records],
        nodes=nodes,
        ranks_per_node=per_node,
        micro_batch_size=int(first["micro_batch_size"]),
        accumulation_steps=int(first["accumulation_steps"]),
        step=step,
        throughput=Measured.of(r.get("throughput_images_per_sec") for r in records),
        data_wait=data,
        compute=compute,
        overhead=overhead or ZERO,
        overlap_window=overlap or ZERO,
        exposed=exposed,
        messages=messages or ([gradient] if gradient else []),
        measured_reductions=bool(messages) and overlap is not None,
        step_quantiles=_quantiles(records),
        transport=first.get("transport"),
        environment=dict(prov.get("environment") or {}),
        notes=notes + ([f"the base's own exposed communication was {exposed.mean * 1e3:.3g} ms per step"]
                       if exposed.mean > 0 and nodes * per_node > 1 else []),
    )  # fmt: skip


def choose_bases(records: list[dict[str, Any]], ranks_per_node: int | None = None) -> list[Base]:
    """One base per family (a setting without its scaling axis): its ok runs on the fewest nodes,
    with ``ranks_per_node`` ranks per node where such runs exist, else the most ranks."""
    usable = [r for r in records if r.get("status") == "ok" and r.get("step_time_mean_sec") and r.get("throughput_images_per_sec")]
    if not usable:
        return []
    frame = records_frame(usable)
    by_id = {str(r["run_id"]): r for r in usable}
    families: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _, row in frame.iterrows():
        family = key_of(json.loads(row["settings_key"]), exclude=AXIS)
        families.setdefault(family, {}).setdefault(row["settings_key"], []).append(by_id[str(row["run_id"])])
    bases = []
    for family, groups in families.items():
        def rank(item):
            nodes, per_node = _ranks_per_node(item[1][0])
            return (nodes, per_node != ranks_per_node if ranks_per_node else 0, -per_node, -len(item[1]))

        _, chosen = min(groups.items(), key=rank)
        bases.append(build_base(family, chosen))
    for base in bases:
        if not base.measured_reductions:
            _borrow_reductions(base, bases)
    return sorted(bases, key=lambda b: (b.workload, b.backend, b.label))


def _borrow_reductions(base: Base, bases: list[Base]) -> None:
    """A base that timed no reduction (Horovod skips them on one rank) takes when its gradient
    becomes ready from another backend's base of the same workload and micro-batch: the
    overlap window is backward compute after the first gradient, the model's, not the
    library's. Its messages keep the total of its own gradient. Without such a base: the
    whole gradient as one message after backward (no overlap), said so."""
    donors = [b for b in bases if b.measured_reductions and b.workload_key == base.workload_key
              and b.micro_batch_size == base.micro_batch_size and b.overlap_window.mean > 0]  # fmt: skip
    if not donors:
        base.notes.append("it timed no reduction and no other backend's base of this workload did: its gradient is "
                          "taken as one message after backward (no overlap)")  # fmt: skip
        return
    donor = max(donors, key=lambda b: len(b.messages))
    total = sum(base.messages) or sum(donor.messages)
    scale = total / sum(donor.messages)
    base.messages = [max(1, round(m * scale)) for m in donor.messages]
    base.overlap_window = donor.overlap_window.scaled(base.compute.mean / donor.compute.mean) if donor.compute.mean > 0 else donor.overlap_window
    base.notes.append(f"it timed no reduction: when its gradient becomes ready is {donor.backend}'s base's ({len(donor.messages)} "
                      f"reductions, overlap window scaled by the compute ratio to {base.overlap_window.mean * 1e3:.3g} ms)")  # fmt: skip


# --- one prediction ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    nodes: int
    ranks_per_node: int
    scaling: str  # "weak" (per-rank batch held) or "strong" (global batch held)
    global_batch: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


def split_batch(per_rank: int, micro: int) -> tuple[int, int]:
    """(micro-batch, accumulation) for ``per_rank`` images per rank per step: the base's
    micro-batch where it divides, else the largest divisor below it."""
    size = max(d for d in range(1, min(per_rank, micro) + 1) if per_rank % d == 0)
    return size, per_rank // size


def simulate(messages: list[int], ready: list[float], seconds, fuse_bytes: int | None) -> tuple[float, list[int]]:
    """When the last reduction finishes (from the first one's launch) if the network takes them
    one at a time as they become ready (``fuse_bytes``: the ones ready by then go together, up
    to that size), and the messages as the network saw them."""
    clock, i, sent = 0.0, 0, []
    while i < len(messages):
        start = max(clock, ready[i])
        size, j = messages[i], i + 1
        if fuse_bytes:
            while j < len(messages) and ready[j] <= start and size + messages[j] <= fuse_bytes:
                size += messages[j]
                j += 1
        clock = start + seconds(size)
        sent.append(size)
        i = j
    return clock, sent


def ready_times(count: int, window: float, late: bool = False) -> list[float]:
    """Readiness of ``count`` reductions over the overlap window: evenly spread; ``late``: all
    but the first only at its end."""
    if count <= 1:
        return [0.0] * count
    if late:
        return [0.0] + [window] * (count - 1)
    return [window * i / (count - 1) for i in range(count)]


@dataclass
class Prediction:
    shape: Shape
    micro_batch_size: int
    accumulation_steps: int
    parts: dict[str, float]
    step_sec: float
    step_low: float
    step_high: float
    comm_sec: float  # the network's busy time per step (every reduction's time, summed)
    collectives: int
    comm_how: str
    efficiency: float | None = None
    time_to_accuracy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.shape.global_batch / self.step_sec

    @property
    def throughput_low(self) -> float:
        return self.shape.global_batch / self.step_high

    @property
    def throughput_high(self) -> float:
        return self.shape.global_batch / self.step_low


def exposed_communication(base: Base, estimate: Estimate | None, window: Measured) -> tuple[dict[str, float], float, int]:
    """Exposed communication (point, low, high), the network's busy time per step and how many
    collectives it ran."""
    if estimate is None or not base.messages:
        return {"point": 0.0, "low": 0.0, "high": 0.0}, 0.0, 0
    fuse, n = base.fusion_bytes(), len(base.messages)
    end, sent = simulate(base.messages, ready_times(n, window.mean), estimate.seconds, fuse)
    busy = sum(estimate.seconds(size) for size in sent)
    # Low: the fastest loops, and every reduction hidden behind compute except what the network
    # needs beyond the window, or the last one's own time.
    fast = lambda size: estimate.seconds(size, "low")  # noqa: E731
    low = max(fast(sent[-1]), sum(fast(size) for size in sent) - window.high)
    # High: the slowest loops, and every reduction but the first ready only at the window's end.
    late_end, _ = simulate(base.messages, ready_times(n, window.low, late=True), lambda size: estimate.seconds(size, "high"), fuse)
    return {"point": max(0.0, end - window.mean), "low": max(0.0, low), "high": max(0.0, late_end - window.low)}, busy, len(sent)


UNSTEADY = 2.0  # slowest over fastest timed loop at the sizes sent: the network time is no steady figure


def unsteady_network(base: Base, estimate: Estimate) -> str | None:
    """A note when COMM's own timed loops, at the sizes this backend sends, differ by more than
    ``UNSTEADY``×: the network's time is then no steady figure, and neither is a prediction."""
    sizes = sorted(set(base.messages))
    ratios = [(estimate.seconds(s, "high") / estimate.seconds(s, "low"), s) for s in sizes if estimate.seconds(s, "low") > 0]
    worst = max(ratios, default=(1.0, 0))
    if worst[0] <= UNSTEADY:
        return None
    return (f"COMM's timed loops at the sizes sent vary up to {worst[0]:.3g}× (slowest / fastest, at {worst[1] / 2**20:.3g} MiB): "
            "the network's time is not steady there, and this prediction is no steadier")  # fmt: skip


def predict_shape(base: Base, network: Network | None, shape: Shape) -> Prediction | str:
    """The prediction at ``shape``, or why there is none."""
    world = shape.world_size
    if shape.global_batch % world:
        return f"global batch {shape.global_batch} does not split over {world} ranks"
    per_rank = shape.global_batch // world
    micro, accumulation = split_batch(per_rank, base.micro_batch_size)
    work = per_rank / base.per_rank_batch  # compute and data wait scale with each rank's images
    window = base.overlap_window.scaled(micro / base.micro_batch_size)  # the last micro-batch's backward
    estimate = None
    notes: list[str] = []
    if world > 1:
        if network is None:
            return f"COMM holds no all-reduce measurement of {base.backend}"
        estimate = network.at(shape.nodes, shape.ranks_per_node)
        if estimate is None:
            kind = Allocation(shape.nodes, shape.ranks_per_node).kind
            return f"COMM holds no {kind} all-reduce measurement of {base.backend} (needed for {shape.nodes} node(s))"
        if estimate.source.transport and base.transport and estimate.source.transport != base.transport:
            notes.append(f"COMM measured {estimate.source.transport}, the base ran on {base.transport}")
    exposed, busy, collectives = exposed_communication(base, estimate, window)
    if estimate is not None and base.messages:
        steadiness = unsteady_network(base, estimate)
        if steadiness:
            notes.append(steadiness)
    if (shape.nodes, shape.ranks_per_node, micro, accumulation) == (base.nodes, base.ranks_per_node, base.micro_batch_size, base.accumulation_steps):
        exposed = {"point": base.exposed.mean, "low": base.exposed.low, "high": base.exposed.high}
        notes.append("the base's own shape: its measured exposed communication")
    elif base.world_size == 1:
        # At one rank nothing crosses a network: what the step still waited for after its last
        # gradient was handed over is the backend's own machinery (DDP copying buckets back into
        # the gradients, DeepSpeed flattening and unflattening its buffer), and it comes on top of
        # the network's time at any scale.
        exposed = {k: v + getattr(base.exposed, "mean" if k == "point" else k) for k, v in exposed.items()}
    sync = sync_cost(base, world) * work
    data, compute, overhead = base.data_wait.scaled(work), base.compute.scaled(work), base.overhead
    parts = {
        "data_wait_sec": data.mean, "compute_sec": compute.mean, "overhead_sec": overhead.mean,
        "sync_sec": sync, "exposed_comm_sec": exposed["point"],
    }  # fmt: skip
    low = data.low + compute.low + overhead.low + exposed["low"]
    high = data.high + compute.high + overhead.high + sync + exposed["high"]
    point = sum(parts.values())
    return Prediction(
        shape=shape, micro_batch_size=micro, accumulation_steps=accumulation, parts=parts, step_sec=point,
        step_low=min(low, point), step_high=max(high, point), comm_sec=busy, collectives=collectives,
        comm_how=estimate.how if estimate else "one rank: nothing to reduce", notes=notes,
    )  # fmt: skip


# --- every prediction of a set of runs --------------------------------------------------------


def epochs_to_target(records: list[dict[str, Any]], base: Base, global_batch: int) -> EpochsSource | None:
    """Epochs to the target at ``global_batch``: the same workload and recipe's runs at that batch
    (mean over those that reached it), else MLPerf's reference convergence points for ResNet-50
    on ImageNet with LARS."""
    recipe = ("optimizer", "scaling_rule", "lr", "warmup_epochs", "target_top1", "momentum", "weight_decay")
    reached = []
    for r in records:
        if r.get("status") != "ok" or r.get("global_batch_size") != global_batch or r.get("epochs_to_accuracy") is None:
            continue
        s = settings(r)
        if key_of({k: s.get(k) for k in WORKLOAD_FIELDS}) == base.workload_key and all(s.get(k) == base.settings.get(k) for k in recipe):
            reached.append(r)
    if reached:
        epochs = float(np.mean([r["epochs_to_accuracy"] for r in reached]))
        images = int(reached[0]["steps_per_epoch"]) * global_batch
        return EpochsSource(epochs, images, float(reached[0]["target_top1"]), "runs",
                            f"mean of {len(reached)} run(s) at B={global_batch} that reached {reached[0]['target_top1']:.3g}")  # fmt: skip
    return epochs_from_rcp(base.settings, global_batch)


def time_to_accuracy(prediction: Prediction, source: EpochsSource | None) -> dict[str, Any] | None:
    if source is None:
        return None
    images = source.epochs * source.train_images
    return {
        "sec": images / prediction.throughput, "low_sec": images / prediction.throughput_high,
        "high_sec": images / prediction.throughput_low, "epochs": source.epochs, "train_images": source.train_images,
        "target_top1": source.target_top1, "epochs_source": source.source, "detail": source.detail,
    }  # fmt: skip


@dataclass
class Family:
    base: Base
    predictions: list[Prediction]
    skipped: list[tuple[Shape, str]]


def predict_all(
    records: list[dict[str, Any]], networks: dict[str, Network], nodes: list[int], ranks_per_node: int | None = None,
    global_batches: list[int] | None = None,
) -> list[Family]:  # fmt: skip
    """Every family of ``records`` at every node count: weak scaling (the base's per-rank batch),
    and strong scaling at each of ``global_batches`` (default: the base's global batch)."""
    out = []
    for base in choose_bases(records, ranks_per_node):
        per_node = ranks_per_node or base.ranks_per_node
        network = networks.get(base.backend)
        predictions, skipped = [], []
        shapes = []
        for n in nodes:
            world = n * per_node
            shapes.append(Shape(n, per_node, "weak", world * base.per_rank_batch))
            for batch in global_batches or [base.global_batch]:
                shapes.append(Shape(n, per_node, "strong", batch))
        for shape in shapes:
            found = predict_shape(base, network, shape)
            if isinstance(found, str):
                skipped.append((shape, found))
                continue
            found.efficiency = _efficiency(base, network, found)
            found.time_to_accuracy = time_to_accuracy(found, epochs_to_target(records, base, shape.global_batch))
            predictions.append(found)
        out.append(Family(base, predictions, skipped))
    return out


def _efficiency(base: Base, network: Network | None, prediction: Prediction) -> float | None:
    """Throughput against N/N₀ times the base's at the same per-rank (weak) or global (strong)
    batch: measured where the base ran that batch, else predicted at the base's shape."""
    shape = prediction.shape
    if shape.scaling == "weak" or shape.global_batch == base.global_batch:
        reference = base.throughput.mean
    else:
        at_base = predict_shape(base, network, Shape(base.nodes, base.ranks_per_node, "strong", shape.global_batch))
        if isinstance(at_base, str):
            return None
        reference = at_base.throughput
    return prediction.throughput / (shape.world_size / base.world_size * reference)


# --- output -----------------------------------------------------------------------------------


def to_json(families: list[Family], networks: dict[str, Network], sources: list[str], comm_sources: list[str]) -> dict[str, Any]:
    """The ``--json`` document (its shape is documented in docs/method.md and held by a test)."""
    return {
        "format_version": FORMAT_VERSION,
        "results": sources,
        "comm": comm_sources,
        "networks": {name: net.describe() for name, net in sorted(networks.items())},
        "predictions": [_family_json(f) for f in families],
    }


def _family_json(family: Family) -> dict[str, Any]:
    b = family.base
    return {
        "workload": b.workload,
        "backend": b.backend,
        "setting": b.label,
        "base": {
            "run_ids": b.run_ids, "nodes": b.nodes, "ranks_per_node": b.ranks_per_node, "world_size": b.world_size,
            "micro_batch_size": b.micro_batch_size, "accumulation_steps": b.accumulation_steps,
            "global_batch_size": b.global_batch, "step_sec": b.step.mean, "throughput_images_per_sec": b.throughput.mean,
            "data_wait_sec": b.data_wait.mean, "compute_sec": b.compute.mean, "overhead_sec": b.overhead.mean,
            "overlap_window_sec": b.overlap_window.mean, "messages": len(b.messages), "message_bytes": sum(b.messages),
            "transport": b.transport, "notes": b.notes,
        },
        "shapes": [_prediction_json(p) for p in family.predictions],
        "not_predicted": [{"nodes": s.nodes, "ranks_per_node": s.ranks_per_node, "scaling": s.scaling,
                           "global_batch_size": s.global_batch, "why": why} for s, why in family.skipped],
    }  # fmt: skip


def _prediction_json(p: Prediction) -> dict[str, Any]:
    return {
        "nodes": p.shape.nodes, "ranks_per_node": p.shape.ranks_per_node, "world_size": p.shape.world_size,
        "scaling": p.shape.scaling, "global_batch_size": p.shape.global_batch, "micro_batch_size": p.micro_batch_size,
        "accumulation_steps": p.accumulation_steps, "step_sec": p.step_sec, "step_sec_low": p.step_low,
        "step_sec_high": p.step_high, "throughput_images_per_sec": p.throughput,
        "throughput_low": p.throughput_low, "throughput_high": p.throughput_high, "efficiency": p.efficiency,
        "parts": dict(p.parts), "comm": {"busy_sec": p.comm_sec, "collectives": p.collectives, "source": p.comm_how},
        "time_to_accuracy": p.time_to_accuracy, "notes": p.notes,
    }  # fmt: skip


def parse_counts(text: str, option: str) -> list[int]:
    """``1,2,4`` → [1, 2, 4] (positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ConfigError(option, f"{text!r} is not a list of positive whole numbers; write e.g. 2,4,8")
    return sorted(set(values))


def comm_paths(paths: Iterable[str | Path]) -> list[Path]:
    out = []
    for path in map(Path, paths):
        target = path / "comm.jsonl" if path.is_dir() else path
        if not target.is_file():
            raise ConfigError("--comm", f"{target}: no such comm results file; name the comm.jsonl `larsbench comm` wrote or its folder")
        out.append(target)
    return out


def throughput_at_scale(records: list[dict[str, Any]], networks: dict[str, Network]):
    """For the study's frontier: a study row → (images/s, how, world size) at its global batch on
    the allocation that reaches it with the row's micro-batch and no accumulation (the base's ranks
    per node), or None where that cannot be predicted."""
    bases = {b.family: b for b in choose_bases(records)}

    def at_scale(row) -> tuple[float, str, int] | None:
        base = bases.get(key_of(json.loads(row["settings_key"]), exclude=AXIS))
        if base is None:
            return None
        batch, micro = int(row["global_batch_size"]), int(row["micro_batch_size"])
        world, per_node = batch // micro, base.ranks_per_node
        if batch % micro or world % per_node:
            return None
        shape = Shape(world // per_node, per_node, "strong", batch)
        found = predict_shape(base, networks.get(base.backend), shape)
        if isinstance(found, str):
            return None
        return found.throughput, f"{shape.nodes} node(s) × {per_node} = {batch} = {world}×{micro}×1 (step {found.step_sec * 1e3:.0f} ms [{found.step_low * 1e3:.0f}–{found.step_high * 1e3:.0f}])", world

    return at_scale
