"""core.data, core.folders, core.idx, core.dataset: built-in demos, IDX files, user folders (hostile ones too), memory fallback."""
from __future__ import annotations

import gzip
import pickle
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import core.dataset as dataset
import core.folders as folders
from core.choices import BUILTIN_DATASETS
from core.data import builtin_path, load_dataset, resolve_im_path
from core.dataset import DatasetReport, LazyImages, ScanCancelled
from core.folders import list_images
from core.errors import DatasetError, UserError
from core.resources import resources_dir

from .corpus import EXIF_ROTATED, LOCKED, bomb_png, exif_rotated_jpeg, make_corpus

ROOT = Path(__file__).resolve().parents[1]


def save(path: Path, image: Image.Image | np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, fmt)
    return path


def solid(color: tuple | int, mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new(mode, size, color)


# ---------------------------------------------------------------------------------------------
# Built-in demos and IDX files


def test_builtin_mnist_loads_5000_digits():
    ds = load_dataset("builtin:mnist", 1, 28)
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) == set(range(10))
    assert ds.class_names == [str(i) for i in range(10)]
    batch = ds.batch(torch.arange(64))
    assert batch.dtype == torch.float32 and batch.shape == (64, 1, 28, 28)
    assert batch.min() == -1.0 and batch.max() == 1.0
    assert torch.equal(ds[3], batch[3])
    assert len(ds) == 5000
    assert ds.report.in_memory and ds.report.summary() == "5,000 images, 28x28 L, 10 classes, 0 skipped"


def test_builtin_fashion_mnist_is_the_10k_test_set():
    ds = load_dataset("builtin:fashion-mnist", 1, 28)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"  # classes.txt


def test_idx_class_names_file_is_used_only_when_it_names_every_label(tmp_path):
    for name in ("mnist5k-images-idx3-ubyte.gz", "mnist5k-labels-idx1-ubyte.gz"):
        shutil.copy(builtin_path("mnist") / name, tmp_path / name)
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\n")  # too short: 10 labels
    assert load_dataset(tmp_path, 1, 28).class_names == [str(i) for i in range(10)]
    (tmp_path / "classes.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    assert load_dataset(tmp_path, 1, 28).class_names == [f"digit {i}" for i in range(10)]


def test_builtin_files_ship_with_their_licences():
    for name in BUILTIN_DATASETS:
        folder = builtin_path(name)
        assert (folder / "COPYING").is_file()
        assert list(folder.glob("*-images-idx3-ubyte.gz")) and list(folder.glob("*-labels-idx1-ubyte.gz"))
    assert not list(builtin_path("fashion-mnist").glob("train-*")), "the 26 MB train set must not ship"


def test_idx_resized_and_made_rgb():
    gray = load_dataset("builtin:mnist", 1, 28)
    rgb = load_dataset("builtin:mnist", 3, 16)
    assert rgb.images.shape == (5000, 3, 16, 16) and rgb.images.is_contiguous()
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 1]) and torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    # Antialiased downsampling keeps the average brightness of each digit.
    mean_28 = gray.images.float().mean(dim=(1, 2, 3))
    mean_16 = rgb.images[:, :1].float().mean(dim=(1, 2, 3))
    assert (mean_28 - mean_16).abs().max() < 6
    assert torch.equal(rgb.labels, gray.labels)


def test_idx_file_path_directly_finds_labels_beside_it():
    images = next(builtin_path("mnist").glob("*-images-idx3-ubyte.gz"))
    ds = load_dataset(images, 1, 28)
    assert len(ds) == 5000 and len(ds.class_names) == 10
    assert ds.report.source == str(images)


def test_idx_uncompressed_without_labels_is_one_unnamed_class(tmp_path):
    source = next(builtin_path("mnist").glob("*-images-idx3-ubyte.gz"))
    target = tmp_path / "digits-images-idx3-ubyte"
    target.write_bytes(gzip.decompress(source.read_bytes()))
    ds = load_dataset(tmp_path, 1, 32)
    assert ds.images.shape == (5000, 1, 32, 32)
    assert ds.class_names == [""] and not ds.labels.any()
    assert "no classes" in ds.report.summary()


