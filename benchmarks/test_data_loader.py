"""pytest-benchmark: one epoch of the ImageFolder train loader (``workloads.data``) over a
generated set: file listing, JPEG decode, random-resized crop, flip, normalise, collate."""

from __future__ import annotations

import pytest
import torch

from larsbench.suite.config import build_spec
from larsbench.workloads.data import CROP_RATIO, build_rank_data
from larsbench.workloads.generated import generate_imagefolder

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, IMAGE_SIZE, MICRO_BATCH = 10, 32, 2, 32, 16


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return generate_imagefolder(
        tmp_path_factory.mktemp("bench-data") / "set", num_classes=CLASSES, train_per_class=TRAIN_PER_CLASS,
        val_per_class=VAL_PER_CLASS, image_size=round(IMAGE_SIZE / CROP_RATIO), seed=0,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [0, 1])
def test_imagefolder_train_epoch(benchmark, image_root, workers):
    spec = build_spec([("bench", {
        "dataset": "imagefolder", "data_dir": str(image_root), "image_size": IMAGE_SIZE,
        "num_classes": CLASSES, "micro_batch_size": MICRO_BATCH, "data_workers": workers, "device": "cpu",
    })])  # fmt: skip
    data = build_rank_data(spec, 0, 1, torch.device("cpu"))
    epoch = iter(range(10**6))

    def one_epoch() -> int:
        data.train.set_epoch(next(epoch))
        return sum(len(labels) for _, labels in data.train)

    benchmark.group = f"ImageFolder train epoch, {CLASSES * TRAIN_PER_CLASS} images of {IMAGE_SIZE} px"
    benchmark.extra_info["images"] = CLASSES * TRAIN_PER_CLASS
    # warm-up starts the persistent worker (workers=1) outside the timed rounds
    images = benchmark.pedantic(one_epoch, rounds=5, warmup_rounds=1)
    assert images == CLASSES * TRAIN_PER_CLASS
