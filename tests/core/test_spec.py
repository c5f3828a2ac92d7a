"""The run spec's field roles, and labels derived from them."""

from __future__ import annotations

import dataclasses
import itertools

from larsbench.core.spec import (
    BOOKKEEPING, DEFAULTS, MEASURE, MEASURE_FIELDS, RESUMABLE_FIELDS, ROLES, RUN_FIELDS, SAMPLE, RunSpec,
    field_help, measured_settings, run_label,
)  # fmt: skip


def test_every_field_declares_one_role():
    assert set(ROLES) == set(RUN_FIELDS)
    assert set(ROLES.values()) == {MEASURE, SAMPLE, BOOKKEEPING}
    assert {n for n, r in ROLES.items() if r == SAMPLE} == {"seed", "repeat", "hold_seed"}
    assert {"precision", "channels_last", "compile", "data_workers", "backend_config"} <= set(MEASURE_FIELDS)
    assert {"checkpoint_every_steps", "compute_probe_steps", "collective_timeout_sec", "data_dir"} <= RESUMABLE_FIELDS
    # Settings that change the work inside the measured window are measure settings.
    assert {"log_every_steps", "telemetry_every_steps"} <= set(MEASURE_FIELDS)


def other_value(name: str):
    """A valid value of ``name`` other than its default."""
    schema = field_help()[name]
    kinds = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    kind, default = kinds[0], DEFAULTS[name]
    if name == "lr":
        return 3.0  # unset, LARS's LR is 2.0 once resolved: that is not another value
    if "enum" in kind:
        return next(v for v in kind["enum"] if v != default)
    if kind.get("type") == "boolean":
        return not default
    if kind.get("type") == "object":
        return {"bucket_cap_mb": 50}
    if kind.get("type") == "string":
        return "other"
    if kind.get("type") == "integer":
        return (default or 1) + 1
    return (default or 0.5) * 0.5 if name in ("momentum", "target_top1") else (default or 1.0) * 2


def test_two_different_settings_never_share_a_label():
    base = RunSpec(global_batch_size=32)
    variants = {"default": base}
    for name in MEASURE_FIELDS:
        if name in ("global_batch_size",):
            continue
        variants[name] = dataclasses.replace(base, **{name: other_value(name)})
    labels = {name: run_label(spec.to_dict()) for name, spec in variants.items()}
    for (a, la), (b, lb) in itertools.combinations(labels.items(), 2):
        assert la != lb, f"{a} and {b} both read {la}"
    for name in ("seed", "repeat", "checkpoint_every_steps", "data_dir"):  # not part of a setting
        assert run_label(dataclasses.replace(base, **{name: other_value(name)}).to_dict()) == labels["default"]


def test_records_without_a_newer_field_read_as_its_default():
    assert measured_settings({"model": "tiny_cnn"})["precision"] == "fp32"
    assert measured_settings({"model": "tiny_cnn", "optimizer": "sgd"})["lr"] == 0.1