def test_idx_folder_prefers_the_train_file(tmp_path):
    source = builtin_path("mnist") / "mnist5k-images-idx3-ubyte.gz"
    raw = gzip.decompress(source.read_bytes())
    header, pixels = raw[:16], raw[16:]
    small = header[:4] + (10).to_bytes(4, "big") + header[8:] + pixels[: 10 * 784]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(small)  # Kaggle's spelling
    assert len(load_dataset(tmp_path, 1, 28)) == 10


def test_damaged_idx_is_a_dataset_error(tmp_path):
    source = builtin_path("mnist") / "mnist5k-images-idx3-ubyte.gz"
    raw = gzip.decompress(source.read_bytes())
    (tmp_path / "cut-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated or damaged"):
        load_dataset(tmp_path / "cut-images-idx3-ubyte", 1, 28)
    (tmp_path / "cut-images-idx3-ubyte").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="cut-images-idx3-ubyte"):
        load_dataset(tmp_path, 1, 28)


def test_idx_labels_that_dont_match_are_reported_not_fatal(tmp_path):
    for name in ("mnist5k-images-idx3-ubyte.gz", "mnist5k-labels-idx1-ubyte.gz"):
        shutil.copy(builtin_path("mnist") / name, tmp_path / name)
    labels = gzip.decompress((tmp_path / "mnist5k-labels-idx1-ubyte.gz").read_bytes())
    short = labels[:4] + (7).to_bytes(4, "big") + labels[8:15]
    (tmp_path / "mnist5k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(short))
    ds = load_dataset(tmp_path, 1, 28)
    assert len(ds) == 5000 and ds.class_names == [""]
    (skip,) = ds.report.skipped
    assert skip.path.endswith("labels-idx1-ubyte.gz") and "7 labels for 5,000 images" in skip.reason


# ---------------------------------------------------------------------------------------------
# Paths and resources


def test_resolve_im_path(tmp_path, monkeypatch):
    assert resolve_im_path("builtin:mnist") == builtin_path("mnist") == resources_dir() / "datasets" / "mnist"
    assert resolve_im_path(" builtin:Fashion-MNIST ") == builtin_path("fashion-mnist")
    assert resolve_im_path("data/x", base=tmp_path) == tmp_path / "data" / "x"
    assert resolve_im_path(tmp_path / "abs", base=Path("/elsewhere")) == tmp_path / "abs"
    assert resolve_im_path("data/x") == Path("data/x")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_im_path("~/pics") == tmp_path / "pics"
    with pytest.raises(DatasetError, match="builtin:mnist, builtin:fashion-mnist"):
        resolve_im_path("builtin:cifar")
    with pytest.raises(DatasetError, match="No dataset chosen"):
        resolve_im_path("  ")


def test_resources_dir_from_checkout_and_when_frozen(tmp_path, monkeypatch):
    assert resources_dir() == ROOT / "resources"
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources_dir() == tmp_path / "resources"


def test_memory_budget_is_bounded():
    assert 0 < dataset.memory_budget() <= 4 << 30


# ---------------------------------------------------------------------------------------------
# Folders


def test_folder_classes_from_first_level_subfolders(tmp_path):
    save(tmp_path / "loose.png", solid(0, "L"))
    save(tmp_path / "cats" / "a.png", solid(50, "L"))
    save(tmp_path / "dogs" / "b.jpg", solid(100, "L"))
    save(tmp_path / "dogs" / "puppies" / "c.bmp", solid(150, "L"))
    ds = load_dataset(tmp_path, 1, 8)
    assert ds.class_names == ["", "cats", "dogs"] == ds.report.classes
    assert ds.labels.tolist() == [0, 1, 2, 2]  # sorted walk: root files, then cats, dogs, dogs/puppies
    assert ds.images[:, 0, 0, 0].tolist() == [0, 50, 100, 150]
    assert ds.report.summary() == "4 images, 8x8 L, 2 classes, 0 skipped"


def test_gray_to_rgb_and_rgb_to_gray(tmp_path):
    save(tmp_path / "gray" / "g.png", solid(77, "L"))
    save(tmp_path / "red" / "r.png", solid((255, 0, 0)))
    rgb = load_dataset(tmp_path / "gray", 3, 8)
    assert rgb.images.shape == (1, 3, 8, 8) and (rgb.images == 77).all()
    gray = load_dataset(tmp_path / "red", 1, 8)
    assert gray.images.shape == (1, 1, 8, 8) and (gray.images == 76).all()  # ITU-R 601 luma of red


def test_transparency_becomes_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 4:, 3] = 255  # left half fully transparent, right half opaque red
    save(tmp_path / "t.png", rgba)
    px = load_dataset(tmp_path, 3, 8).images[0]
    assert (px[:, :, :4] == 255).all()
    assert (px[0, :, 4:] == 255).all() and (px[1:, :, 4:] == 0).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    save(tmp_path / "a.png", np.full((8, 8), 32896, np.uint16))  # 128 * 257
    save(tmp_path / "b.png", np.full((8, 8), 65535, np.uint16))
    ds = load_dataset(tmp_path, 1, 8)
    assert ds.report.modes == {"I;16": 2}
    assert ds.images[0].unique().tolist() == [128] and ds.images[1].unique().tolist() == [255]


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    stripes = np.zeros((10, 50, 3), np.uint8)
    stripes[:, :15] = (255, 0, 0)
    stripes[:, 15:35] = (0, 255, 0)  # the central 10x10 square, with a margin for the filter's reach
    stripes[:, 35:] = (0, 0, 255)
    save(tmp_path / "wide.png", stripes)
    px = load_dataset(tmp_path, 3, 5).images[0]
    assert px[1].min() >= 250 and px[0].max() <= 5 and px[2].max() <= 5  # only the green middle
    assert load_dataset(tmp_path, 3, 64).images.shape == (1, 3, 64, 64)  # upsampling too


