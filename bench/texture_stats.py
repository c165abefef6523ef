"""Palette and texture of sets of RGB images, each against a reference set (the training crops).

Why beside FID: on the RGB crops FID ranks flat colour fields ahead of textured samples in the
crops' own palette, and its floor there (half the crops against the other half) is 160 at
N = 1000, so it says little about what the RGB goal asks for: texture. These measures say
what the eye sees, each comparable with the reference set's own value:

- ``mean_rgb``: the mean colour (R, G, B in [-1, 1]);
- ``image_std``: the spread of pixel values within an image, averaged over images (flat colour
  fields score low);
- ``mean_abs_grad``: the mean absolute difference between neighbouring pixels (texture and edges;
  smooth fields score low, noise high);
- ``palette_w1``: per channel, the 1-D Wasserstein-1 distance between the set's pixel values and
  the reference's (0: the same distribution of each channel's values).

    .venv/bin/python bench/texture_stats.py REFERENCE SET [SET ...] [--n 1000]

REFERENCE and each SET is a folder of PNGs (``ddpm sample --images``; a seeded random subset of
``--n``). Prints one JSON object per set, the reference first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

QUANTILES = np.linspace(0.005, 0.995, 199)


def load_rgb(folder: Path, n: int) -> np.ndarray:
    """Up to ``n`` of the folder's PNGs as (N, H, W, 3) floats in [-1, 1]; a seeded subset,
    because sampled and cropped folders are often ordered."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise ValueError(f"{folder} holds no .png files")
    pick = np.sort(np.random.default_rng(0).permutation(len(files))[:n])
    pixels = np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in pick])
    return pixels.astype(np.float32) / 127.5 - 1


def channel_quantiles(images: np.ndarray) -> np.ndarray:
    """Each channel's pixel values at :data:`QUANTILES`, (len(QUANTILES), 3)."""
    return np.quantile(images.reshape(-1, 3), QUANTILES, axis=0)


def stats(images: np.ndarray, reference_quantiles: np.ndarray) -> dict:
    """The measures of the module docstring for one set."""
    grad = (np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean()) / 2
    return {
        "n": len(images),
        "mean_rgb": [round(float(v), 3) for v in images.mean((0, 1, 2))],
        "image_std": round(float(images.reshape(len(images), -1, 3).std(1).mean()), 3),
        "mean_abs_grad": round(float(grad), 4),
        "palette_w1": [round(float(v), 3) for v in np.abs(channel_quantiles(images) - reference_quantiles).mean(0)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path)
    p.add_argument("sets", type=Path, nargs="+")
    p.add_argument("--n", type=int, default=1000, help="images taken from each folder")
    args = p.parse_args()
    try:
        loaded = [(folder, load_rgb(folder, args.n)) for folder in (args.reference, *args.sets)]
    except ValueError as e:
        p.error(str(e))
    reference_quantiles = channel_quantiles(loaded[0][1])
    for folder, images in loaded:
        print(json.dumps({"set": str(folder), **stats(images, reference_quantiles)}))


if __name__ == "__main__":
    main()
