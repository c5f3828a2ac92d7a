"""GPU decoding for ImageFolder JPEGs: the run setting ``data_loader: gpu``.

A CPU decode pipeline (PIL in the DataLoader workers) tops out far below what one modern GPU
trains on at 16 cores. Here the workers only read each file's bytes
(``torchvision.io.read_file``), its size from the JPEG header, and draw its crop and flip;
the main process decodes a whole micro-batch in one batched nvjpeg call
(``torchvision.io.decode_jpeg(list_of_tensors, device="cuda")``), then crops, resizes, flips
and normalises it on the GPU.

The same as the CPU path (``workloads.data``; both build on ``workloads.loaders``):

- order: this rank's ``DistributedSampler`` shard, reseeded per epoch, and
  ``set_epoch(epoch, skip=k)`` continues an epoch at micro-batch ``k``;
- crops and flips: drawn on the CPU by torchvision's own ``RandomResizedCrop.get_params`` and
  flip draw from a generator seeded with ``seed_mix(seed, epoch, index)``, exactly as the CPU
  path seeds its transforms, so a sample gets the same crop box and flip on both paths,
  whatever the worker count and across a resume;
- validation: the shorter side resized to ``image_size / 0.875``, then a centre crop;
- shapes and dtypes: float32 NCHW batches normalised with ImageNet's mean and std, int64
  labels; each val image on exactly one rank.

What differs, so pixels are close but not bit-identical:

- the decoder: nvjpeg instead of libjpeg through PIL (IDCT and chroma upsampling differ by a
  few levels per pixel);
- the resize: antialiased bilinear interpolation on float pixels
  (``torchvision.transforms.v2.functional``) instead of PIL's on 8-bit pixels, which rounds
  to integers before the normalisation;
- only JPEG files can be decoded: any other image in the tree fails, naming the file;
- batches (labels too) come out on the GPU, already there for the model;
- the decode and the crops are GPU work queued on the training stream: a run's
  ``data_wait_fraction`` holds the host's share (reading, launching, whatever nvjpeg does on
  the host), and the GPU's share lands in the step time.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec (they still work, with
a warning); ``decode`` is the one call to replace when they go.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from PIL import Image

from larsbench.core.spec import RunSpec
from larsbench.workloads.loaders import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD, EpochLoader, RankData, epoch_loaders, seed_mix

Decode = Callable[[list[torch.Tensor]], list[torch.Tensor]]
Box = tuple[int, int, int, int]  # top, left, height, width
# torchvision's RandomResizedCrop and RandomHorizontalFlip defaults, as the CPU path uses them.
CROP_SCALE, CROP_RATIOS, FLIP_P = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), 0.5


def gpu_imagefolder(
    spec: RunSpec, root: Path, rank: int, world_size: int, device: torch.device, decode: Decode | None = None
) -> RankData:
    """The ImageFolder tree at ``root`` for one rank, decoded on ``device``. ``decode`` turns
    a list of encoded files into a list of uint8 CHW RGB images on ``device``; by default
    ``decode_jpeg`` on that device (nvjpeg on CUDA; on the CPU, which tests use, libjpeg)."""
    from torchvision import datasets

    train_files = datasets.ImageFolder(root / "train").samples  # the CPU path's index → file map
    val_files = datasets.ImageFolder(root / "val").samples
    train, indices, val = epoch_loaders(
        spec, TrainFiles(train_files, spec.seed), ValFiles(val_files), rank, world_size,
        pin_memory=False, collate=collate,
    )  # fmt: skip
    decoder = BatchDecoder(spec.image_size, device, decode)
    return RankData(
        train=EpochLoader(Decoded(train, decoder.train), indices, spec.micro_batch_size),
        val=Decoded(val, decoder.val),
        train_samples=len(train_files),
        input_shape=(3, spec.image_size, spec.image_size),
        val_samples=len(val_files),
    )


# -- in the DataLoader workers: bytes, sizes, crop parameters --------------------------------


def train_crop(seed: int, height: int, width: int) -> tuple[Box, bool]:
    """The crop box and flip the CPU path draws for an image of this size under ``seed``: the
    same calls on the same freshly seeded generator (``RandomResizedCrop.get_params``, then
    ``RandomHorizontalFlip``'s ``torch.rand(1) < p``)."""
    from torchvision.transforms import RandomResizedCrop

    # get_params reads only the image's shape: a meta tensor holds no pixels
    shape = torch.empty((3, height, width), device="meta")
    with torch.random.fork_rng(devices=[]):  # leaves the caller's generator as it was
        torch.manual_seed(seed)
        box = RandomResizedCrop.get_params(shape, list(CROP_SCALE), list(CROP_RATIOS))
        flip = bool(torch.rand(1) < FLIP_P)
    return box, flip


def read_jpeg(path: str) -> tuple[torch.Tensor, int, int]:
    """A file's bytes as a uint8 tensor and its height and width from the header (no decode)."""
    from torchvision.io import read_file

    # read_file maps the file into memory; a worker cannot pass such a storage to the main
    # process (its descriptor is already closed), an ordinary copy it can
    data = read_file(path).clone()
    with Image.open(io.BytesIO(data.numpy())) as image:
        if image.format != "JPEG":
            raise ValueError(
                f"{path} is {image.format or 'not an image'}, and data_loader gpu decodes JPEG files only; "
                "convert it to JPEG or use data_loader cpu"
            )
        width, height = image.size
    return data, height, width


class TrainFiles(torch.utils.data.Dataset):
    """Train samples as (bytes, label, crop box, flip), indexed by ``(epoch, index)``."""

    def __init__(self, samples: list[tuple[str, int]], seed: int):
        self.samples, self.seed = samples, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, tagged: tuple[int, int]) -> tuple[torch.Tensor, int, Box, bool]:
        epoch, index = tagged
        path, label = self.samples[index]
        data, height, width = read_jpeg(path)
        box, flip = train_crop(seed_mix(self.seed, epoch, index), height, width)
        return data, label, box, flip