def test_exif_orientation_applied(tmp_path):
    (tmp_path / EXIF_ROTATED).write_bytes(exif_rotated_jpeg())
    px = load_dataset(tmp_path, 1, 16).images[0, 0].float()
    top, bottom = px[:6].mean(), px[-6:].mean()
    left, right = px[:, :6].mean(), px[:, -6:].mean()
    assert top < 40 and bottom > 215, "black must be on top after rotating 90° clockwise"
    assert abs(left - right) < 20
    assert load_dataset(tmp_path, 1, 16).report.sizes == {(40, 20): 1}  # as stored


def test_large_jpeg_decoded_at_reduced_scale_same_result(tmp_path):
    # draft() lets libjpeg decode 2000 px at 1/8 scale; the result must still be a faithful thumbnail.
    gradient = np.tile(np.linspace(0, 255, 2000, dtype=np.float32), (1600, 1)).astype(np.uint8)
    save(tmp_path / "big.jpg", gradient, "JPEG")
    px = load_dataset(tmp_path, 1, 16).images[0, 0].float()
    expected = torch.from_numpy(np.array(Image.fromarray(gradient[:, 200:1800]).resize((16, 16)))).float()
    assert (px - expected).abs().max() < 8


def test_thread_pool_keeps_file_order(tmp_path, monkeypatch):
    for i in range(40):
        save(tmp_path / f"{i:03d}.png", solid(i * 6, "L"))
    monkeypatch.setattr(folders, "_decode_workers", lambda: 1)
    serial = load_dataset(tmp_path, 1, 8)
    monkeypatch.setattr(folders, "_decode_workers", lambda: 3)
    pooled = load_dataset(tmp_path, 1, 8)
    assert torch.equal(serial.images, pooled.images)
    assert pooled.images[:, 0, 0, 0].tolist() == [i * 6 for i in range(40)]


# ---------------------------------------------------------------------------------------------
# The hostile corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def _relative(path: str, folder: Path) -> str:
    return Path(path).relative_to(folder).as_posix()


def _can_read(path: Path) -> bool:
    """False for the chmod-000 file, except as root, where permission checks don't apply."""
    try:
        path.open("rb").close()
    except PermissionError:
        return False
    return True


