"""pytest-benchmark: one optimizer step on ResNet-50's parameters (CPU, fp32)."""

from __future__ import annotations

import pytest

from benchmarks.lars_step import steppers


@pytest.fixture(scope="module")
def steps():
    return steppers()


@pytest.mark.parametrize("name", ["sgd_foreach", "lars", "lars_loop", "lars_loop_in_place"])
def test_optimizer_step_resnet50(benchmark, steps, name):
    benchmark.group = "optimizer step, ResNet-50 parameters"
    benchmark.pedantic(steps[name], rounds=20, warmup_rounds=2)