class ValFiles(torch.utils.data.Dataset):
    """Val samples as (bytes, label)."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return read_jpeg(path)[0], label


def collate(items: list[tuple]) -> tuple:
    """Files stay a list (their lengths differ); labels, boxes and flips become tensors."""
    data, labels, *rest = zip(*items)
    return (list(data), torch.tensor(labels), *(torch.tensor(values) for values in rest))


# -- in the main process: decode and transform on the device ----------------------------------


class Decoded:
    """Iterates a DataLoader of encoded batches, finishing each with ``finish``."""

    def __init__(self, loader: torch.utils.data.DataLoader, finish: Callable[..., tuple[torch.Tensor, torch.Tensor]]):
        self.loader, self.finish = loader, finish

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.finish(*batch)


class BatchDecoder:
    """One batched decode call per micro-batch, then per-image crops and one normalisation."""

    def __init__(self, image_size: int, device: torch.device, decode: Decode | None = None):
        from torchvision.io import ImageReadMode, decode_jpeg

        self.size, self.device = image_size, device
        self.resize_to = round(image_size / CROP_RATIO)
        self.decode = decode or (lambda files: decode_jpeg(files, mode=ImageReadMode.RGB, device=device))
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def train(
        self, files: list[torch.Tensor], labels: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2.functional import resize

        crops = []
        # boxes and flips are CPU tensors: reading them costs no device synchronisation
        for image, (top, left, height, width), flip in zip(self.decode(files), boxes.tolist(), flips.tolist()):
            # the box first: only its pixels are converted to float
            box = image[:, top : top + height, left : left + width].float()
            crop = resize(box, [self.size, self.size], antialias=True)
            crops.append(crop.flip(-1) if flip else crop)
        return self._normalised(crops), self._labels(labels)

    def val(self, files: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2.functional import center_crop, resize

        crops = [
            center_crop(resize(image.float(), [self.resize_to], antialias=True), [self.size, self.size])
            for image in self.decode(files)
        ]
        return self._normalised(crops), self._labels(labels)

    def _normalised(self, crops: Iterable[torch.Tensor]) -> torch.Tensor:
        # pixels stay in 0..255 through the resize: the mean and std are scaled to match
        return torch.stack(list(crops)).sub_(self.mean).div_(self.std)

    def _labels(self, labels: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return labels
        # from pinned memory: the copy does not make the host wait for the GPU
        return labels.pin_memory().to(self.device, non_blocking=True)