@pytest.mark.timeout(60)
def test_corpus_loads_the_good_and_reports_the_bad(corpus):
    folder, expected = corpus
    if _can_read(folder / LOCKED):
        expected = {**expected, LOCKED: "ok"}
    ds = load_dataset(folder, 3, 16)
    good = sorted(k for k, v in expected.items() if v == "ok")
    assert len(ds) == len(good) == ds.report.num_images
    reported = {_relative(s.path, folder): s.reason for s in ds.report.skipped}
    bad = {k: v for k, v in expected.items() if v not in ("ok", "hidden", "ignored")}
    assert set(reported) == set(bad), "exactly the bad files are reported"
    for path, keyword in bad.items():
        assert keyword in reported[path], f"{path}: {reported[path]!r} lacks {keyword!r}"
    assert not any(part.startswith(".") for path in reported for part in Path(path).parts)
    classes = ["", "bad", "cats", "deep", "dogs"] if expected[LOCKED] == "ok" else ["", "cats", "deep", "dogs"]
    assert ds.class_names == classes
    assert ds.images.shape == (len(good), 3, 16, 16)
    assert ds.report.summary().endswith(f"{len(bad)} skipped")


def test_corpus_reasons_read_well(corpus):
    folder, _ = corpus
    reasons = {_relative(s.path, folder): s.reason for s in load_dataset(folder, 1, 8).report.skipped}
    assert reasons["bad/empty.png"] == "empty file"
    assert reasons["bad/text.png"] == "not an image"
    assert reasons["bad/truncated.png"] == reasons["bad/truncated.jpg"] == "truncated image"
    assert reasons["bad/bomb.png"].startswith("too large: 3,600 megapixels")


def test_unreadable_file_is_skipped_with_reason(corpus):
    folder, _ = corpus
    if _can_read(folder / LOCKED):
        pytest.skip("running as root: permission checks don't apply")
    reasons = {_relative(s.path, folder): s.reason for s in load_dataset(folder, 1, 8).report.skipped}
    assert reasons[LOCKED] == "permission denied"


@pytest.mark.timeout(60)
def test_symlink_loops_end_and_count_each_folder_once(tmp_path):
    save(tmp_path / "a" / "x.png", solid(1, "L"))
    (tmp_path / "a" / "up").symlink_to("..", target_is_directory=True)
    (tmp_path / "a" / "self").symlink_to(".", target_is_directory=True)
    (tmp_path / "b").symlink_to("a", target_is_directory=True)  # the same folder by another name
    files, skipped = list_images(tmp_path)
    assert files == [(str(tmp_path / "a" / "x.png"), "a")] and skipped == []


def test_bomb_skipped_without_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(DatasetError, match="too large"):
        load_dataset(tmp_path, 1, 8)


def test_own_pixel_limit_names_the_size(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "MAX_PIXELS", 100)
    save(tmp_path / "ok.png", solid(0, size=(10, 10)))
    save(tmp_path / "big.png", solid(0, size=(20, 11)))
    (skip,) = load_dataset(tmp_path, 1, 8).report.skipped
    assert skip.reason.startswith("too large: 20x11 pixels")


# ---------------------------------------------------------------------------------------------
# Errors, progress, cancel


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"No usable images in .*put \.png/\.jpg images") as info:
        load_dataset(tmp_path, 1, 28)
    assert str(tmp_path) in str(info.value)


def test_folder_of_only_bad_files_says_why(tmp_path):
    (tmp_path / "notes.png").write_text("text")
    with pytest.raises(DatasetError, match="notes.png: not an image"):
        load_dataset(tmp_path, 1, 28)


def test_missing_path_and_single_image_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="Dataset not found") as info:
        load_dataset(tmp_path / "nowhere", 1, 28)
    assert str(tmp_path / "nowhere") in str(info.value)
    image = save(tmp_path / "one.png", solid(0))
    with pytest.raises(DatasetError, match="single file"):
        load_dataset(image, 1, 28)


def _numbered_folder(folder: Path, count: int) -> Path:
    for i in range(count):
        save(folder / f"{i:04d}.png", solid(i % 256, "L", (4, 4)))
    return folder


