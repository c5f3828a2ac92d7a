"""Optimizers as registered components (workloads/optimizers.py): each builds from a run spec,
declares traits its optimizer really has, and logs hyperparameters under keys MLPerf names."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import torch
from mlperf_logging.mllog import constants

from larsbench.core.errors import ConfigError
from larsbench.core.spec import RunSpec
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import OPTIMIZERS, build_optimizer, get_optimizer, optimizer_names

NAMES = optimizer_names()
# Logged although no MLPerf ruleset names it: LARS's trust coefficient η has no MLPerf key.
OWN_KEYS = {"lars_opt_trust_coefficient"}


def mlperf_names() -> set[str]:
    """Every key MLPerf's logging constants or ruleset 4.0.0's rules name."""
    names = {v for v in vars(constants).values() if isinstance(v, str)}
    rules = resources.files("mlperf_logging.compliance_checker") / "training_4.0.0"
    for rule in rules.iterdir():
        if rule.name.endswith(".yaml"):
            names |= set(re.findall(r"NAME:\s*(\w+)", rule.read_text()))
    return names


def stepped(name: str):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4)
    spec = RunSpec(optimizer=name, lr=0.1, global_batch_size=32)
    optimizer, peak = build_optimizer(spec, model)
    model(torch.randn(4, 3, 8, 8)).logsumexp(1).mean().backward()
    optimizer.step()
    return spec, optimizer, peak


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_its_own_name(name):
    assert OPTIMIZERS[name].name == name and get_optimizer(name) is OPTIMIZERS[name]


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_the_spec_with_every_hyperparameter_in_its_groups(name):
    spec, optimizer, peak = stepped(name)
    assert peak == 0.1
    decay, excluded = optimizer.param_groups
    assert decay["lr"] == excluded["lr"] == 0.1
    assert (decay["weight_decay"], excluded["weight_decay"]) == (spec.weight_decay, 0.0)
    # Horovod rebuilds the optimizer from its groups alone
    rebuilt = type(optimizer)(optimizer.param_groups)
    assert [{k: v for k, v in g.items() if k != "params"} for g in rebuilt.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
    ]


@pytest.mark.parametrize("name", NAMES)
def test_traits_are_what_the_optimizer_does(name):
    component = get_optimizer(name)
    _, optimizer, _ = stepped(name)
    # telemetry: the step kept one entry of per-layer statistics per adapted group
    assert hasattr(optimizer, "last_stats") == component.telemetry
    if component.telemetry:
        assert len(optimizer.last_stats) == 1 and len(optimizer.last_stats[0].params) == 3  # tiny_cnn's weights
    # a layer-wise optimizer that trains under sharding takes the layout of the shards
    if component.layerwise and component.shards:
        assert callable(getattr(optimizer, "use_shards", None))


@pytest.mark.parametrize("name", NAMES)
def test_mlperf_keys_are_keys_mlperf_names(name):
    spec, _, peak = stepped(name)
    logged = get_optimizer(name).mlperf_keys(spec, peak, 100, 10)
    assert logged and set(logged) - OWN_KEYS <= mlperf_names(), set(logged) - OWN_KEYS - mlperf_names()
    assert all(value is not None for value in logged.values())


def test_an_unknown_optimizer_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=f"unknown optimizer 'adam'; choose one of {', '.join(NAMES)}"):
        get_optimizer("adam")
