"""DDP without a communication hook: its buckets' all-reduces are timed from marks on the
gradients (``backends.ddp._BucketMarks``). Real 2-rank gloo runs on the CPU.

Run as a script under torchrun, this file is one rank of the worker below: the real loop step
(``loop.trainer.train_step``) on a DDP-wrapped tiny CNN, with every gradient mark, every bucket
launch handed to the ``CommTimer`` and every micro-batch's end written to a log the tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from larsbench.core.results import read_records
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.multiprocess

STEPS, ACCUMULATION, MICRO = 4, 2, 8
SMALL_BUCKETS = {"bucket_cap_mb": 0.01}  # 10 KB: tiny_cnn's 21.7 KB of gradients in several buckets
RUN = ["--model", "tiny_cnn", "--dataset", "synthetic", "--image-size", "16", "--micro-batch", "8", "--steps", "8",
       "--synthetic-samples", "256", "--device", "cpu", "--log-every-steps", "4"]  # fmt: skip


# -- the worker (one rank) ----------------------------------------------------------------------
def worker(out: Path, frozen: bool) -> None:
    import gc

    import torch

    from larsbench.backends.ddp import DDPBackend
    from larsbench.core import environment

    env = environment.detect()
    backend = DDPBackend(dict(SMALL_BUCKETS))
    backend.setup(env, torch.device("cpu"), 60.0)
    try:
        result = train(backend, env, frozen)
        (out / f"rank{env.rank}.json").write_text(json.dumps(result))
    finally:
        gc.collect()  # DDP's reducer freed before its process group is destroyed (else gloo may abort at exit)
        backend.teardown()


def train(backend, env, frozen: bool) -> dict:
    import copy

    import torch
    import torch.distributed as dist
    from torch import nn

    from larsbench.backends import ddp
    from larsbench.loop.trainer import train_step
    from larsbench.workloads.models import build_model

    device = torch.device("cpu")
    log: list[list] = []  # ["mark", t] | ["grad", index, t] | ["backward", sync] | ["launch", when, nbytes]

    def spy_mark(cuda: bool) -> float:
        now = time.perf_counter()
        log.append(["mark", now])
        return now

    ddp.mark = spy_mark  # the gradient hooks' clock (looked up at each call)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10)
    if frozen:  # DDP's bucket indices count trainable parameters only
        model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    wrapped, optimizer = backend.wrap(model, optimizer, micro_batch_size=MICRO, accumulation_steps=ACCUMULATION)
    reference = copy.deepcopy(model)  # rank 0's start (DDP broadcast it), no hooks
    trainable = [p for p in model.parameters() if p.requires_grad]
    for index, param in enumerate(trainable):  # registered after the backend's: called right after it
        param.register_post_accumulate_grad_hook(lambda _p, index=index: log.append(["grad", index, time.perf_counter()]))

    real_backward, real_step, real_launched_at = backend.backward, backend.step, backend.comm_timer.launched_at

    def backward(loss):
        real_backward(loss)
        log.append(["backward", backend._sync])

    def launched_at(when, nbytes, first=None):
        log.append(["launch", when, nbytes])
        real_launched_at(when, nbytes, first)

    reduced: list[list[torch.Tensor]] = []

    def step(opt):
        reduced.append([p.grad.clone() for p in trainable])
        real_step(opt)

    backend.backward, backend.step, backend.comm_timer.launched_at = backward, step, launched_at
    generator = torch.Generator().manual_seed(100 + env.rank)
    batches = [(torch.randn(MICRO, 3, 16, 16, generator=generator), torch.randint(0, 10, (MICRO,), generator=generator))
               for _ in range(STEPS * ACCUMULATION)]  # fmt: skip
    stream, steps = iter(batches), []
    try:
        for _ in range(STEPS):
            log.append(["step"])
            backend.comm_timer.start_step()
            train_step(wrapped, optimizer, stream, backend, nn.CrossEntropyLoss(), ACCUMULATION, device, None)
            marks = backend.comm_timer.take()
            steps.append({"first": marks.first, "ready": marks.ready, "done": marks.done, "messages": marks.messages})
    finally:  # the backend keeps no reference to the model past this function
        del backend.backward, backend.step, backend.comm_timer.launched_at

    # The first step's reduced gradient against the ranks' mean of the same micro-batches'
    # gradients on the plain model: divided by the world size once, not twice or never.
    for images, labels in batches[:ACCUMULATION]:
        (nn.functional.cross_entropy(reference(images), labels) / ACCUMULATION).backward()
    mean = [p.grad for p in reference.parameters() if p.requires_grad]
    for grad in mean:
        dist.all_reduce(grad)
        grad /= env.world_size
    data = wrapped._get_ddp_logging_data()
    result = {
        "log": log, "steps": steps,
        "comm_hook": data.get("comm_hook"), "has_rebuilt_buckets": data.get("has_rebuilt_buckets"),
        "bucket_sizes": [int(n) for n in data["rebuilt_bucket_sizes"].split(",")],
        "bucket_members": [[int(i) for i in b.split()] for b in data["rebuilt_per_bucket_param_indices"].split(",")],
        "grad_bytes": [p.numel() * p.element_size() for p in trainable],
        "mean_gradient": all(torch.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(reduced[0], mean)),
    }  # fmt: skip
    return result


# -- the tests ------------------------------------------------------------------------------------
def launch(out: Path, frozen: bool) -> list[dict]:
    """Both ranks' results of the worker, launched by torchrun."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__, str(out)]
    done = subprocess.run([*command, *(["frozen"] if frozen else [])], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> list[dict]:
    return launch(tmp_path_factory.mktemp("plain"), frozen=False)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> list[dict]:
    return launch(tmp_path_factory.mktemp("frozen"), frozen=True)


@pytest.fixture(params=["plain", "frozen"])
def ranks(request) -> list[dict]:
    """The worker's ranks: tiny_cnn as built, and with its first parameter frozen."""
    return request.getfixturevalue(request.param)


def segments(log: list[list]) -> list[list[list]]:
    """The log cut into steps."""
    cut: list[list[list]] = []
    for entry in log:
        if entry[0] == "step":
            cut.append([])
        else:
            cut[-1].append(entry)
    return cut


def test_ddp_runs_its_own_reduction_with_no_communication_hook(ranks):
    for rank in ranks:
        assert rank["comm_hook"] is None  # DDP names a registered hook in its logging data
        assert rank["mean_gradient"]  # its built-in path divided by the world size, once


def test_a_no_sync_micro_batch_takes_no_marks_and_the_synchronising_one_marks_every_gradient(ranks):
    for rank in ranks:
        trainable = len(rank["grad_bytes"])
        for step in segments(rank["log"]):
            micro, counts = [], {"mark": 0, "grad": 0}
            for entry in step:
                if entry[0] == "backward":
                    micro.append((entry[1], counts["mark"], counts["grad"]))
                    counts = {"mark": 0, "grad": 0}
                elif entry[0] in counts:
                    counts[entry[0]] += 1
            assert micro == [(False, 0, trainable), (True, trainable, trainable)]


def test_each_bucket_is_launched_at_the_mark_of_the_last_gradient_it_waited_for(ranks):
    for rank in ranks:
        sizes, members = rank["bucket_sizes"], rank["bucket_members"]
        assert rank["has_rebuilt_buckets"] == 1 and len(sizes) > 1
        assert sum(sizes) == sum(rank["grad_bytes"])
        assert sorted(i for bucket in members for i in bucket) == list(range(len(rank["grad_bytes"])))
        assert sizes == [sum(rank["grad_bytes"][i] for i in bucket) for bucket in members]  # indices: trainable parameters
        for number, (step, marks) in enumerate(zip(segments(rank["log"]), rank["steps"])):
            synchronising = step[[e[0] for e in step].index("backward") + 1:]  # after the no_sync micro-batch
            # each gradient's mark is the one taken just before this test's own hook for it
            assert all(synchronising[k - 1][0] == "mark" for k, e in enumerate(synchronising) if e[0] == "grad")
            mark_of = {e[1]: synchronising[k - 1][1] for k, e in enumerate(synchronising) if e[0] == "grad"}
            order = [e[1] for e in synchronising if e[0] == "grad"]
            launches = [(e[1], e[2]) for e in synchronising if e[0] == "launch"]
            assert marks["messages"] == [n for _, n in launches]
            if number == 0:  # before DDP reports its rebuilt buckets: one message, first to last gradient
                assert marks["messages"] == [sum(rank["grad_bytes"])]
                assert (marks["first"], marks["ready"]) == (mark_of[order[0]], mark_of[order[-1]])
            else:
                assert marks["messages"] == sizes
                waited = [max((i for bucket in members[: b + 1] for i in bucket), key=order.index) for b in range(len(members))]
                assert launches == [(mark_of[i], n) for i, n in zip(waited, sizes)]
                assert (marks["first"], marks["ready"]) == (launches[0][0], mark_of[order[-1]])
            assert marks["first"] <= marks["ready"] <= marks["done"]


def test_a_two_rank_record_lists_ddps_buckets_and_measures_exposed_communication(tmp_path, plain):
    out = tmp_path / "two"
    result = run_cli("run", *RUN, "--no-report", "--world-size", "2", "--output", str(out), "--backend-config", json.dumps(SMALL_BUCKETS))
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_records(out)
    assert record["comm_messages_bytes"] == plain[0]["bucket_sizes"]  # the same model's buckets, as DDP built them
    assert sum(record["comm_messages_bytes"]) == record["allreduce_bytes_per_step"]
    assert record["exposed_comm_sec_per_step"] > 0 and record["comm_sec_per_step"] >= record["exposed_comm_sec_per_step"]
    assert record["split_note"] is None or "moved nothing" not in record["split_note"]
    steps = [json.loads(line) for line in (out / record["steps_file"]).read_text().splitlines()]
    for s in steps:  # per rank: ready after the step's start, first <= ready <= done
        assert len(s["step_sec"]) == 6 and all(0 < ready < step for ready, step in zip(s["ready_sec"], s["step_sec"]))
        assert all(0 <= exposed <= span for exposed, span in zip(s["exposed_comm_sec"], s["comm_sec"]))


def test_on_one_rank_the_marked_reductions_are_overhead(tmp_path):
    out = tmp_path / "one"
    result = run_cli("run", *RUN, "--no-report", "--world-size", "1", "--output", str(out), "--backend-config", json.dumps(SMALL_BUCKETS))
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_records(out)
    assert len(record["comm_messages_bytes"]) > 1 and sum(record["comm_messages_bytes"]) == record["allreduce_bytes_per_step"]
    assert record["reduction_wait_sec_per_step"] > 0  # measured ...
    assert record["exposed_comm_sec_per_step"] == 0.0 and record["comm_sec_per_step"] == 0.0  # ... and moved nothing
    assert "moved nothing" in record["split_note"]


if __name__ == "__main__":
    worker(Path(sys.argv[1]), frozen=sys.argv[2:] == ["frozen"])