def test_progress_counts_up_to_the_total(tmp_path):
    folder = _numbered_folder(tmp_path, 250)
    calls = []
    load_dataset(folder, 1, 4, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 250) and calls[-1] == (250, 250)
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and 3 <= len(calls) <= dataset.PROGRESS_CALLS + 2


def test_should_cancel_stops_the_scan(tmp_path):
    folder = _numbered_folder(tmp_path, 100)
    asked = []

    def cancel_after_ten() -> bool:
        asked.append(1)
        return len(asked) > 10

    with pytest.raises(ScanCancelled) as info:
        load_dataset(folder, 1, 4, should_cancel=cancel_after_ten)
    assert isinstance(info.value, UserError) and len(asked) == 11


def test_cancel_works_for_idx_too():
    with pytest.raises(ScanCancelled):
        load_dataset("builtin:mnist", 1, 16, should_cancel=lambda: True)


@pytest.mark.slow
def test_listing_20k_files(tmp_path):
    try:
        expected = make_corpus(tmp_path, big=20_000)
        files, skipped = list_images(tmp_path)
    finally:
        shutil.rmtree(tmp_path / "big")  # pytest keeps recent tmp folders; don't leave 20k files there
    listed = {k for k, v in expected.items() if v not in ("hidden", "ignored", "broken link")}
    assert len(files) == len(listed) and len({p for p, _ in files}) == len(files)
    assert [_relative(s.path, tmp_path) for s in skipped] == ["bad/broken_link.png"]
    assert sum(label == "big" for _, label in files) == 20_000


# ---------------------------------------------------------------------------------------------
# Memory fallback


def test_lazy_folder_when_over_the_memory_budget(tmp_path, monkeypatch):
    for i in range(6):
        save(tmp_path / ("a" if i % 2 else "b") / f"{i}.png", solid((i * 40, 0, 0), size=(12, 9)))
    (tmp_path / "bad.png").write_text("text")
    kept = load_dataset(tmp_path, 3, 8)
    monkeypatch.setattr(dataset, "memory_budget", lambda: 1000)
    lazy = load_dataset(tmp_path, 3, 8)
    assert isinstance(lazy.images, LazyImages) and not lazy.report.in_memory
    assert "decoded per batch" in lazy.report.summary()
    assert lazy.images.shape == kept.images.shape and len(lazy) == 6
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(lazy.batch(idx), kept.batch(idx))
    assert torch.equal(lazy.images[:4], kept.images[:4]) and torch.equal(lazy.images[-1], kept.images[-1])
    assert torch.equal(lazy[2], kept[2]) and torch.equal(lazy.labels, kept.labels)
    assert [s.reason for s in lazy.report.skipped] == ["not an image"]
    assert torch.equal(pickle.loads(pickle.dumps(lazy)).batch(idx), kept.batch(idx))  # DataLoader workers
    first = Path(lazy.report.source) / "a" / "1.png"
    first.write_text("replaced by text after loading")
    with pytest.raises(DatasetError, match="changed after the dataset was loaded"):
        lazy.batch(torch.arange(6))


def test_lazy_idx_when_over_the_memory_budget(monkeypatch):
    kept = load_dataset("builtin:mnist", 3, 16)
    monkeypatch.setattr(dataset, "memory_budget", lambda: 1 << 20)
    lazy = load_dataset("builtin:mnist", 3, 16)
    assert isinstance(lazy.images, LazyImages) and not lazy.report.in_memory
    idx = torch.randint(0, 5000, (32,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(lazy.batch(idx), kept.batch(idx))
    with pytest.raises(IndexError):
        lazy.images[5000]
    assert torch.equal(pickle.loads(pickle.dumps(lazy)).batch(idx), kept.batch(idx))


def test_report_summary_for_mixed_data():
    report = DatasetReport(
        "x", 1234, sizes=Counter({(640, 480): 1000, (10, 10): 234}), modes=Counter({"RGB": 1200, "L": 34}),
        classes=["", "cats"], skipped=[], in_memory=True,
    )
    assert report.summary() == "1,234 images, mixed sizes (mostly 640x480), mixed modes (mostly RGB), 1 class, 0 skipped"
