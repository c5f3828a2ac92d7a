"""What every ImageFolder data path shares (the CPU decode in ``workloads.data`` and the GPU
decode in ``workloads.gpu_decode``): ImageNet's normalisation and crop ratio, the per-rank data a
trainer receives, per-sample seeds, and the epoch-reseeded, skippable DataLoaders."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from larsbench.core.spec import RunSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Resize-then-crop ratio of the standard ImageNet recipe (256 → 224).
CROP_RATIO = 0.875

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



def seed_mix(*values: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, index), stable across processes."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2))) & (2**63 - 1)
    return state



class EpochIndices(torch.utils.data.Sampler):
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



class EpochLoader:
    """A DataLoader over ``EpochIndices``: reseeded, and skippable, per epoch."""

    def __init__(self, loader: Iterable, indices: EpochIndices, micro_batch: int):
        self.loader, self.indices, self.micro_batch = loader, indices, micro_batch
        self.sampler = indices.sampler  # the DistributedSampler that orders and shards

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.indices.set_epoch(epoch, skip * self.micro_batch)

    def __len__(self) -> int:
        return len(self.sampler) // self.micro_batch

    def __iter__(self):
        return iter(self.loader)



def epoch_loaders(
    spec: RunSpec, train_set, val_set, rank: int, world_size: int, *, pin_memory: bool, collate=None
) -> tuple[DataLoader, EpochIndices, DataLoader]:
    """The DataLoaders both data paths share: ``train_set`` takes ``(epoch, index)`` from this
    rank's ``DistributedSampler`` shard (reseeded per epoch, skippable), ``val_set`` plain
    indices, each val image on exactly one rank."""
    indices = EpochIndices(
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
