"""Training and evaluation data for one rank, in a seeded order that every backend shares.

- ``synthetic``: fixed random tensors held on the device (pure throughput: no I/O, no decode).
  Each rank holds its own shard of ``synthetic_samples``; no evaluation.
- ``imagefolder``: an ImageNet-layout tree with the standard train transforms
  (random-resized crop, flip) and val transforms (resize to size/0.875, centre crop),
  a ``DistributedSampler`` reseeded every epoch, and exact sharded evaluation.
- ``generated``: ``imagefolder`` over a learnable set that ``workloads.generated`` writes once
  (into ``data_dir``, or a cache folder) before the ranks start.

``data_loader: gpu`` swaps the ImageFolder decode and transforms for ``workloads.gpu_decode``
(file bytes from the workers, nvjpeg and the crops on the GPU), with the same order and crops.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from larsbench.core.errors import ConfigError
from larsbench.core.spec import RunSpec
from larsbench.workloads.generated import generate_imagefolder
from larsbench.workloads.gpu_decode import gpu_imagefolder
from larsbench.workloads.loaders import (
    CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochLoader,
    RankData,
    epoch_loaders,
    seed_mix,
)

GENERATED_DATA_SEED = 0


def prepare(spec: RunSpec) -> RunSpec:
    """Run once, before any rank starts: make sure the run's data exists on disk."""
    if spec.dataset != "generated":
        return spec
    native = round(spec.image_size / CROP_RATIO)
    root = Path(spec.data_dir).expanduser() if spec.data_dir else _cache_dir() / (
        f"generated-{spec.num_classes}c-{spec.train_images_per_class}x"
        f"{spec.val_images_per_class}-{native}px-s{GENERATED_DATA_SEED}"
    )
    generate_imagefolder(
        root,
        num_classes=spec.num_classes,
        train_per_class=spec.train_images_per_class,
        val_per_class=spec.val_images_per_class,
        image_size=native,
        seed=GENERATED_DATA_SEED,
    )
    return dataclasses.replace(spec, data_dir=str(root))


def _cache_dir() -> Path:
    base = os.environ.get("LARSBENCH_DATA_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    ) / "larsbench" / "datasets"
    return Path(base)


def build_rank_data(spec: RunSpec, rank: int, world_size: int, device: torch.device) -> RankData:
    if spec.dataset == "synthetic":
        train = SyntheticBatches(spec, rank, world_size, device)
        return RankData(train=train, val=None, train_samples=spec.synthetic_samples, input_shape=(3, spec.image_size, spec.image_size))
    if spec.data_dir is None:
        raise ValueError(f"dataset {spec.dataset!r} needs data_dir (prepare() sets it)")
    root = Path(spec.data_dir).expanduser()
    if spec.data_loader == "gpu":
        if device.type != "cuda":
            raise ConfigError(
                "data_loader", f"'gpu' decodes on a CUDA device and this rank runs on {device.type}; "
                "run where CUDA is visible, or set data_loader cpu",
            )
        return gpu_imagefolder(spec, root, rank, world_size, device)
    return _imagefolder(spec, root, rank, world_size, device)


class SyntheticBatches:
    """This rank's shard of fixed random images and labels, in a per-epoch seeded order."""

    def __init__(self, spec: RunSpec, rank: int, world_size: int, device: torch.device):
        shard = spec.synthetic_samples // world_size
        generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + rank)
        shape = (shard, 3, spec.image_size, spec.image_size)
        self.images = torch.randn(shape, generator=generator).to(device)
        self.labels = torch.randint(0, spec.num_classes, (shard,), generator=generator).to(device)
        self.micro_batch = spec.micro_batch_size
        self.seed = spec.seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return len(self.labels) // self.micro_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed_mix(self.seed, self.epoch))
        order = torch.randperm(len(self.labels), generator=generator).to(self.labels.device)
        for i in range(self.skip, len(self)):
            index = order[i * self.micro_batch : (i + 1) * self.micro_batch]
            yield self.images[index], self.labels[index]


class _SeededAugmentation(torch.utils.data.Dataset):
    """An ImageFolder whose random transforms draw from a generator seeded per sample."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: tuple[int, int]):
        epoch, index = tagged
        # fork_rng: the global generator (dropout's) is left exactly as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_mix(self.seed, epoch, index))
            return self.dataset[index]



def _imagefolder(spec: RunSpec, root: Path, rank: int, world_size: int, device: torch.device) -> RankData:
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = datasets.ImageFolder(
        root / "train",
        transforms.Compose(
            [
                transforms.RandomResizedCrop(spec.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        ),
    )
    val_set = datasets.ImageFolder(
        root / "val",
        transforms.Compose(
            [
                transforms.Resize(round(spec.image_size / CROP_RATIO)),
                transforms.CenterCrop(spec.image_size),
                transforms.ToTensor(),
                normalize,
            ]
        ),
    )
    train, indices, val = epoch_loaders(
        spec, _SeededAugmentation(train_set, spec.seed), val_set, rank, world_size, pin_memory=device.type == "cuda"
    )
    return RankData(
        train=EpochLoader(train, indices, spec.micro_batch_size), val=val, train_samples=len(train_set),
        input_shape=(3, spec.image_size, spec.image_size), val_samples=len(val_set),
    )
