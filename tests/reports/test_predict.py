"""``larsbench predict``: the collective-time model from comm records, the step model, MLPerf's
reference convergence points, the ``--json`` document's shape, and bad input.

Records come from the suite's own builders: training records from ``tests/records.py``
(``build_record``), comm records from ``comm_worker.comm_record`` (what a comm rank writes)."""

from __future__ import annotations

import json

import pytest

from larsbench.reports.predict import (
    Shape, choose_bases, expected_max, predict_all, predict_shape, ready_times, simulate, split_batch, sync_cost,
)  # fmt: skip
from larsbench.reports.predict_comm import Allocation, bus_factor, networks
from larsbench.reports.predict_rcp import IMAGENET_TRAIN_IMAGES, judge_epochs, reference
from larsbench.suite.comm_worker import comm_record
from tests.conftest import larsbench
from tests.records import make_record, write_records

MiB = 2**20
SIZES = [4096 * 2**i for i in range(14)]  # 4 KiB .. 32 MiB
LATENCY = 100e-6


def ring_seconds(size: int, ranks: int, link_bytes_per_sec: float) -> float:
    """A ring all-reduce on links of one rate: 2(n−1) latency steps and 2(n−1)/n of the message."""
    return LATENCY * (ranks - 1) + size * bus_factor(ranks) / link_bytes_per_sec


def comm_run(backend: str, nodes: int, per_node: int, link: float, run_id: str | None = None, spread: float = 0.1) -> list[dict]:
    ranks = nodes * per_node
    hosts = [f"node{k // per_node + 1}" for k in range(ranks)]
    out = []
    for size in SIZES:
        t = ring_seconds(size, ranks, link)
        out.append(comm_record(
            run_id=run_id or f"comm-{backend}-{nodes}x{per_node}", backend=backend, operation="all_reduce", world_size=ranks,
            num_nodes=nodes, device="cpu", message_bytes=size, count=3, seconds=[t, t * (1 - spread), t * (1 + spread)],
            latency_sec=LATENCY * (ranks - 1), output_preallocated=True, warmup=2, transport={"collectives": "gloo"},
            hosts=hosts, info={},
        ))  # fmt: skip
    return out


def base_record(**overrides) -> dict:
    fields = dict(
        throughput=100.0, world_size=1, micro_batch_size=16, backend="ddp", model="resnet50", step_sec=0.2,
        compute_sec=0.15, ready_sec=0.12, comm_sec=0.1, exposed_comm_sec=0.0,
        comm_messages_bytes=[1 * MiB, 25 * MiB, 25 * MiB, 25 * MiB, 14 * MiB], allreduce_bytes_per_step=90 * MiB,
    )  # fmt: skip
    return make_record(**{**fields, **overrides})


LINK = 25e6  # bytes/s: a 200 Mbit/s link


def test_measured_allocations_are_used_as_they_are_and_others_scaled_like_a_ring():
    nets = networks(comm_run("ddp", 2, 1, LINK) + comm_run("ddp", 4, 1, LINK) + comm_run("ddp", 1, 2, 5e9))
    ddp = nets["ddp"]
    assert set(ddp.curves) == {Allocation(2, 1), Allocation(4, 1), Allocation(1, 2)}
    exact = ddp.at(4, 1)
    assert not exact.scaled and exact.seconds(8 * MiB) == pytest.approx(ring_seconds(8 * MiB, 4, LINK))
    # between measured sizes: log-log interpolation of a curve that is nearly a power law there
    assert exact.seconds(6 * MiB) == pytest.approx(ring_seconds(6 * MiB, 4, LINK), rel=0.02)
    # 3 nodes: from the 4-node measurement (most ranks, same kind), latency and bus factor rescaled
    three = ddp.at(3, 1)
    assert three.scaled and three.source.allocation == Allocation(4, 1)
    assert three.seconds(8 * MiB) == pytest.approx(ring_seconds(8 * MiB, 3, LINK), rel=1e-6)
    # one node is never predicted from inter-node links, nor several nodes from one node's
    assert ddp.at(1, 4).source.allocation == Allocation(1, 2)
    assert networks(comm_run("ddp", 1, 2, 5e9))["ddp"].at(2, 1) is None
    # beyond the largest size: proportional at the largest size's bandwidth; low/high from the loops
    assert exact.seconds(64 * MiB) == pytest.approx(ring_seconds(32 * MiB, 4, LINK) * 2)
    assert exact.seconds(8 * MiB, "low") < exact.seconds(8 * MiB) < exact.seconds(8 * MiB, "high")


