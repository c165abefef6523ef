"""A bounded record of a sampling run for scrubbing and animation export.

1000 steps of 64 RGB 64 px images are 3 MB of float32 per frame and per tensor (6 GB for the run),
so each frame is kept only as two uint8 grids (xt and the x0 estimate, 0.8 MB each) and at most
``max_frames`` of them: when the store fills up it drops every other stored frame and from then
on keeps every second frame it is given (the keep-stride doubles), so the stored frames stay
evenly spread over the whole run whatever its length. The first frame and the latest frame are
always kept.

Only frames that stay are rendered when added. The latest frame, when it falls between two kept
ones, is held as the sampler gave it and rendered only if someone looks at it before the next
frame replaces it, so a long run renders about 2 x max_frames pairs of grids, not one per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .exports import to_rgb, to_uint8_grid
from .samplers import Frame

#: Columns of black between the xt and x0 grids in :meth:`FrameStore.side_by_side`.
SIDE_BY_SIDE_GAP = 4


@dataclass
class _Stored:
    n: int  # position in the run: the n-th frame added
    t: int
    frame: Frame | None  # the float tensors, until rendered
    xt: np.ndarray | None = None
    x0: np.ndarray | None = None

    def render(self, nrow: int | None) -> _Stored:
        if self.frame is not None:
            self.xt, self.x0 = to_uint8_grid(self.frame.xt, nrow), to_uint8_grid(self.frame.x0, nrow)
            self.frame = None
        return self

    @property
    def nbytes(self) -> int:
        if self.frame is not None:
            return sum(x.element_size() * x.nelement() for x in (self.frame.xt, self.frame.x0))
        return self.xt.nbytes + self.x0.nbytes


class FrameStore:
    """Frames of one sampling run as uint8 (H, W, C) grids, at most ``max_frames`` of them.

    ``nrow`` is the number of images per grid row (default: square-ish). Frames are expected in
    sampling order (descending t); index 0 is the earliest stored, -1 the latest. Do not modify a
    frame's tensors after adding it: the latest one may be rendered later.
    """

    def __init__(self, max_frames: int = 200, nrow: int | None = None) -> None:
        if max_frames < 2:
            raise ValueError(f"max_frames must be at least 2 (the first and the latest frame); got {max_frames}")
        self.max_frames = max_frames
        self.nrow = nrow
        self.clear()

    def clear(self) -> None:
        """Forget every frame, ready for the next run."""
        self.stride = 1  # keep every stride-th frame added, plus the latest
        self._seen = 0
        self._kept: list[_Stored] = []
        self._latest: _Stored | None = None

    def add(self, frame: Frame) -> None:
        n = self._seen
        self._seen += 1
        entry = _Stored(n, frame.t, frame)
        if n % self.stride == 0:
            self._kept.append(entry.render(self.nrow))
        self._latest = entry
        while len(self._frames()) > self.max_frames:
            # kept entries sit at n = 0, stride, 2 stride, ...: [::2] leaves multiples of 2 stride
            self._kept = self._kept[::2]
            self.stride *= 2

    def _frames(self) -> list[_Stored]:
        if self._latest is None or self._latest is self._kept[-1]:
            return self._kept
        return [*self._kept, self._latest]

    def _get(self, i: int) -> _Stored:
        return self._frames()[i].render(self.nrow)

    def __len__(self) -> int:
        return len(self._frames())

    @property
    def ts(self) -> list[int]:
        """The timestep of each stored frame."""
        return [e.t for e in self._frames()]

    @property
    def positions(self) -> list[int]:
        """Which frame of the run (0 = first added) each stored frame was."""
        return [e.n for e in self._frames()]

    def xt(self, i: int) -> np.ndarray:
        """The grid of x_t at stored frame ``i``, uint8 (H, W, C)."""
        return self._get(i).xt

    def x0(self, i: int) -> np.ndarray:
        """The grid of the x0 estimate at stored frame ``i``, uint8 (H, W, C)."""
        return self._get(i).x0

    def side_by_side(self, i: int) -> np.ndarray:
        """The xt grid, a black gap, then the x0 grid: (H, W, 3) uint8 for display and export."""
        e = self._get(i)
        gap = np.zeros((e.xt.shape[0], SIDE_BY_SIDE_GAP, 3), dtype=np.uint8)
        return np.concatenate([to_rgb(e.xt), gap, to_rgb(e.x0)], axis=1)

    @property
    def nbytes(self) -> int:
        """Memory held: the stored grids, plus the latest frame's tensors while unrendered."""
        return sum(e.nbytes for e in self._frames())
