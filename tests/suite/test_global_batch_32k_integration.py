"""One real optimizer step at global batch 32,768 = 2 ranks × 1,024 × 16 accumulated
micro-batches (tiny CNN, 8 px synthetic images), checked against a single-process gradient
over the same 32,768 images: the trust ratios LARS used must come from the full accumulated,
all-reduced gradient, not from one micro-batch or one rank's share."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from larsbench.core.spec import flag_for
from larsbench.suite.config import build_spec
from tests.conftest import run_cli
from larsbench.workloads.data import SyntheticBatches
from larsbench.workloads.models import build_model

pytestmark = pytest.mark.multiprocess

SETTINGS = {
    "backend": "ddp",
    "world_size": 2,
    "micro_batch_size": 1024,
    "accumulation_steps": 16,
    "global_batch_size": 32768,
    "model": "tiny_cnn",
    "dataset": "synthetic",
    "synthetic_samples": 32768,
    "image_size": 8,
    "optimizer": "lars",
    "steps": 1,
    "telemetry_every_steps": 1,
    "device": "cpu",
    "seed": 3,
}


def _flags() -> list[str]:
    return [arg for key, value in SETTINGS.items() for arg in (flag_for(key), str(value))]


def _gradient_norms(spec, images: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(‖w‖, ‖g‖) per weight tensor for one full-batch gradient of the run's initial model."""
    torch.manual_seed(spec.seed)  # as the Trainer does before building the model
    model = build_model(spec.model, spec.num_classes)
    nn.CrossEntropyLoss()(model(images), labels).backward()
    return {name: (p.norm().item(), p.grad.norm().item()) for name, p in model.named_parameters() if p.ndim > 1}


def test_one_lars_step_at_32k_uses_the_full_accumulated_gradient(tmp_path):
    done = run_cli("run", *_flags(), "--no-report", "--output", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "ok"
    assert (record["global_batch_size"], record["steps"]) == (32768, 1)
    telemetry = pd.read_json(tmp_path / record["telemetry"], lines=True)
    assert set(telemetry["step"]) == {1}

    spec = build_spec([("test", SETTINGS)])
    shards = [SyntheticBatches(spec, rank, spec.world_size, torch.device("cpu")) for rank in range(spec.world_size)]
    images = torch.cat([s.images for s in shards])
    labels = torch.cat([s.labels for s in shards])
    assert len(labels) == 32768
    full = _gradient_norms(spec, images, labels)
    one_micro_batch = _gradient_norms(spec, images[:1024], labels[:1024])
    one_rank = _gradient_norms(spec, shards[0].images, shards[0].labels)

    assert sorted(telemetry["layer"]) == sorted(full)
    eta, beta = spec.trust_coefficient, spec.weight_decay
    for row in telemetry.itertuples():
        w_norm, g_norm = full[row.layer]
        assert row.w_norm == pytest.approx(w_norm, rel=1e-5)
        assert row.g_norm == pytest.approx(g_norm, rel=1e-4)
        assert row.trust_ratio == pytest.approx(eta * w_norm / (g_norm + beta * w_norm), rel=1e-4)
        assert row.effective_lr == pytest.approx(row.lr * row.trust_ratio, rel=1e-9)
        # The check can fail: a micro-batch's or one rank's gradient has another norm.
        assert abs(one_micro_batch[row.layer][1] - g_norm) > 0.05 * g_norm
        assert abs(one_rank[row.layer][1] - g_norm) > 1e-3 * g_norm
