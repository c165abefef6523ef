"""FrameStore: bounded memory whatever the run length, evenly thinned, first and latest kept."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from core.exports import to_uint8_grid
from core.frames import SIDE_BY_SIDE_GAP, FrameStore
from core.samplers import Frame


def frames(num_steps: int, images: torch.Tensor) -> Iterator[Frame]:
    """A run of ``num_steps`` frames sharing one batch (only the timestep differs)."""
    negated = -images
    return (Frame(i, num_steps, num_steps - 1 - i, images, negated) for i in range(num_steps))


@pytest.mark.slow
def test_thousand_steps_of_64_rgb_images_stay_within_the_bound():
    """Never more than max_frames pairs of uint8 grids, plus the float latest frame until shown."""
    images = torch.rand(64, 3, 64, 64) * 2 - 1
    grid_bytes = (8 * 66 + 2) ** 2 * 3  # 8 x 8 grid of 64 px images with 2 px padding, RGB
    raw_bytes = 2 * images.nelement() * 4  # xt and x0 of the unrendered latest frame
    budget = 20  # 200 in the app (337 MB of grids at most); 20 renders fewer grids in this test
    store = FrameStore(max_frames=budget)
    for f in frames(1000, images):
        store.add(f)
        assert len(store) <= budget
        assert store.nbytes <= budget * 2 * grid_bytes + raw_bytes
    assert store.ts[0] == 999 and store.ts[-1] == 0
    assert len(store) >= budget // 2  # thinning halves at most
    assert store.xt(-1).shape == (530, 530, 3)  # looking renders the latest too
    assert store.nbytes == len(store) * 2 * grid_bytes


@pytest.mark.parametrize("max_frames,num_steps", [(10, 100), (7, 50), (2, 30), (200, 150), (8, 9)])
def test_thinning_is_even_and_keeps_the_first_and_latest_frames(max_frames, num_steps):
    store = FrameStore(max_frames=max_frames)
    for i, f in enumerate(frames(num_steps, torch.zeros(1, 1, 4, 4))):
        store.add(f)
        pos = store.positions
        assert len(store) <= max_frames
        assert pos[0] == 0 and pos[-1] == i  # first and latest
        kept = pos if pos[-1] % store.stride == 0 else pos[:-1]  # all but an off-stride latest
        assert kept == list(range(0, kept[-1] + 1, store.stride))  # evenly spaced, none missing
        ts = store.ts
        assert ts == sorted(ts, reverse=True) and len(set(ts)) == len(ts)
    if num_steps <= max_frames:
        assert len(store) == num_steps and store.stride == 1


def test_grids_are_the_exported_pixels_and_side_by_side_is_rgb():
    g = torch.Generator().manual_seed(0)
    xt, x0 = torch.rand((4, 1, 16, 16), generator=g) * 2 - 1, torch.rand((4, 1, 16, 16), generator=g) * 2 - 1
    store = FrameStore(nrow=2)
    store.add(Frame(0, 1, 0, xt, x0))
    assert np.array_equal(store.xt(0), to_uint8_grid(xt, 2)) and store.xt(0).shape == (38, 38, 1)
    assert np.array_equal(store.x0(-1), to_uint8_grid(x0, 2))
    both = store.side_by_side(0)
    assert both.shape == (38, 38 + SIDE_BY_SIDE_GAP + 38, 3) and both.dtype == np.uint8
    assert np.array_equal(both[:, :38], np.repeat(store.xt(0), 3, axis=2))
    assert np.array_equal(both[:, -38:], np.repeat(store.x0(0), 3, axis=2))
    assert not both[:, 38:38 + SIDE_BY_SIDE_GAP].any()


def test_clear_and_bad_budget():
    store = FrameStore(max_frames=3)
    for f in frames(10, torch.zeros(1, 3, 2, 2)):
        store.add(f)
    store.clear()
    assert len(store) == 0 and store.nbytes == 0 and store.stride == 1 and store.ts == []
    with pytest.raises(ValueError, match="max_frames"):
        FrameStore(max_frames=1)
