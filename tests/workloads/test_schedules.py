"""LR scaling rules and the warm-up + poly(2) schedule (workloads/schedules.py), by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from larsbench.workloads.lars import LARS
from larsbench.workloads.schedules import WarmupPolySchedule, scaled_lr


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [
        ("none", 8192, 0.1),
        ("linear", 256, 0.1),
        ("linear", 8192, 3.2),  # 0.1 · 8192/256 = 0.1 · 32
        ("linear", 64, 0.025),  # 0.1 · 1/4
        ("sqrt", 256, 0.1),
        ("sqrt", 1024, 0.2),  # 0.1 · √4
        ("sqrt", 16384, 0.8),  # 0.1 · √64
        ("sqrt", 64, 0.05),  # 0.1 · √(1/4)
    ],
)
def test_scaling_rules_hand_values(rule, batch, expected):
    assert scaled_lr(0.1, rule, batch) == pytest.approx(expected, rel=1e-12)


def test_scaling_rule_reference_batch_is_honoured():
    assert scaled_lr(2.0, "linear", 1000, reference_batch=500) == pytest.approx(4.0)
    assert scaled_lr(2.0, "sqrt", 2000, reference_batch=500) == pytest.approx(4.0)
    assert scaled_lr(2.0, "none", 2000, reference_batch=500) == 2.0


@pytest.mark.parametrize("rule", ["Linear", "square", "", "log"])
def test_unknown_scaling_rule_raises(rule):
    with pytest.raises(ValueError):
        scaled_lr(0.1, rule, 512)


def test_warmup_is_linear_and_reaches_peak_at_its_end():
    sched = WarmupPolySchedule(peak_lr=2.0, total_steps=20, warmup_steps=4)
    warm = [sched.lr_at(s) for s in range(4)]
    # linear ramp: equal increments, every value below or at the peak, peak on the last step
    assert warm == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert 0 < warm[0] < warm[-1]
    increments = [b - a for a, b in zip(warm, warm[1:])]
    assert increments == pytest.approx([increments[0]] * len(increments))
    assert sched.lr_at(4) == pytest.approx(2.0)  # decay starts from the peak


def test_poly2_decay_hand_values():
    # peak 2, end 0.2, warm-up 4, total 14 → 10 decay steps:
    # lr(4 + k) = 0.2 + 1.8 · (1 − k/10)²
    sched = WarmupPolySchedule(peak_lr=2.0, total_steps=14, warmup_steps=4, end_lr=0.2)
    assert sched.lr_at(4) == pytest.approx(2.0)
    assert sched.lr_at(5) == pytest.approx(0.2 + 1.8 * 0.81)  # 1.658
    assert sched.lr_at(9) == pytest.approx(0.2 + 1.8 * 0.25)  # 0.65
    assert sched.lr_at(13) == pytest.approx(0.2 + 1.8 * 0.01)  # 0.218
    assert sched.lr_at(14) == pytest.approx(0.2)
    assert sched.lr_at(100) == pytest.approx(0.2)  # held after the end


def test_default_power_is_two_and_no_warmup_starts_at_peak():
    sched = WarmupPolySchedule(peak_lr=1.0, total_steps=4)
    assert [sched.lr_at(s) for s in range(5)] == pytest.approx([1.0, 0.5625, 0.25, 0.0625, 0.0])


def test_custom_power():
    sched = WarmupPolySchedule(peak_lr=1.0, total_steps=4, power=1.0)
    assert [sched.lr_at(s) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


@pytest.mark.parametrize(("warmup", "total", "end"), [(0, 7, 0.0), (5, 50, 0.01), (1, 2, 0.3), (99, 100, 0.0)])
def test_monotone_after_warmup_and_reaches_end_lr_at_total(warmup, total, end):
    peak = 3.0
    sched = WarmupPolySchedule(peak_lr=peak, total_steps=total, warmup_steps=warmup, end_lr=end)
    lrs = [sched.lr_at(s) for s in range(total + 3)]
    assert max(lrs) == pytest.approx(peak)
    assert all(b >= a for a, b in zip(lrs[:warmup], lrs[1:warmup]))  # rising warm-up
    after = lrs[warmup:]
    assert all(b <= a + 1e-15 for a, b in zip(after, after[1:]))
    assert lrs[total] == pytest.approx(end) and all(x >= end - 1e-12 for x in lrs)
    assert all(math.isfinite(x) for x in lrs)


def test_apply_writes_every_groups_lr_and_returns_it():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2, 2))
    opt = LARS([{"params": [a], "lr": 7.0}, {"params": [b], "lars_exclude": True}], lr=5.0)
    sched = WarmupPolySchedule(peak_lr=1.0, total_steps=10, warmup_steps=2)
    assert sched.apply(opt, 0) == pytest.approx(0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.5])
    assert sched.apply(opt, 6) == pytest.approx(0.25)  # (1 − 4/8)²
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25, 0.25])
    sgd = torch.optim.SGD([a, b], lr=0.3)
    sched.apply(sgd, 1)
    assert sgd.param_groups[0]["lr"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(total_steps=0),
        dict(total_steps=-5),
        dict(total_steps=10, warmup_steps=-1),
        dict(total_steps=10, warmup_steps=10),
        dict(total_steps=10, warmup_steps=11),
    ],
)
def test_invalid_schedule_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        WarmupPolySchedule(peak_lr=1.0, **kwargs)