def test_the_newest_comm_run_of_an_allocation_wins():
    old = comm_run("ddp", 2, 1, LINK, run_id="old")
    new = comm_run("ddp", 2, 1, 2 * LINK, run_id="new")
    for r in new:
        r["timestamp_end"] = max(x["timestamp_end"] for x in old) + 10
    assert networks(old + new)["ddp"].curves[Allocation(2, 1)].run_id == "new"


def test_reductions_overlap_backward_compute_as_they_become_ready():
    one_second = lambda size: size / 10.0  # noqa: E731  (10 bytes per second)
    # three messages ready at 0, 5 and 10 s, each taking 10 s: the network is busy to 30 s
    end, sent = simulate([100, 100, 100], ready_times(3, 10.0), one_second, None)
    assert end == pytest.approx(30.0) and sent == [100, 100, 100]
    # a fast network finishes 1 s after the last is ready
    end, _ = simulate([10, 10, 10], ready_times(3, 10.0), one_second, None)
    assert end == pytest.approx(11.0)
    # Horovod fuses what is ready when the network frees up, up to its threshold
    end, sent = simulate([100, 10, 10, 10], [0.0, 1.0, 2.0, 3.0], one_second, fuse_bytes=25)
    assert sent == [100, 20, 10] and end == pytest.approx(10 + 2 + 1)
    assert ready_times(3, 10.0, late=True) == [0.0, 10.0, 10.0]
    assert split_batch(64, 16) == (16, 4) and split_batch(8, 16) == (8, 1) and split_batch(12, 8) == (6, 2)


def test_waiting_for_the_slowest_rank_grows_with_the_ranks():
    flat = [(0.0, 1.0), (1.0, 1.0)]
    assert expected_max(flat, 64) == pytest.approx(1.0)
    uniform = [(0.0, 0.0), (1.0, 1.0)]
    assert expected_max(uniform, 1) == pytest.approx(0.5, abs=1e-4)
    assert expected_max(uniform, 3) == pytest.approx(0.75, abs=1e-4)  # E[max of 3 uniforms] = 3/4
    (base,) = choose_bases([base_record(step_sec=[0.18, 0.2, 0.22, 0.2, 0.3] * 4)])
    assert sync_cost(base, 1) == 0.0 < sync_cost(base, 4) < sync_cost(base, 64) <= 0.3 - 0.22


def test_a_slow_link_shows_as_exposed_communication_and_a_fast_one_hides_behind_compute():
    base_rec = base_record()
    slow = networks(comm_run("ddp", 2, 1, LINK))["ddp"]
    fast = networks(comm_run("ddp", 2, 1, 50e9))["ddp"]
    (base,) = choose_bases([base_rec])
    assert base.overlap_window.mean == pytest.approx(0.1 - 0.0)  # comm span minus exposed: ready − first launch
    slow_p = predict_shape(base, slow, Shape(2, 1, "weak", 32))
    fast_p = predict_shape(base, fast, Shape(2, 1, "weak", 32))
    busy = sum(ring_seconds(m, 2, LINK) for m in base.messages)
    assert slow_p.comm_sec == pytest.approx(busy, rel=0.02)
    # all but the window is exposed: the network cannot start before the first bucket
    assert slow_p.parts["exposed_comm_sec"] == pytest.approx(busy - base.overlap_window.mean, rel=0.05)
    assert fast_p.parts["exposed_comm_sec"] < 0.01
    assert slow_p.step_low <= slow_p.step_sec <= slow_p.step_high
    assert fast_p.step_sec == pytest.approx(base.step.mean, rel=0.05)
    # the base's own shape is its measurement
    own = predict_shape(base, slow, Shape(1, 1, "weak", 16))
    assert own.step_sec == pytest.approx(base.step.mean)


def test_strong_scaling_splits_each_ranks_share_of_the_global_batch():
    (base,) = choose_bases([base_record(micro_batch_size=16, accumulation_steps=4)])
    network = networks(comm_run("ddp", 4, 1, 50e9))["ddp"]
    p = predict_shape(base, network, Shape(4, 1, "strong", 64))
    assert (p.micro_batch_size, p.accumulation_steps) == (16, 1)
    assert p.parts["compute_sec"] == pytest.approx(base.compute.mean / 4)
    assert isinstance(predict_shape(base, network, Shape(3, 1, "strong", 64)), str)  # 64 does not split over 3


