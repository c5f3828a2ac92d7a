"""pytest-benchmark: one training step of the suite's loop (``larsbench.loop.trainer.train_step``) per
backend, in this process with world size 1 (gloo on CPU): ResNet-50 at 32 px, synthetic data,
micro-batch 16, LARS. Multi-rank throughput is what ``python -m benchmarks.run`` measures."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from larsbench.backends.registry import get_backend
from larsbench.suite.config import build_spec
from larsbench.core.errors import ConfigError
from larsbench.loop.trainer import train_step
from larsbench.workloads.data import build_rank_data
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import build_optimizer

MICRO_BATCH = 16


def _forever(train):
    for epoch in itertools.count():
        train.set_epoch(epoch)
        yield from train


@pytest.fixture(params=["ddp", "deepspeed", "horovod"])
def one_step(request, single_rank):
    name = request.param
    try:
        spec = build_spec([("bench", {
            "backend": name, "model": "resnet50", "dataset": "synthetic", "image_size": 32,
            "micro_batch_size": MICRO_BATCH, "device": "cpu", "world_size": 1, "steps": 100,
            "synthetic_samples": MICRO_BATCH * 16,
        })])  # fmt: skip
    except ConfigError as exc:  # the backend's library is not installed
        pytest.skip(str(exc))
    device = torch.device("cpu")
    backend = get_backend(name)(spec.backend_config)
    backend.setup(single_rank, device, spec.collective_timeout_sec)
    try:
        torch.manual_seed(spec.seed)
        data = build_rank_data(spec, 0, 1, device)
        model = build_model(spec.model, spec.num_classes)
        optimizer, _ = build_optimizer(spec, model)
        model, optimizer = backend.wrap(model, optimizer, micro_batch_size=spec.micro_batch_size, accumulation_steps=1)
        criterion = nn.CrossEntropyLoss()
        batches = _forever(data.train)

        def step() -> None:
            train_step(model, optimizer, batches, backend, criterion, 1, device, None)

        yield name, step
    finally:
        backend.teardown()


def test_train_step_resnet50_32px(benchmark, one_step):
    name, step = one_step
    benchmark.group = "training step, 1 rank, ResNet-50 32 px, micro-batch 16"
    benchmark.extra_info["backend"] = name
    benchmark.pedantic(step, rounds=8, warmup_rounds=2)
