"""A hostile folder of image files, to prove the loader skips what it must and keeps the rest.

``make_corpus`` writes it and returns, for each file, what the loader should do with it:
``"ok"`` (loaded), a keyword its skip reason must contain, ``"hidden"`` (ignored without a report)
or ``"ignored"`` (not an image extension; never listed). Symlinks to folders are not entries.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Stored 40 wide, 20 tall: the left half black, the right half white. EXIF orientation 6 says
# "rotate 90° clockwise to display", so a loader that honours it sees black on top.
EXIF_ROTATED = "exif_rotated.jpg"
LOCKED = "bad/locked.png"  # chmod 000: unreadable except to root
BOMB_SIZE = 60000


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = BOMB_SIZE, height: int = BOMB_SIZE) -> bytes:
    """A 1 KB PNG whose valid IHDR claims ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise
    return _encode(Image.fromarray(pixels).convert("RGB"), "JPEG", exif=exif.tobytes(), quality=95)


def _good_files() -> dict[str, bytes]:
    rgb = _noise(40, 30)
    gradient16 = (np.arange(24 * 24, dtype=np.uint32).reshape(24, 24) * 113).astype(np.uint16)
    palette = Image.new("P", (16, 16))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    palette.putdata([i % 4 for i in range(16 * 16)])
    return {
        "root.png": _encode(rgb, "PNG"),
        "cats/photo.png": _encode(rgb, "PNG"),
        "cats/photo.jpg": _encode(rgb, "JPEG"),
        "cats/sub/nested.bmp": _encode(rgb, "BMP"),
        "dogs/anim.gif": _encode(rgb.convert("P"), "GIF"),
        "dogs/photo.webp": _encode(rgb, "WEBP"),
        "dogs/scan.tif": _encode(rgb, "TIFF"),
        "dogs/SHOUTING.JPEG": _encode(rgb, "JPEG"),
        "dogs/scan2.TIFF": _encode(rgb.convert("L"), "TIFF"),
        "gray16.png": _encode(Image.fromarray(gradient16), "PNG"),
        "rgba.png": _encode(_noise(32, 32, "RGBA"), "PNG"),
        "palette_transparent.png": _encode(palette, "PNG", transparency=0),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "tiny_1x1.png": _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "thin_1x500.png": _encode(_noise(1, 500, "L"), "PNG"),
        EXIF_ROTATED: exif_rotated_jpeg(),
        "zürich_日本.png": _encode(rgb, "PNG"),
        "deep/" + "/".join(f"d{i:02d}" for i in range(1, 31)) + "/bottom.png": _encode(rgb, "PNG"),
    }


def _bad_files() -> dict[str, tuple[bytes, str]]:
    png = _encode(_noise(64, 64, seed=1), "PNG")
    jpeg = _encode(_noise(64, 64, seed=1), "JPEG")
    return {
        "bad/empty.png": (b"", "empty"),
        "bad/text.png": (b"these are my holiday notes, not a picture\n" * 10, "not an image"),
        "bad/truncated.png": (png[: len(png) // 2], "truncated"),
        "bad/truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "bad/bomb.png": (bomb_png(), "too large"),
        LOCKED: (png, "permission denied"),
    }


def make_corpus(folder: Path, *, big: int = 0) -> dict[str, str]:
    """Write the corpus under ``folder``; return {relative path: "ok" | reason keyword | ...}.

    ``big`` adds that many 1x1 PNGs under ``big/`` for scale tests: one file and hard links to it.
    """
    folder = Path(folder)
    expected: dict[str, str] = {}

    def write(relative: str, data: bytes, outcome: str) -> Path:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[relative] = outcome
        return path

    for relative, data in _good_files().items():
        write(relative, data, "ok")
    for relative, (data, keyword) in _bad_files().items():
        write(relative, data, keyword)
    os.chmod(folder / LOCKED, 0)

    tiny = _encode(Image.new("L", (1, 1), 128), "PNG")
    write(".hidden.png", tiny, "hidden")
    write(".hidden_folder/inside.png", tiny, "hidden")
    write("cats/.secret.jpg", tiny, "hidden")
    write("notes.txt", b"not listed: the extension is not an image's", "ignored")

    (folder / "bad/broken_link.png").symlink_to("does-not-exist.png")
    expected["bad/broken_link.png"] = "broken link"
    loops = folder / "loops"
    loops.mkdir()
    (loops / "up").symlink_to("..", target_is_directory=True)  # the corpus root: a cycle
    (loops / "self").symlink_to(".", target_is_directory=True)

    for i in range(big):
        relative = f"big/{i:06d}.png"
        if i % 50_000 == 0:  # ext4 allows 65,000 links to a file
            source = write(relative, tiny, "ok")
        else:
            os.link(source, folder / relative)  # ~50x faster to make than a new file
            expected[relative] = "ok"
    return expected
