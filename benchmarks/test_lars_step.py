"""pytest-benchmark: one optimizer step on ResNet-50's parameters (CPU, fp32)."""

from __future__ import annotations

import pytest

from benchmarks.lars_step import KINDS, steppers


@pytest.fixture(scope="module")
def steps():
    return steppers()


@pytest.mark.parametrize("name", list(KINDS))
def test_optimizer_step_resnet50(benchmark, steps, name):
    benchmark.group = "optimizer step, ResNet-50 parameters"
    (step,) = steps[name]
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