def test_the_base_is_the_fewest_nodes_with_the_requested_ranks_per_node():
    records = [base_record(world_size=1), base_record(world_size=2, hosts=["n1", "n1"]),
               base_record(world_size=4, num_nodes=2, hosts=["n1", "n1", "n2", "n2"])]  # fmt: skip
    (default,) = choose_bases(records)
    assert (default.nodes, default.ranks_per_node) == (1, 2)
    (one,) = choose_bases(records, ranks_per_node=1)
    assert (one.nodes, one.ranks_per_node) == (1, 1)


def test_mlperf_reference_points_give_resnet50_its_epochs():
    assert reference(32768).mean_epochs == pytest.approx(56.0)  # olympic mean of [56, 56, 55, ...]
    assert reference(8192).mean_epochs == pytest.approx(41.875)
    between = reference(16384)
    assert 41.875 < between.mean_epochs < 56.0 and "interpolated" in between.how
    assert reference(100_000) is None
    imagenet = {"model": "resnet50", "dataset": "imagefolder", "num_classes": 1000, "optimizer": "lars"}
    assert judge_epochs(imagenet, 32768, 56.0, 0.759) is None
    assert "more than MLPerf's reference" in judge_epochs(imagenet, 32768, 61.0, 0.759)
    assert "fewer than MLCommons' RCP checker accepts" in judge_epochs(imagenet, 32768, 50.0, 0.759)
    assert judge_epochs({**imagenet, "num_classes": 10}, 32768, 61.0, 0.759) is None
    assert judge_epochs(imagenet, 32768, 61.0, 0.6) is None


def imagenet_base(tmp_path) -> tuple[str, str]:
    record = base_record(dataset="imagefolder", data_dir="/datasets/imagenet", num_classes=1000, image_size=224,
                         micro_batch_size=64, throughput=400.0, step_sec=0.16, compute_sec=0.12, ready_sec=0.09,
                         comm_sec=0.08, target_top1=0.759)  # fmt: skip
    results = write_records(tmp_path / "base" / "results.jsonl", [record])
    comm = tmp_path / "comm" / "comm.jsonl"
    comm.parent.mkdir()
    comm.write_text("".join(json.dumps(r) + "\n" for r in comm_run("ddp", 16, 8, 12.5e9) + comm_run("ddp", 1, 8, 100e9)))
    return str(results), str(comm)


# The --json document, level by level (docs/method.md, "Predicting other scales", lists them).
TOP_KEYS = {"format_version", "results", "comm", "networks", "predictions"}
FAMILY_KEYS = {"workload", "backend", "setting", "base", "shapes", "not_predicted"}
BASE_KEYS = {"run_ids", "nodes", "ranks_per_node", "world_size", "micro_batch_size", "accumulation_steps",
             "global_batch_size", "step_sec", "throughput_images_per_sec", "data_wait_sec", "compute_sec",
             "overhead_sec", "overlap_window_sec", "messages", "message_bytes", "transport", "notes"}  # fmt: skip
SHAPE_KEYS = {"nodes", "ranks_per_node", "world_size", "scaling", "global_batch_size", "micro_batch_size",
              "accumulation_steps", "step_sec", "step_sec_low", "step_sec_high", "throughput_images_per_sec",
              "throughput_low", "throughput_high", "efficiency", "parts", "comm", "time_to_accuracy", "notes"}  # fmt: skip
PARTS_KEYS = {"data_wait_sec", "compute_sec", "overhead_sec", "sync_sec", "exposed_comm_sec"}
COMM_KEYS = {"busy_sec", "collectives", "source"}
TTA_KEYS = {"sec", "low_sec", "high_sec", "epochs", "train_images", "target_top1", "epochs_source", "detail"}
SKIPPED_KEYS = {"nodes", "ranks_per_node", "scaling", "global_batch_size", "why"}


