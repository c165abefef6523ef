"""A folder of small RGB crops cut from a few photos: the data for the RGB preset's ten-minute check.

The product ships no RGB demo, and a test of "texture-like samples in ten minutes" needs RGB data
that anyone can rebuild offline. The photos scikit-image ships in its wheel (``skimage/data``)
serve: ``pip download scikit-image --no-deps``, unzip, and point SOURCE at ``skimage/data``.
Crops are cut at random sizes before being shrunk to SIZE, so a texture appears at several
scales (fur, coffee foam, metal), as a user's own crops of photos would. Grayscale photos are
skipped: the preset learns colour.

    .venv/bin/python bench/rgb_crops.py SOURCE OUT [--count 5000] [--size 32] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from core.atomic import atomic_writer

PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg"}


def colour_photos(source: Path, min_side: int) -> list[Image.Image]:
    """The RGB photos in ``source`` at least ``min_side`` px on each side, in name order."""
    photos = []
    for path in sorted(source.iterdir()):
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA") or min(image.size) < min_side:
                continue
            rgb = image.convert("RGB")
        if _has_colour(rgb):
            photos.append(rgb)
    return photos


def _has_colour(image: Image.Image) -> bool:
    """An RGB file can hold a gray picture (three equal channels); such a file teaches no colour."""
    pixels = np.asarray(image, dtype=np.int16)
    return bool(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean() > 4)


def random_crop(photo: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A square crop of 1.5 to 4 times ``size`` at a random place, shrunk to ``size``."""
    side = int(min(rng.uniform(1.5, 4.0) * size, *photo.size))
    left = int(rng.integers(0, photo.size[0] - side + 1))
    top = int(rng.integers(0, photo.size[1] - side + 1))
    return photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="folder of photos (e.g. skimage/data from scikit-image's wheel)")
    p.add_argument("out", type=Path, help="folder to write the crops into")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not args.source.is_dir():
        p.error(f"{args.source} is not a folder: give the folder that holds the photos")
    photos = colour_photos(args.source, min_side=4 * args.size)
    if not photos:
        p.error(f"no RGB photos of at least {4 * args.size} px in {args.source}")
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        crop = random_crop(photos[i % len(photos)], args.size, rng)
        with atomic_writer(args.out / f"crop-{i:05d}.png") as f:
            crop.save(f, format="PNG")
    print(json.dumps({"photos": len(photos), "crops": args.count, "size": args.size, "out": str(args.out)}))


if __name__ == "__main__":
    main()
