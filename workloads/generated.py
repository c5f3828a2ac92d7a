"""A learnable N-class image set written as JPEG files in ImageFolder layout.

It exists so that CPU runs go through exactly the I/O path of ImageNet (file listing, JPEG
decode, random-resized-crop, flip, normalise) without a download. Each image shows one large
shape whose hue identifies the class, over a random smooth background, with smaller distractor
shapes of random hue and pixel noise. Crops and horizontal flips keep the label, as on
ImageNet; crops that cut the shape away make some samples hard, so accuracy climbs over
epochs rather than jumping to 100%.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from larsbench.core.files import made_folders

MANIFEST = "larsbench-generated.json"
FORMAT_VERSION = 1


def generate_imagefolder(
    root: str | Path,
    *,
    num_classes: int,
    train_per_class: int,
    val_per_class: int,
    image_size: int,
    seed: int = 0,
) -> Path:
    """Write ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``; returns ``root``.

    Idempotent: a tree generated with the same parameters is reused. The tree is built in a
    temporary sibling folder and renamed into place, so an interrupted run never leaves a
    half-written data set that a later run would trust.
    """
    root = Path(root)
    params = {
        "format_version": FORMAT_VERSION,
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    if _manifest(root) == params:
        return root
    if root.is_symlink() and not root.exists():
        raise FileExistsError(f"{root} is a broken symbolic link; choose an empty or new directory")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a directory; choose an empty or new directory")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and holds something other than this generated set; "
            "choose an empty or new directory"
        )
    with made_folders(root.parent):
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            rng = np.random.default_rng(seed)
            for split, per_class in (("train", train_per_class), ("val", val_per_class)):
                for cls in range(num_classes):
                    folder = staging / split / f"class_{cls:03d}"
                    folder.mkdir(parents=True)
                    for i in range(per_class):
                        image = render(rng, cls, num_classes, image_size)
                        image.save(folder / f"{split}_{cls:03d}_{i:05d}.jpg", quality=90)
            (staging / MANIFEST).write_text(json.dumps(params, indent=1) + "\n")
            if root.exists():
                root.rmdir()
            os.replace(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return root


def _manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def render(rng: np.random.Generator, cls: int, num_classes: int, size: int) -> Image.Image:
    """One image of class ``cls``."""
    background = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(background).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(2):
        _shape(draw, rng, rng.uniform(), size, scale=(0.12, 0.25))
    jitter = rng.uniform(-0.3, 0.3)
    _shape(draw, rng, ((cls + jitter) / num_classes) % 1.0, size, scale=(0.35, 0.6))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, hue: float, size: int, scale) -> None:
    extent = rng.uniform(*scale) * size
    x, y = rng.uniform(0, size - extent, 2)
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    colour = tuple(int(255 * c) for c in rgb)
    box = [x, y, x + extent, y + extent * rng.uniform(0.7, 1.3)]
    if rng.uniform() < 0.5:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
