"""Mixed precision through the real backends: each adapter's fp16 step hands LARS the unscaled
gradient (one rank per fresh process: DDP, DeepSpeed's engine, Horovod's DistributedOptimizer),
and full runs with bf16, channels_last and torch.compile train on the CPU."""

from __future__ import annotations

import math
import multiprocessing
import os

import pytest
import torch
from torch import nn

from larsbench.core.precision import autocast_supported, compile_toolchain_missing
from larsbench.core.results import read_records
from tests.conftest import run_cli

pytestmark = pytest.mark.multiprocess

ACCUMULATION = 2


def first_update(backend_name: str, precision_name: str) -> list[torch.Tensor]:
    """In a fresh process: one rank of ``backend_name``, tiny_cnn, LARS with weight decay, one
    optimizer step of 2 micro-batches through ``train_step``. Returns LARS's momentum buffers,
    which after the first step are the update itself (lr·λ·(g + β·w), or lr·g when excluded)."""
    from larsbench.backends.base import free_port
    from larsbench.backends.registry import get_backend
    from larsbench.core.environment import ClusterEnvironment
    from larsbench.core.precision import Precision
    from larsbench.loop.trainer import train_step
    from larsbench.workloads.models import build_model
    from larsbench.core.spec import RunSpec
    from larsbench.workloads.optimizers import build_optimizer

    port = free_port()
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "1")):  # fmt: skip
        os.environ[key] = value
    backend = get_backend(backend_name)(None)
    backend.setup(ClusterEnvironment("single", 0, 1, 0, 1, 0, "127.0.0.1", port), torch.device("cpu"), 60)
    try:
        torch.manual_seed(0)
        model = build_model("tiny_cnn", 10)
        optimizer, _ = build_optimizer(RunSpec(optimizer="lars", lr=2.0, global_batch_size=16), model)
        model, optimizer = backend.wrap(
            model, optimizer, micro_batch_size=8, accumulation_steps=ACCUMULATION, precision=Precision(precision_name, "cpu")
        )
        generator = torch.Generator().manual_seed(5)
        batches = [(torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 10, (8,), generator=generator))
                   for _ in range(ACCUMULATION)]  # fmt: skip
        train_step(model, optimizer, iter(batches), backend, nn.CrossEntropyLoss(), ACCUMULATION, torch.device("cpu"), None)
        # DeepSpeed's engine returns the client optimizer itself (no wrapper at stage 0 in fp32
        # or torch_autocast mode); Horovod's is a subclass of it.
        return [optimizer.state[p]["momentum_buffer"].clone() for g in optimizer.param_groups for p in g["params"]]
    finally:
        backend.teardown()


@pytest.fixture(scope="module")
def update():
    cache: dict[tuple[str, str], list[torch.Tensor]] = {}
    spawn = multiprocessing.get_context("spawn")

    def get(backend: str, precision: str) -> list[torch.Tensor]:
        if (backend, precision) not in cache:
            with spawn.Pool(1) as pool:  # DeepSpeed and Horovod keep process-wide state
                cache[backend, precision] = pool.apply(first_update, (backend, precision))
        return cache[backend, precision]

    return get


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


needs_cpu_fp16 = pytest.mark.skipif(
    not autocast_supported("cpu", torch.float16), reason="this torch has no fp16 autocast on the CPU"
)


@needs_cpu_fp16
@pytest.mark.parametrize("backend", ["ddp", "deepspeed", "horovod"])
def test_fp16_step_gives_lars_the_unscaled_gradient(update, backend):
    """Under fp16 the loss is scaled by 2**16; a backend that stepped before unscaling would
    move the excluded tensors (biases, plain lr·g) 65536 times too far, and LARS's weight-decay
    term would vanish beside the scaled gradient. The update must match fp32's closely, and
    the three backends must agree with each other."""
    fp32, fp16 = update("ddp", "fp32"), update(backend, "fp16")
    assert len(fp16) == len(fp32) == 6
    for want, got in zip(fp32, fp16):
        assert relative(got, want) < 0.05
    for want, got in zip(update("ddp", "fp16"), fp16):
        assert relative(got, want) < 1e-3


@pytest.mark.parametrize("backend", ["deepspeed", "horovod"])
def test_bf16_step_matches_ddp(update, backend):
    fp32, bf16 = update("ddp", "fp32"), update(backend, "bf16")
    for want, got in zip(fp32, bf16):
        assert relative(got, want) < 0.1  # bf16 keeps 8 mantissa bits
    for want, got in zip(update("ddp", "bf16"), bf16):
        assert relative(got, want) < 1e-3


def run(tmp_path, name, *args):
    out = tmp_path / name
    result = run_cli("run", "--device", "cpu", "--no-report", "--output", str(out), "--model", "tiny_cnn", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_records(out)
    return record


def assert_trains_alike(record, reference):
    """Two runs of one training in another form (memory layout, compilation): the same numbers."""
    assert len(record["loss_curve"]) == len(reference["loss_curve"]) > 0
    for (_, a), (_, b) in zip(record["loss_curve"], reference["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-4)
    assert record["param_checksum"] == pytest.approx(reference["param_checksum"], rel=1e-5)


def test_bf16_channels_last_trains_on_two_ddp_ranks(tmp_path):
    common = ["--world-size", "2", "--micro-batch", "8", "--steps", "6", "--synthetic-samples", "96",
              "--log-every-steps", "1", "--seed", "3"]  # fmt: skip
    fast = run(tmp_path, "bf16", *common, "--precision", "bf16", "--channels-last")
    plain = run(tmp_path, "fp32", *common)
    assert fast["status"] == "ok" and fast["provenance"]["config"]["precision"] == "bf16"
    assert fast["provenance"]["config"]["channels_last"] is True
    losses = [loss for _, loss in fast["loss_curve"]]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)
    assert max(losses) - min(losses) > 0.01  # it trains
    # autocast really ran: bf16 rounding shows in the losses, yet they stay close to fp32's
    reference = [loss for _, loss in plain["loss_curve"]]
    assert losses != reference
    assert all(abs(a - b) < 0.05 for a, b in zip(losses, reference))


def test_channels_last_trains_through_deepspeed_like_the_contiguous_model(tmp_path):
    # DeepSpeed's initialize broadcasts each weight viewed as bytes, which a channels_last
    # weight is not laid out for ("self.stride(-1) must be 1 to view Float as Byte"): the
    # adapter hands it the model contiguous and converts it back after.
    common = ["--backend", "deepspeed", "--micro-batch", "8", "--steps", "6", "--synthetic-samples", "48",
              "--log-every-steps", "1", "--seed", "3"]  # fmt: skip
    nhwc = run(tmp_path, "nhwc", *common, "--channels-last")
    plain = run(tmp_path, "plain", *common)
    assert nhwc["status"] == "ok" and nhwc["provenance"]["config"]["channels_last"] is True
    assert_trains_alike(nhwc, plain)


@pytest.mark.skipif(compile_toolchain_missing("cpu") is not None, reason="no C++ compiler for torch.compile on the CPU")
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    """torch.compile on the CPU (Inductor, C++): about 30 s of compiling on 2 cores."""
    # No compute probe: it would compile a second copy of the model
    common = ["--world-size", "1", "--micro-batch", "8", "--steps", "3", "--synthetic-samples", "64",
              "--log-every-steps", "1", "--compute-probe-steps", "0"]  # fmt: skip
    compiled = run(tmp_path, "compiled", *common, "--compile")
    eager = run(tmp_path, "eager", *common)
    assert compiled["status"] == "ok" and compiled["provenance"]["config"]["compile"] is True
    assert_trains_alike(compiled, eager)