def test_resnet50_on_imagenet_at_32k_on_64_nodes_gets_its_rcp_time_to_accuracy(tmp_path):
    results, comm = imagenet_base(tmp_path)
    done = larsbench("predict", results, "--comm", comm, "--nodes", "1,64", "--ranks-per-node", "8",
                     "--global-batch", "32768", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == TOP_KEYS and doc["format_version"] == 1
    (family,) = doc["predictions"]
    assert set(family) == FAMILY_KEYS and set(family["base"]) == BASE_KEYS
    shapes = {(s["nodes"], s["scaling"], s["global_batch_size"]): s for s in family["shapes"]}
    for shape in family["shapes"]:
        assert set(shape) == SHAPE_KEYS and set(shape["parts"]) == PARTS_KEYS and set(shape["comm"]) == COMM_KEYS
        assert shape["step_sec_low"] <= shape["step_sec"] <= shape["step_sec_high"]
        assert shape["step_sec"] == pytest.approx(sum(shape["parts"].values()))
    for skipped in family["not_predicted"]:
        assert set(skipped) == SKIPPED_KEYS
    at_scale = shapes[(64, "strong", 32768)]
    assert (at_scale["world_size"], at_scale["micro_batch_size"], at_scale["accumulation_steps"]) == (512, 64, 1)
    assert "scaled from 16 nodes × 8 ranks" in at_scale["comm"]["source"]
    tta = at_scale["time_to_accuracy"]
    assert set(tta) == TTA_KEYS and tta["epochs_source"] == "rcp" and tta["epochs"] == pytest.approx(56.0)
    assert tta["sec"] == pytest.approx(56.0 * IMAGENET_TRAIN_IMAGES / at_scale["throughput_images_per_sec"])
    assert tta["low_sec"] <= tta["sec"] <= tta["high_sec"]
    # one node at 32K: 8 ranks with accumulation, intra-node records
    one = shapes[(1, "strong", 32768)]
    assert one["accumulation_steps"] == 64 and "1 node × 8 ranks" in one["comm"]["source"]
    # the console says the same, labelled as RCP-based
    text = larsbench("predict", results, "--comm", comm, "--nodes", "64", "--ranks-per-node", "8", "--global-batch", "32768")
    assert text.returncode == 0 and "RCP-based" in text.stdout


def test_epochs_from_the_runs_themselves_come_first(tmp_path):
    reached = base_record(steps_per_epoch=10, target_top1=0.5, epochs_to_accuracy=3.0, time_to_accuracy_sec=30.0,
                          evals=[{"step": 30, "epoch": 3.0, "top1": 0.6, "top5": 0.9, "elapsed_sec": 30.0}])  # fmt: skip
    nets = networks(comm_run("ddp", 2, 1, LINK))
    (family,) = predict_all([reached], nets, [2], None, [16])
    strong = next(p for p in family.predictions if p.shape.scaling == "strong")
    assert strong.time_to_accuracy["epochs_source"] == "runs" and strong.time_to_accuracy["epochs"] == 3.0
    assert strong.time_to_accuracy["train_images"] == 10 * 16
    weak = next(p for p in family.predictions if p.shape.scaling == "weak")
    assert weak.time_to_accuracy is None  # nothing ran at B=32


@pytest.mark.parametrize(("args", "key"), [
    (["--nodes", "0"], "--nodes"), (["--nodes", "two"], "--nodes"), (["--ranks-per-node", "0"], "--ranks-per-node"),
    (["--global-batch", "-4"], "--global-batch"),
])  # fmt: skip
def test_bad_predict_flags_exit_2_with_one_line(tmp_path, args, key):
    results, comm = imagenet_base(tmp_path)
    done = larsbench("predict", results, "--comm", comm, *args)
    assert done.returncode == 2 and done.stderr.startswith(f"larsbench: error: {key}: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_comm_without_an_all_reduce_across_ranks_is_bad_input(tmp_path):
    results, _ = imagenet_base(tmp_path)
    missing = larsbench("predict", results, "--comm", str(tmp_path / "nowhere.jsonl"))
    assert missing.returncode == 2 and missing.stderr.startswith("larsbench: error: --comm: ")
    gathers = tmp_path / "gathers" / "comm.jsonl"
    gathers.parent.mkdir()
    gathers.write_text("".join(json.dumps({**r, "operation": "all_gather"}) + "\n" for r in comm_run("ddp", 2, 1, LINK)))
    done = larsbench("predict", results, "--comm", str(gathers))
    assert done.returncode == 2 and "no all-reduce measurement" in done.stderr


def test_a_base_that_timed_no_reduction_takes_when_its_gradient_is_ready_from_another_backend():
    # Horovod on one rank launches no all-reduce: its record has no messages and no window
    horovod = base_record(backend="horovod", comm_sec=0.0, ready_sec=None, comm_messages_bytes=[], compute_sec=0.3, step_sec=0.35)
    ddp = base_record()
    bases = {b.backend: b for b in choose_bases([horovod, ddp])}
    assert bases["ddp"].measured_reductions and not bases["horovod"].measured_reductions
    assert sum(bases["horovod"].messages) == pytest.approx(90 * MiB, rel=1e-6) and len(bases["horovod"].messages) == 5
    # backward after the first gradient is the model's: DDP's window, scaled by the compute ratio 0.3 / 0.15
    assert bases["horovod"].overlap_window.mean == pytest.approx(2 * bases["ddp"].overlap_window.mean)
    assert "ddp's base's" in bases["horovod"].notes[-1]
    (alone,) = choose_bases([horovod])
    assert alone.overlap_window.mean == 0 and alone.messages == [90 * MiB] and "no overlap" in alone.notes[-1]


def test_a_one_rank_base_adds_its_own_reduction_machinery_to_the_network_time():
    # DeepSpeed on one rank: 211 ms after backward in allreduce_gradients with nothing on a
    # network (flattening and unflattening its buffer): paid again around the real all-reduce
    (base,) = choose_bases([base_record(backend="deepspeed", exposed_comm_sec=0.05, ready_sec=0.15, comm_sec=0.05,
                                        comm_messages_bytes=[90 * MiB], step_sec=0.25)])  # fmt: skip
    assert base.overlap_window.mean == pytest.approx(0.0) and base.exposed.mean == pytest.approx(0.05)
    slow = networks(comm_run("deepspeed", 2, 1, LINK))["deepspeed"]
    p = predict_shape(base, slow, Shape(2, 1, "weak", 32))
    assert p.parts["exposed_comm_sec"] == pytest.approx(ring_seconds(90 * MiB, 2, LINK) + 0.05, rel=0.02)


def test_the_frontier_predicts_throughput_where_no_run_reached_a_batch_without_accumulation():
    from larsbench.reports.load import records_frame, summarize_repeats
    from larsbench.reports.predict import throughput_at_scale
    from larsbench.reports.study import frontiers, study_rows

    evals = [{"step": 10, "epoch": 2.0, "top1": 0.5, "top5": 0.9, "elapsed_sec": 10.0}]
    # A study on one worker: B = 8 as 1×8×1, B = 16 and 32 only by accumulation
    records = [
        make_record(micro_batch_size=8, accumulation_steps=acc, throughput=100.0, step_sec=0.08 * acc, compute_sec=0.06 * acc,
                    ready_sec=0.05, comm_sec=0.03, exposed_comm_sec=0.001, comm_messages_bytes=[64 * 1024],
                    allreduce_bytes_per_step=64 * 1024, target_top1=0.4, epochs_to_accuracy=epochs, time_to_accuracy_sec=20.0,
                    steps_per_epoch=640 // (8 * acc), evals=evals)
        for acc, epochs in ((1, 2.0), (2, 2.0), (4, 2.2))
    ]  # fmt: skip
    summary = summarize_repeats(records_frame(records))
    at_scale = throughput_at_scale(records, networks(comm_run("ddp", 8, 1, 1.25e9)))
    (front,) = frontiers(summary, study_rows(summary), at_scale)
    points = {p.global_batch: p for p in front.points}
    assert not points[8].predicted and points[8].throughput == pytest.approx(100.0)  # B=8 ran as 1×8×1
    for batch in (16, 32):
        p = points[batch]
        assert p.predicted and p.source.startswith(f"predicted: {batch // 8} node(s) × 1 = {batch} = {batch // 8}×8×1")
        assert "measured with accumulation: 100.0 images/s" in p.source and p.source_world_size == batch // 8
        assert p.projected_sec == pytest.approx(p.epochs * p.train_images / p.throughput)
    # without comm records nothing is predicted: the study's own accumulation runs stand
    (plain,) = frontiers(summary, study_rows(summary))
    assert not any(p.predicted for p in plain.points)
