"""The GPU data path (workloads/gpu_decode.py) against the CPU path, on the CPU.

Everything but nvjpeg runs here: the workers' byte reading and crop draws, batching, order,
skip, the val split and the per-image transforms, with ``decode_jpeg`` on the CPU in place of
nvjpeg. Both paths then decode with libjpeg, so their pixels differ only by rounding (the CPU
path rounds to 8 bits after its resize): a crop box or flip that differed would show as a
difference two orders of magnitude larger. The nvjpeg decode itself is checked where CUDA is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from larsbench.core.errors import ConfigError
from larsbench.workloads.data import build_rank_data
from larsbench.workloads.loaders import seed_mix
from larsbench.workloads.gpu_decode import gpu_imagefolder, train_crop

from .conftest import GEN_CLASSES

# torchvision >= 0.29 warns that its decoders move to TorchCodec; the GPU machine's 0.26 does not
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

CPU = torch.device("cpu")
LEVEL = 1 / 255 / 0.225  # one 8-bit level after the normalisation, at the smallest std


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory) -> Path:
    """JPEGs of different sizes and aspect ratios, one of them greyscale (decoded to RGB)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(3)
    sizes = [(48, 40), (33, 61), (80, 36), (40, 40), (57, 45), (36, 90)]
    for split, per_class in (("train", 5), ("val", 3)):
        for cls in range(2):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[(i + cls) % len(sizes)]
                # smooth content (upsampled noise), like a photograph rather than pure noise
                small = rng.uniform(0, 255, (h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
                image = Image.fromarray(small).resize((w, h), Image.BICUBIC)
                if split == "train" and i == 1:
                    image = image.convert("L")
                image.save(folder / f"{i}.jpg", quality=92)
    return root


def _spec(make_spec, root, **fields):
    return make_spec(**{"dataset": "imagefolder", "data_dir": str(root), "num_classes": 2, "micro_batch_size": 3, "seed": 4, **fields})


def _epoch(data, epoch, skip=0):
    data.train.set_epoch(epoch, skip=skip)
    return [(x.clone(), y.clone()) for x, y in data.train]


def test_train_crop_draws_what_the_cpu_transforms_draw(monkeypatch):
    # the CPU path's transforms, run under the same seed, with get_params recorded
    from torchvision import transforms

    drawn = []
    real = transforms.RandomResizedCrop.get_params
    monkeypatch.setattr(
        transforms.RandomResizedCrop, "get_params", staticmethod(lambda *a: drawn.append(real(*a)) or drawn[-1])
    )
    cpu = transforms.Compose([transforms.RandomResizedCrop(16), transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    image = Image.fromarray(np.arange(45 * 70 * 3, dtype=np.uint8).reshape(45, 70, 3) % 251)
    flips = set()
    for index in range(40):
        seed = seed_mix(9, 2, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = cpu(image)
        box, flip = train_crop(seed, 45, 70)
        assert box == drawn[-1]
        top, left, h, w = box
        plain = transforms.functional.pil_to_tensor(image.crop((left, top, left + w, top + h)).resize((16, 16), Image.BILINEAR))
        assert torch.equal(out, plain.flip(-1) if flip else plain)
        flips.add(flip)
    assert flips == {True, False}
    state = torch.get_rng_state()
    train_crop(1, 10, 10)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched


@pytest.mark.parametrize("root_name", ["generated_root", "mixed_root"])
def test_batches_match_the_cpu_path_in_order_crops_and_shapes(make_spec, request, root_name):
    root = request.getfixturevalue(root_name)
    spec = _spec(make_spec, root, image_size=24)
    cpu, gpu = build_rank_data(spec, 0, 1, CPU), gpu_imagefolder(spec, root, 0, 1, CPU)
    assert (len(gpu.train), gpu.train_samples) == (len(cpu.train), cpu.train_samples)
    for epoch in (0, 1):
        expected, got = _epoch(cpu, epoch), _epoch(gpu, epoch)
        assert len(got) == len(expected) >= 2
        for (xa, ya), (xb, yb) in zip(expected, got):
            assert xb.shape == xa.shape == (3, 3, 24, 24) and xb.dtype == xa.dtype == torch.float32
            assert yb.dtype == torch.int64 and torch.equal(ya, yb)
            assert (xa - xb).abs().max() < 2 * LEVEL  # rounding only: same boxes, same flips
    # the comparison has teeth: the same images under another epoch's crops differ far more
    assert (_epoch(cpu, 0)[0][0] - _epoch(gpu, 1)[0][0]).abs().mean() > 20 * LEVEL
    val_cpu, val_gpu = list(cpu.val), list(gpu.val)
    assert len(val_cpu) == len(val_gpu) == len(gpu.val)
    for (xa, ya), (xb, yb) in zip(val_cpu, val_gpu):
        assert xb.shape == xa.shape and torch.equal(ya, yb)
        assert (xa - xb).abs().max() < 2 * LEVEL


def test_a_skipped_or_multi_worker_epoch_yields_the_same_batches(make_spec, generated_root):
    def data(workers):
        spec = _spec(make_spec, generated_root, image_size=16, data_workers=workers, num_classes=GEN_CLASSES)
        return gpu_imagefolder(spec, generated_root, 0, 1, CPU)

    one = data(0)
    whole = _epoch(one, 3)
    for (xa, ya), (xb, yb) in zip(whole[2:], _epoch(one, 3, skip=2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(whole, _epoch(data(2), 3), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_each_micro_batch_is_one_decode_call_on_the_files_bytes(make_spec, mixed_root):
    from torchvision.io import ImageReadMode, decode_jpeg

    calls = []

    def decode(files):
        calls.append([bytes(f.numpy()) for f in files])
        return decode_jpeg(files, mode=ImageReadMode.RGB)

    spec = _spec(make_spec, mixed_root, image_size=16)
    data = gpu_imagefolder(spec, mixed_root, 1, 2, CPU, decode=decode)
    data.train.set_epoch(0)
    assert len(list(data.train)) == len(calls) == len(data.train)
    files = data.train.loader.loader.dataset.samples
    sampled = list(data.train.sampler)
    on_disk = [Path(files[i][0]).read_bytes() for i in sampled]
    assert [b for call in calls for b in call] == on_disk[: 3 * len(calls)]
    assert {len(call) for call in calls} == {3}


def test_val_covers_every_image_exactly_once_across_two_ranks(make_spec, mixed_root):
    spec = _spec(make_spec, mixed_root, image_size=16)
    labels = [y for rank in (0, 1) for _, y in gpu_imagefolder(spec, mixed_root, rank, 2, CPU).val]
    assert torch.bincount(torch.cat(labels)).tolist() == [3, 3]


def test_a_file_that_is_not_a_jpeg_fails_naming_it(make_spec, tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20), (i * 40, 10, 10)).save(tmp_path / split / cls / f"{i}.jpg")
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "b" / "odd.png")
    data = gpu_imagefolder(_spec(make_spec, tmp_path, image_size=16, micro_batch_size=7), tmp_path, 0, 1, CPU)
    data.train.set_epoch(0)
    with pytest.raises(ValueError, match=r"odd\.png is PNG, and data_loader gpu decodes JPEG files only"):
        list(data.train)


def test_build_rank_data_refuses_the_gpu_loader_without_cuda(make_spec, generated_root):
    spec = dataclasses.replace(_spec(make_spec, generated_root, num_classes=GEN_CLASSES), data_loader="gpu", device="auto")
    with pytest.raises(ConfigError) as info:
        build_rank_data(spec, 0, 1, CPU)
    assert info.value.key == "data_loader" and "set data_loader cpu" in info.value.message


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: decodes with nvjpeg (decode_jpeg on cuda) and crops on the GPU",
)
def test_nvjpeg_batches_are_close_to_the_cpu_path(make_spec, mixed_root):
    cuda = torch.device("cuda")
    spec = _spec(make_spec, mixed_root, image_size=24, data_workers=2)
    cpu = build_rank_data(spec, 0, 1, CPU)
    gpu = build_rank_data(dataclasses.replace(spec, data_loader="gpu", device="cuda"), 0, 1, cuda)
    for (xa, ya), (xb, yb) in zip(_epoch(cpu, 1), _epoch(gpu, 1), strict=True):
        assert xb.device.type == yb.device.type == "cuda"
        assert xb.shape == xa.shape and xb.dtype == torch.float32 and torch.equal(ya, yb.cpu())
        # nvjpeg's IDCT and upsampling differ from libjpeg's by a few levels, not by a crop
        assert (xa - xb.cpu()).abs().mean() < 4 * LEVEL
    for (xa, _), (xb, _) in zip(cpu.val, gpu.val, strict=True):
        assert (xa - xb.cpu()).abs().mean() < 4 * LEVEL
