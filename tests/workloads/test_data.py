"""The generated JPEG set (workloads/generated.py) and per-rank data (workloads/data.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from larsbench.workloads.data import (
    CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SyntheticBatches,
    build_rank_data,
    prepare,
)
from larsbench.workloads.generated import generate_imagefolder

from .conftest import GEN_CLASSES, GEN_IMAGE_SIZE, GEN_TRAIN_PER_CLASS, GEN_VAL_PER_CLASS

CPU = torch.device("cpu")
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _jpegs(root: Path, split: str) -> list[Path]:
    """ImageFolder order: class folders sorted, files sorted within each."""
    return [f for d in sorted((root / split).iterdir()) for f in sorted(d.glob("*.jpg"))]


# --------------------------------------------------------------------------- generate_imagefolder


def test_generate_writes_expected_jpeg_counts_per_class_and_split(tmp_path):
    root = generate_imagefolder(
        tmp_path / "g", num_classes=3, train_per_class=4, val_per_class=2, image_size=20, seed=1
    )
    assert root == tmp_path / "g"
    for split, per_class in (("train", 4), ("val", 2)):
        class_dirs = sorted(p for p in (root / split).iterdir())
        assert len(class_dirs) == 3 and all(d.is_dir() for d in class_dirs)
        for d in class_dirs:
            files = sorted(d.iterdir())
            assert len(files) == per_class
            for f in files:
                assert f.suffix == ".jpg"
                with Image.open(f) as image:
                    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (20, 20))
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["train", "val"]
    # nothing left behind next to the tree (the staging folder was renamed into place)
    assert [p.name for p in tmp_path.iterdir()] == ["g"]


def test_generate_is_idempotent(tmp_path):
    kwargs = dict(num_classes=2, train_per_class=3, val_per_class=2, image_size=16, seed=0)
    root = generate_imagefolder(tmp_path / "g", **kwargs)
    before = _files(root)
    assert len([k for k in before if k.endswith(".jpg")]) == 10
    assert generate_imagefolder(tmp_path / "g", **kwargs) == root
    assert _files(root) == before  # same files, same inodes, same mtimes: nothing rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["g"]


def test_generate_is_seeded(tmp_path):
    kwargs = dict(num_classes=2, train_per_class=2, val_per_class=1, image_size=16)
    a = generate_imagefolder(tmp_path / "a", seed=3, **kwargs)
    b = generate_imagefolder(tmp_path / "b", seed=3, **kwargs)
    c = generate_imagefolder(tmp_path / "c", seed=4, **kwargs)
    pa, pb, pc = _jpegs(a, "train"), _jpegs(b, "train"), _jpegs(c, "train")
    assert [p.read_bytes() for p in pa] == [p.read_bytes() for p in pb]
    assert [p.read_bytes() for p in pa] != [p.read_bytes() for p in pc]


def test_generate_refuses_a_non_empty_foreign_directory(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_imagefolder(root, num_classes=2, train_per_class=1, val_per_class=1, image_size=16)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert (root / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left behind


def test_generate_refuses_a_set_generated_with_other_parameters(tmp_path):
    kwargs = dict(num_classes=2, train_per_class=1, val_per_class=1, image_size=16)
    root = generate_imagefolder(tmp_path / "g", **kwargs)
    before = _files(root)
    with pytest.raises(FileExistsError):
        generate_imagefolder(root, **{**kwargs, "train_per_class": 2})
    assert _files(root) == before


def test_generate_accepts_an_existing_empty_directory(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    generate_imagefolder(root, num_classes=2, train_per_class=1, val_per_class=1, image_size=16)
    assert len(_jpegs(root, "train")) == 2 and len(_jpegs(root, "val")) == 2


def test_generated_data_is_learnable_by_a_nearest_centroid_on_mean_colour(tmp_path):
    classes = 4
    root = generate_imagefolder(
        tmp_path / "g", num_classes=classes, train_per_class=40, val_per_class=20, image_size=32, seed=11
    )

    def features(split):
        x, y = [], []
        for label, d in enumerate(sorted((root / split).iterdir())):
            for f in sorted(d.glob("*.jpg")):
                with Image.open(f) as image:
                    x.append(np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)))
                y.append(label)
        return np.array(x), np.array(y)

    x_train, y_train = features("train")
    x_val, y_val = features("val")
    centroids = np.stack([x_train[y_train == c].mean(axis=0) for c in range(classes)])
    predicted = ((x_val[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    accuracy = (predicted == y_val).mean()
    assert accuracy >= 0.5, f"val accuracy {accuracy:.2f}; chance is {1 / classes:.2f}"


# --------------------------------------------------------------------------- build_rank_data: imagefolder


@pytest.fixture
def folder_spec(generated_root, make_spec):
    return make_spec(
        dataset="imagefolder", data_dir=str(generated_root), num_classes=GEN_CLASSES, micro_batch_size=4, seed=5
    )


def test_imagefolder_batches_have_the_right_shape_dtype_and_normalisation(folder_spec):
    data = build_rank_data(folder_spec, 0, 1, CPU)
    n_train = GEN_CLASSES * GEN_TRAIN_PER_CLASS
    assert data.train_samples == n_train
    assert len(data.train) == n_train // 4 and data.steps_per_epoch(2) == n_train // 4 // 2
    data.train.set_epoch(0)
    batches = list(data.train)
    assert len(batches) == len(data.train)
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (4,) and y.dtype == torch.int64
        assert ((0 <= y) & (y < GEN_CLASSES)).all()
        pixels = x * STD + MEAN  # undo the normalisation: back in [0, 1]
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.cat([x for x, _ in batches]).min() < -0.5  # really normalised, not raw [0, 1]


def test_imagefolder_val_is_resize_then_centre_crop_then_normalise(folder_spec, generated_root):
    data = build_rank_data(folder_spec, 0, 1, CPU)
    x, y = next(iter(data.val))
    files = _jpegs(generated_root, "val")
    resized = round(32 / CROP_RATIO)  # 37: the 256 → 224 ratio
    assert GEN_IMAGE_SIZE != resized
    for i in range(len(y)):
        with Image.open(files[i]) as image:
            small = image.convert("RGB").resize((resized, resized), Image.BILINEAR)
        offset = round((resized - 32) / 2)
        crop = np.asarray(small.crop((offset, offset, offset + 32, offset + 32)), dtype=np.float32) / 255
        expected = (torch.from_numpy(crop).permute(2, 0, 1) - MEAN) / STD
        torch.testing.assert_close(x[i], expected, rtol=0, atol=1e-5)
        assert int(y[i]) == 0  # the first val images belong to the first class


def test_imagefolder_val_covers_every_image_exactly_once_across_two_ranks(folder_spec):
    n_val = GEN_CLASSES * GEN_VAL_PER_CLASS
    vals = [build_rank_data(folder_spec, rank, 2, CPU).val for rank in (0, 1)]
    indices = [list(v.dataset.indices) for v in vals]
    assert not set(indices[0]) & set(indices[1])
    assert sorted(indices[0] + indices[1]) == list(range(n_val))
    assert sorted(len(i) for i in indices) == [n_val // 2, n_val - n_val // 2]
    # and what the loaders yield is every val image once: 5 labels of each class
    labels = torch.cat([y for v in vals for _, y in v])
    assert len(labels) == n_val
    assert torch.bincount(labels, minlength=GEN_CLASSES).tolist() == [GEN_VAL_PER_CLASS] * GEN_CLASSES


def test_imagefolder_train_order_changes_per_epoch_and_ranks_get_disjoint_shards(folder_spec):
    ranks = [build_rank_data(folder_spec, rank, 2, CPU) for rank in (0, 1)]

    def order(data, epoch):
        data.train.set_epoch(epoch)
        return list(data.train.sampler)

    n_train = GEN_CLASSES * GEN_TRAIN_PER_CLASS
    for epoch in (0, 1):
        shard0, shard1 = order(ranks[0], epoch), order(ranks[1], epoch)
        assert len(shard0) == len(shard1) == n_train // 2
        assert not set(shard0) & set(shard1)
        assert sorted(shard0 + shard1) == list(range(n_train))
    assert order(ranks[0], 0) != order(ranks[0], 1)
    assert order(ranks[0], 0) == order(ranks[0], 0)  # reseeding is deterministic
    # the loader follows the sampler: its labels are the sampled images' labels, in order
    data = ranks[1]
    sampled = order(data, 1)
    targets = data.train.loader.dataset.dataset.targets  # ImageFolder inside the seeded wrapper
    labels = torch.cat([y for _, y in data.train]).tolist()
    assert labels == [targets[i] for i in sampled][: len(labels)]


def test_dataset_without_data_dir_is_refused(make_spec):
    spec = make_spec(dataset="generated", num_classes=2, train_images_per_class=4, micro_batch_size=4)
    with pytest.raises(ValueError):
        build_rank_data(spec, 0, 1, CPU)


# --------------------------------------------------------------------------- SyntheticBatches


@pytest.fixture
def synthetic_spec(make_spec):
    return make_spec(
        dataset="synthetic", synthetic_samples=64, micro_batch_size=8, image_size=8, num_classes=5, seed=3
    )


def _batches(source, epoch=0):
    source.set_epoch(epoch)
    return list(source)


def test_synthetic_batches_are_deterministic_per_seed_and_rank(synthetic_spec, make_spec):
    a = _batches(SyntheticBatches(synthetic_spec, 0, 2, CPU))
    b = _batches(SyntheticBatches(synthetic_spec, 0, 2, CPU))
    assert len(a) == 4  # 64 samples / 2 ranks / micro-batch 8
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape == (8, 3, 8, 8) and xa.dtype == torch.float32 and ya.dtype == torch.int64
        assert ((0 <= ya) & (ya < 5)).all()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_seed = _batches(SyntheticBatches(make_spec(**{**synthetic_spec.to_dict(), "seed": 4}), 0, 2, CPU))
    assert not torch.equal(a[0][0], other_seed[0][0])


def test_synthetic_batches_differ_between_ranks(synthetic_spec):
    r0 = SyntheticBatches(synthetic_spec, 0, 2, CPU)
    r1 = SyntheticBatches(synthetic_spec, 1, 2, CPU)
    assert r0.images.shape == r1.images.shape == (32, 3, 8, 8)
    assert not torch.equal(r0.images, r1.images)
    assert not torch.equal(_batches(r0)[0][0], _batches(r1)[0][0])


def test_synthetic_batches_reorder_across_epochs_over_the_same_samples(synthetic_spec):
    source = SyntheticBatches(synthetic_spec, 1, 2, CPU)
    e0, e1, e0_again = _batches(source, 0), _batches(source, 1), _batches(source, 0)
    x0, x1 = torch.cat([x for x, _ in e0]), torch.cat([x for x, _ in e1])
    assert not torch.equal(x0, x1)
    assert torch.equal(x0, torch.cat([x for x, _ in e0_again]))

    def rows(x, y):  # each sample as a hashable (image bytes, label)
        return sorted((xi.numpy().tobytes(), int(yi)) for xi, yi in zip(x, y))

    y0, y1 = torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1])
    assert rows(x0, y0) == rows(x1, y1)  # a permutation of the same shard, labels attached


# --------------------------------------------------------------------------- prepare


def test_prepare_leaves_non_generated_specs_alone(synthetic_spec, folder_spec):
    assert prepare(synthetic_spec) is synthetic_spec
    assert prepare(folder_spec) is folder_spec


def test_prepare_generated_creates_the_explicit_data_dir(tmp_path, make_spec):
    root = tmp_path / "nested" / "gen"
    spec = make_spec(
        dataset="generated", data_dir=str(root), num_classes=2, train_images_per_class=4,
        val_images_per_class=3, micro_batch_size=4,
    )  # fmt: skip
    prepared = prepare(spec)
    assert Path(prepared.data_dir) == root
    assert len(_jpegs(root, "train")) == 8 and len(_jpegs(root, "val")) == 6
    with Image.open(_jpegs(root, "val")[0]) as image:
        assert image.size == (37, 37)  # stored at 32 / 0.875, the val transform's resize size
    before = _files(root)
    assert prepare(spec) == prepared and _files(root) == before
    data = build_rank_data(prepared, 0, 1, CPU)
    assert data.train_samples == 8
    x, y = next(iter(data.val))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 0, 1]


def test_prepare_generated_uses_the_cache_dir_from_the_environment(tmp_path, make_spec, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LARSBENCH_DATA_CACHE", str(cache))
    spec = make_spec(
        dataset="generated", num_classes=2, train_images_per_class=4, val_images_per_class=1, micro_batch_size=4
    )
    prepared = prepare(spec)
    root = Path(prepared.data_dir)
    assert root.parent == cache and root.is_dir()
    assert len(_jpegs(root, "train")) == 8 and len(_jpegs(root, "val")) == 2
    assert os.listdir(cache) == [root.name]
    before = _files(root)
    assert prepare(spec).data_dir == prepared.data_dir and _files(root) == before
    # another configuration gets its own folder in the cache
    other = prepare(make_spec(**{**spec.to_dict(), "val_images_per_class": 2}))
    assert Path(other.data_dir).parent == cache and other.data_dir != prepared.data_dir
    assert len(_jpegs(Path(other.data_dir), "val")) == 4


def test_a_resumed_epoch_yields_exactly_the_rest_of_the_uninterrupted_one(make_spec, generated_root):
    """Augmentation depends on (seed, epoch, index) only: skipping k micro-batches, or using
    another number of loader workers, reproduces the very same crops."""

    def batches(workers, skip):
        spec = make_spec(dataset="imagefolder", data_dir=str(generated_root), image_size=24, micro_batch_size=3, data_workers=workers)
        data = build_rank_data(spec, 0, 1, CPU)
        data.train.set_epoch(2, skip=skip)
        return [(x.clone(), y.clone()) for x, y in data.train]

    whole = batches(0, 0)
    assert len(whole) >= 3
    for (xa, ya), (xb, yb) in zip(whole[2:], batches(0, 2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(whole, batches(2, 0), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # and the crops really are random: another epoch differs
    spec = make_spec(dataset="imagefolder", data_dir=str(generated_root), image_size=24, micro_batch_size=3, data_workers=0)
    data = build_rank_data(spec, 0, 1, CPU)
    data.train.set_epoch(3)
    assert not torch.equal(next(iter(data.train))[0], whole[0][0])


def test_synthetic_skip_continues_the_epoch(make_spec):
    data = build_rank_data(make_spec(dataset="synthetic", synthetic_samples=24, micro_batch_size=4), 0, 1, CPU)
    data.train.set_epoch(1)
    whole = [y.tolist() for _, y in data.train]
    data.train.set_epoch(1, skip=4)
    assert [y.tolist() for _, y in data.train] == whole[4:]
