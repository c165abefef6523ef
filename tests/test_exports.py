"""Exports decode with ordinary readers, match torchvision's pixels, and never leave half a file."""
from __future__ import annotations

import errno
import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import save_image

import core.atomic
from core.errors import DiskFullError, UserError
from core.exports import HOLD_LAST_S, save_animation, save_grid, save_images, to_uint8_grid


def images(n: int = 4, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Values a little beyond [-1, 1], as a DDPM's final step can give."""
    return torch.rand((n, c, size, size), generator=torch.Generator().manual_seed(seed)) * 2.2 - 1.1


def animation(n: int = 5, h: int = 33, w: int = 65, c: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for _ in range(n)]


def fail_fsync(monkeypatch):
    """Every atomic write fails after its data is written, as on a disk that just filled up."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(core.atomic.os, "fsync", fsync)


# ---------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("n,c,nrow,shape", [
    (64, 3, 8, (146, 146, 3)), (4, 1, 2, (38, 38, 1)), (5, 3, 2, (56, 38, 3)), (9, 3, None, (56, 56, 3)),
    (1, 1, None, (16, 16, 1)),  # one image: unpadded, torchvision's rule
])
def test_grid_shape(n, c, nrow, shape):
    grid = to_uint8_grid(images(n, c), nrow)
    assert grid.shape == shape and grid.dtype == np.uint8


@pytest.mark.parametrize("c", [1, 3])
def test_grid_pixels_match_torchvision_save_image(tmp_path, c):
    x = images(6, c)
    save_image((x.clamp(-1, 1) + 1) / 2, tmp_path / "tv.png", nrow=3)
    reference = np.asarray(Image.open(tmp_path / "tv.png").convert("RGB"))
    grid = to_uint8_grid(x, 3)
    assert np.array_equal(np.repeat(grid, 3, axis=2) if c == 1 else grid, reference)


def test_save_grid_writes_a_png_of_the_grid(tmp_path):
    path = save_grid(images(5, 1), tmp_path / "sub" / "grid.png", nrow=2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (38, 56)
        assert np.array_equal(np.asarray(im), to_uint8_grid(images(5, 1), 2)[..., 0])


def test_save_images_writes_one_png_each(tmp_path):
    x = images(3, 3, size=8)
    paths = save_images(x, tmp_path / "out", prefix="x0")
    assert [p.name for p in paths] == ["x0_0000.png", "x0_0001.png", "x0_0002.png"]
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            assert im.size == (8, 8) and im.mode == "RGB"
            assert np.array_equal(np.asarray(im), to_uint8_grid(x[i:i + 1]))


def test_unknown_image_suffix_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"grid\.xyz.*\.png"):
        save_grid(images(), tmp_path / "grid.xyz")


# ---------------------------------------------------------------------------------- animations


@pytest.mark.parametrize("loop", [True, False])
def test_gif_decodes_with_every_frame_and_loops_forever(tmp_path, loop):
    frames = animation(5)
    path = save_animation(frames, tmp_path / "run.gif", fps=20, loop=loop)
    decoded = iio.imread(path, index=None)
    assert decoded.shape == (5, 33, 65, 3)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.info["duration"] == 50
        assert im.info.get("loop") == (0 if loop else None)


def test_mp4_decodes_with_every_frame_padded_to_even_size(tmp_path):
    frames = animation(7, h=33, w=65, c=1)  # odd sizes and grayscale: both need fixing for yuv420p
    path = save_animation(frames, tmp_path / "run.mp4", fps=10)
    decoded = list(iio.imiter(path, plugin="FFMPEG"))
    held = round(HOLD_LAST_S * 10)  # the last frame repeated: a video has one duration for all
    assert len(decoded) == 7 + held and decoded[0].shape == (34, 66, 3)
    meta = iio.immeta(path, plugin="FFMPEG")
    assert meta["codec"] == "h264" and meta["fps"] == 10 and meta["pix_fmt"].startswith("yuv420p")
    assert [p for p in os.listdir(tmp_path) if p != "run.mp4"] == []  # scratch files are gone


@pytest.mark.parametrize("name", ["run.avi", "run", "run.GIF.txt"])
def test_unknown_animation_suffix_names_the_path_and_the_choices(tmp_path, name):
    with pytest.raises(UserError, match=rf"{name}.*\.gif or \.mp4"):
        save_animation(animation(2), tmp_path / name)


def test_no_frames_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="No frames"):
        save_animation([], tmp_path / "run.gif")


# ---------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize("name,write", [
    ("grid.png", lambda p: save_grid(images(), p)),
    ("run.gif", lambda p: save_animation(animation(3), p)),
    ("run.mp4", lambda p: save_animation(animation(3), p)),
])
def test_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch, name, write):
    path = tmp_path / name
    path.write_bytes(b"previous version")
    fail_fsync(monkeypatch)
    with pytest.raises(DiskFullError, match=name):
        write(path)
    assert path.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == [name]  # no temp file or scratch folder left behind


def test_write_failing_half_way_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    path.write_bytes(b"previous version")
    real_open = open

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.EIO, "Input/output error")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(core.atomic, "open", lambda name, mode: HalfWriter(real_open(name, mode)), raising=False)
    with pytest.raises(OSError, match="Input/output"):
        save_grid(images(), path)
    assert path.read_bytes() == b"previous version" and os.listdir(tmp_path) == ["grid.png"]


def test_ffmpeg_out_of_space_is_a_disk_full_error(tmp_path, monkeypatch):
    import imageio_ffmpeg

    def write_frames(*args, **kwargs):
        raise OSError("[Errno 32] Broken pipe\n\nFFMPEG STDERR OUTPUT:\nav_interleaved_write_frame(): "
                      "No space left on device")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", write_frames)
    path = tmp_path / "run.mp4"
    path.write_bytes(b"previous version")
    with pytest.raises(DiskFullError, match="run.mp4"):
        save_animation(animation(2), path)
    assert path.read_bytes() == b"previous version" and os.listdir(tmp_path) == ["run.mp4"]


def test_animation_holds_its_last_frame(tmp_path):
    """The finished images are what one wants to see: the GIF rests on them, not 50 ms."""
    import numpy as np
    from PIL import Image as PILImage

    frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)]
    path = save_animation(frames, tmp_path / "a.gif", fps=20)
    with PILImage.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert durations[:-1] == [50] * 4 and durations[-1] == 50 + HOLD_LAST_S * 1000, durations
