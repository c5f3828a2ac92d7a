"""A generated JPEG set written by several ``larsbench data generate`` processes at once.

    python -m benchmarks.gpu_data DIR [--classes 10] [--train-per-class 1300] [--val-per-class 10]
        [--image-size 320] [--parts 16]

One process writes about 100 images a second, so a set large enough for a GPU's data-path
benchmark (tens of thousands of images) takes minutes from one. Here ``--parts`` processes
each write a whole set with its own seed and its share of the images per class, and their
class folders are merged into one ImageFolder tree at DIR (file names prefixed by part). Every
part renders class c with the same hue, so the merged set is as learnable as one written by a
single process, only drawn from other random streams.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal positive shares (fewer parts when total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def generate(root: Path, classes: int, train_per_class: int, val_per_class: int, image_size: int, parts: int) -> Path:
    if root.exists():
        raise FileExistsError(f"{root} exists; give a new folder")
    staging = root.with_name(root.name + ".parts")
    shutil.rmtree(staging, ignore_errors=True)
    train, val = shares(train_per_class, parts), shares(val_per_class, parts)
    count = min(len(train), len(val))
    train, val = shares(train_per_class, count), shares(val_per_class, count)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "larsbench", "data", "generate", str(staging / f"p{i:02d}"),
             "--num-classes", str(classes), "--train-per-class", str(train[i]), "--val-per-class", str(val[i]),
             "--image-size", str(image_size), "--seed", str(i)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(count)
    ]
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} generate processes failed, the first: {' '.join(failed[0])}")
    for part in sorted(staging.iterdir()):
        for folder in sorted(part.glob("*/class_*")):
            target = root / folder.relative_to(part)
            target.mkdir(parents=True, exist_ok=True)
            for image in folder.iterdir():
                os.replace(image, target / f"{part.name}_{image.name}")
    shutil.rmtree(staging)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=1300)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=320, help="side of the square JPEGs in px (default 320)")
    parser.add_argument("--parts", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    generate(args.directory, args.classes, args.train_per_class, args.val_per_class, args.image_size, args.parts)
    images = args.classes * (args.train_per_class + args.val_per_class)
    print(f"wrote {images} JPEGs of {args.image_size} px ({args.classes} classes) to {args.directory} "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
