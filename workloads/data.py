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
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from larsbench.core.errors import ConfigError
from larsbench.core.spec import RunSpec
from larsbench.workloads.generated import generate_imagefolder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize-then-crop ratio of the standard ImageNet recipe (256 → 224).
CROP_RATIO = 0.875
GENERATED_DATA_SEED = 0


class TrainBatches(Protocol):
    """Micro-batches of one epoch for this rank. ``set_epoch(e, skip=k)`` makes the next
    iteration start at micro-batch ``k`` of epoch ``e``, yielding exactly what an uninterrupted
    epoch would have yielded from there on (how a resumed run continues mid-epoch)."""

    def set_epoch(self, epoch: int, skip: int = 0) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclasses.dataclass
class RankData:
    train: TrainBatches
    val: Iterable[tuple[torch.Tensor, torch.Tensor]] | None
    train_samples: int  # whole train set, all ranks
    input_shape: tuple[int, ...] = (3, 32, 32)  # one image as the model sees it (channels, height, width)
    val_samples: int | None = None  # whole validation set, all ranks (None: no evaluation)

    def steps_per_epoch(self, accumulation_steps: int) -> int:
        return len(self.train) // accumulation_steps

    def close(self) -> None:
        """Stop the loaders' worker processes now, in order. Left to the cyclic garbage
        collector (the trainer that holds them sits in reference cycles), a loader's queues
        can be finalized before its iterator, which can then no longer tell its workers to
        stop: it waited the DataLoader's 5 s status-check interval for each before killing
        it, 10 s after every run that evaluated. What PyTorch Lightning does between stages."""
        for loader in (_data_loader(self.train), _data_loader(self.val)):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            if iterator is not None:
                loader._iterator = None


def _data_loader(batches: object) -> DataLoader | None:
    """The DataLoader inside this module's and ``gpu_decode``'s wrappers (each keeps it as ``loader``)."""
    while batches is not None and not isinstance(batches, DataLoader):
        batches = getattr(batches, "loader", None)
    return batches


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
        from larsbench.workloads.gpu_decode import gpu_imagefolder  # it builds on this module

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
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(len(self.labels), generator=generator).to(self.labels.device)
        for i in range(self.skip, len(self)):
            index = order[i * self.micro_batch : (i + 1) * self.micro_batch]
            yield self.images[index], self.labels[index]


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, index), stable across processes."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2))) & (2**63 - 1)
    return state


class _EpochIndices(torch.utils.data.Sampler):
    """This rank's shuffled indices for the current epoch, each tagged with the epoch, starting
    ``skip`` indices in. The tag lets the dataset seed each sample's augmentation from
    (seed, epoch, index) alone, so crops do not depend on worker count or on a resume."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler = sampler
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip

    def __iter__(self):
        return ((self.epoch, index) for index in itertools.islice(self.sampler, self.skip, None))


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
            torch.manual_seed(_mix(self.seed, epoch, index))
            return self.dataset[index]


class _EpochLoader:
    """A DataLoader over ``_EpochIndices``: reseeded, and skippable, per epoch."""

    def __init__(self, loader: Iterable, indices: _EpochIndices, micro_batch: int):
        self.loader, self.indices, self.micro_batch = loader, indices, micro_batch
        self.sampler = indices.sampler  # the DistributedSampler that orders and shards

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.indices.set_epoch(epoch, skip * self.micro_batch)

    def __len__(self) -> int:
        return len(self.sampler) // self.micro_batch

    def __iter__(self):
        return iter(self.loader)


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
        train=_EpochLoader(train, indices, spec.micro_batch_size), val=val, train_samples=len(train_set),
        input_shape=(3, spec.image_size, spec.image_size), val_samples=len(val_set),
    )


def epoch_loaders(
    spec: RunSpec, train_set, val_set, rank: int, world_size: int, *, pin_memory: bool, collate=None
) -> tuple[DataLoader, _EpochIndices, DataLoader]:
    """The DataLoaders both data paths share: ``train_set`` takes ``(epoch, index)`` from this
    rank's ``DistributedSampler`` shard (reseeded per epoch, skippable), ``val_set`` plain
    indices, each val image on exactly one rank."""
    indices = _EpochIndices(
        DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=spec.seed, drop_last=True)
    )
    common = dict(
        num_workers=spec.data_workers,
        pin_memory=pin_memory,
        persistent_workers=spec.data_workers > 0,
        collate_fn=collate,
    )
    train = DataLoader(train_set, batch_size=spec.micro_batch_size, sampler=indices, drop_last=True, **common)
    # Every val image exactly once across ranks (no sampler padding): the reduced counts are exact.
    val = DataLoader(
        Subset(val_set, range(rank, len(val_set), world_size)),
        batch_size=spec.micro_batch_size,
        shuffle=False,
        **common,
    )
    return train, indices, val
