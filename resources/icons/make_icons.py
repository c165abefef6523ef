"""Draw DDPM Studio's app icon once: noise on the left resolving into a clean shape on the right.

Run ``python resources/icons/make_icons.py`` to regenerate the committed PNGs (16..512 px) and
the Windows ``.ico``. Drawn at 1024 px and downsampled, so small sizes stay crisp.
"""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
BIG = 1024
TOP, BOTTOM = (58, 46, 140), (18, 150, 160)  # indigo to teal


def _background() -> Image.Image:
    """A vertical gradient inside a rounded square with a transparent margin."""
    gradient = Image.new("RGB", (1, BIG))
    for y in range(BIG):
        a = y / (BIG - 1)
        gradient.putpixel((0, y), tuple(round(t + (b - t) * a) for t, b in zip(TOP, BOTTOM, strict=True)))
    gradient = gradient.resize((BIG, BIG))
    mask = Image.new("L", (BIG, BIG), 0)
    margin = BIG // 16
    ImageDraw.Draw(mask).rounded_rectangle((margin, margin, BIG - margin, BIG - margin), radius=BIG // 5, fill=255)
    icon = Image.new("RGBA", (BIG, BIG), (0, 0, 0, 0))
    icon.paste(gradient, (0, 0), mask)
    return icon


def _in_ring(x: float, y: float) -> bool:
    """The clean target shape: a ring, like a zero being denoised."""
    r = ((x - 0.5) ** 2 + (y - 0.5) ** 2) ** 0.5
    return 0.22 <= r <= 0.36


def _pixels(icon: Image.Image) -> None:
    """An 8x8 pixel grid whose cells go from random noise (left) to the ring (right)."""
    rng = random.Random(7)
    draw = ImageDraw.Draw(icon)
    n, inset = 8, BIG * 0.2
    cell = (BIG - 2 * inset) / n
    for i in range(n):
        for j in range(n):
            clean = 1.0 if _in_ring((i + 0.5) / n, (j + 0.5) / n) else 0.0
            a = min(1.0, max(0.0, (i - 1) / (n - 3)))  # 0 at the left, 1 at the right
            value = (1 - a) * rng.random() + a * clean
            shade = round(40 + 215 * value)
            x0, y0 = inset + i * cell, inset + j * cell
            draw.rounded_rectangle(
                (x0 + cell * 0.08, y0 + cell * 0.08, x0 + cell * 0.92, y0 + cell * 0.92),
                radius=cell * 0.18, fill=(shade, shade, shade, 255),
            )


def main() -> None:
    icon = _background()
    _pixels(icon)
    icon = icon.filter(ImageFilter.SMOOTH)
    for size in SIZES:
        icon.resize((size, size), Image.LANCZOS).save(HERE / f"ddpm-studio-{size}.png", optimize=True)
    icon.resize((256, 256), Image.LANCZOS).save(
        HERE / "ddpm-studio.ico", sizes=[(s, s) for s in SIZES if s <= 256]
    )


if __name__ == "__main__":
    main()
