"""Layer-wise telemetry: what is logged, when, and that the side file survives a torn write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from larsbench.loop.telemetry import LayerTelemetry, interval
from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model


def stepped(optimizer_name: str = "lars"):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4)
    if optimizer_name == "lars":
        optimizer = LARS(lars_param_groups(model, 5e-4), lr=0.5, trust_coefficient=0.001)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(8, 3, 8, 8)).logsumexp(1).mean()
    loss.backward()
    before = {name: (p.detach().norm().item(), p.grad.norm().item()) for name, p in model.named_parameters()}
    optimizer.step()
    return model, optimizer, before


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_rows_hold_the_norms_the_step_used_and_lr_times_trust(tmp_path):
    model, optimizer, before = stepped()
    telemetry = LayerTelemetry(optimizer, model, tmp_path / "t.jsonl", every=5)
    telemetry.collect(1)
    logged = rows(tmp_path / "t.jsonl")
    # Only the LARS-adapted tensors (ndim > 1), in order, named as in the model.
    assert [r["layer"] for r in logged] == [n for n, p in model.named_parameters() if p.ndim > 1]
    assert [r["layer_index"] for r in logged] == list(range(len(logged)))
    for r in logged:
        w_norm, g_norm = before[r["layer"]]  # before the update: what the trust ratio used
        assert r["w_norm"] == pytest.approx(w_norm, rel=1e-6) and r["g_norm"] == pytest.approx(g_norm, rel=1e-6)
        assert r["trust_ratio"] == pytest.approx(0.001 * w_norm / (g_norm + 5e-4 * w_norm), rel=1e-5)
        assert r["effective_lr"] == pytest.approx(0.5 * r["trust_ratio"]) and r["lr"] == 0.5


def test_due_at_step_one_and_every_k_steps():
    model, optimizer, _ = stepped()
    telemetry = LayerTelemetry(optimizer, model, None, every=4)
    assert not telemetry.due(1)  # no file: off (the ranks that do not write)
    telemetry = LayerTelemetry(optimizer, model, Path("unused"), every=4)
    assert [s for s in range(1, 13) if telemetry.due(s)] == [1, 4, 8, 12]


def test_sgd_runs_and_interval_zero_log_nothing(tmp_path):
    model, sgd, _ = stepped("sgd")
    assert not LayerTelemetry(sgd, model, tmp_path / "t.jsonl", every=1).enabled
    model, lars, _ = stepped()
    assert not LayerTelemetry(lars, model, tmp_path / "t.jsonl", every=0).enabled


def test_the_default_interval_gives_about_two_hundred_records():
    assert interval(None, 1600) == 8
    assert interval(None, 50) == 1
    assert interval(None, 500_000) == 2500
    assert interval(7, 1600) == 7


def test_a_torn_tail_is_followed_on_a_new_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"step": 1, "layer": "0.weight", "w_no')  # a crash mid-write
    model, optimizer, _ = stepped()
    LayerTelemetry(optimizer, model, path, every=1).collect(2)
    lines = path.read_text().splitlines()
    assert lines[0].startswith('{"step": 1') and all(json.loads(line)["step"] == 2 for line in lines[1:])


def test_a_skipped_step_logs_nothing_rather_than_the_previous_steps_values(tmp_path):
    model, optimizer, _ = stepped()
    telemetry = LayerTelemetry(optimizer, model, tmp_path / "t.jsonl", every=1)
    telemetry.arm()  # what the loop does before a logged step; fp16's scaler then skips step()
    telemetry.collect(2)
    assert not (tmp_path / "t.jsonl").exists()
