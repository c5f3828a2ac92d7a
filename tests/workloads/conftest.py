"""Shared fixtures for the workload tests: a small generated ImageFolder tree and RunSpecs."""

from __future__ import annotations

import pytest

from larsbench.suite.config import build_spec
from larsbench.workloads.generated import generate_imagefolder

GEN_CLASSES = 3
GEN_TRAIN_PER_CLASS = 6
GEN_VAL_PER_CLASS = 5  # 15 val images: an odd count, so ranks 0/1 of 2 get 8 and 7
GEN_IMAGE_SIZE = 40  # larger than the 32 px input: the val Resize really resizes


@pytest.fixture(scope="session")
def generated_root(tmp_path_factory):
    """Written once per session; tests must only read it."""
    root = tmp_path_factory.mktemp("shared-generated") / "set"
    return generate_imagefolder(
        root,
        num_classes=GEN_CLASSES,
        train_per_class=GEN_TRAIN_PER_CLASS,
        val_per_class=GEN_VAL_PER_CLASS,
        image_size=GEN_IMAGE_SIZE,
        seed=7,
    )


@pytest.fixture
def make_spec():
    """``make_spec(**fields)``: a validated RunSpec (through ``build_spec``) for tiny CPU runs."""

    def make(**fields):
        base = {"model": "tiny_cnn", "device": "cpu", "data_workers": 0, "image_size": 32}
        return build_spec([("t", {**base, **fields})])

    return make
