"""3x3 convolutions with a quarter of the multiplications: Winograd F(4x4, 3x3) on the CPU.

Sampling takes F(7x7, 3x3) where the image is made of whole 7x7 tiles, as the tutorial's 28, 14
and 7 pixel sides are (:func:`sampling_tile`): 81 products per 49 outputs, 0.73 of F(4x4, 3x3)'s at
28x28 and 0.56 at 14x14 and 7x7, where F(4x4, 3x3)'s last tiles lie half outside the image. Its
nine points round worse: up to about 2e-4 of the output's scale against 1e-5, still far below
bf16's 4e-3. At batch 100 on 2 AVX2 EPYC cores: 128 channels at 14x14 9.5 against 13.3 ms, 256 at
7x7 9.6 against 13.7, 64 at 28x28 11.1 against 12.1; a sampling step of the tutorial's network
0.961 against 1.027 s. Training keeps F(4x4, 3x3) and its smaller errors.

On an AVX2 CPU torch's direct convolutions already run at the matmul peak, and they are half of
a sampling step of the tutorial's network; oneDNN's Winograd kernels are AVX-512 only. This
computes each 4x4 output tile from a 6x6 input tile: the input tiles and the weights are
transformed, multiplied as 36 matrix products, and the products transformed back
(``core/_winograd.cpp``, register tiles that ran the products at 149-171 GFLOP/s on 2 AVX2 EPYC
cores, where ``torch.bmm`` ran them at 98-132). Up to :data:`FUSED_MAX_WEIGHTS` channel pairs one
compiled pass does all three a block of tiles at a time, within each core's cache; wider layers
go in rounds of images, each step over the whole round. At batch 100: a 64-channel 28x28 layer
13.2 ms (24.5 in rounds through ``torch.bmm``, 29 direct), 128 channels at 14x14 14.1 (22.7).
Training's weight gradient goes through ``torch.baddbmm`` (:func:`weight_grad`): the output
gradient's tiles (A dY A^T) times the input's, summed over the tiles, back through G.

It rounds differently from a direct convolution: its largest errors were 3-8x torch's fp32 ones
(about 4e-5 on outputs of size 6), far below what bf16 does, and autotune chooses it only where
it is faster (:class:`core.autotune.Choice`). The fused pass is faster than torch's direct
convolutions down to 8 channels (16 in and out at 28x28, batch 100: 1.45 against 2.33 ms); the
weights' gradient of layers narrower than :data:`MIN_WEIGHT_GRAD_CHANNELS` stays torch's.

The transforms are a compiled extension built at install time (``setup.py``); where it could not
be built, or the CPU lacks AVX2 and FMA, :func:`available` is false and nothing here is used.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from . import native

# The widest layers, in channels in x out, that the fused pass takes (:func:`conv3x3`); wider ones
# reuse too little of their 36 weight matrices per block of tiles: 256 x 256 at 7x7, batch 100,
# took 19.6-33.6 ms fused (blocks of 72 to 18 tiles) and 18.2 in rounds (through torch.bmm then),
# where 256 x 128 took 8.9 against 12.6.
FUSED_MAX_WEIGHTS = 256 * 128
# The same for F(7x7, 3x3), whose blocks hold 81 weight matrices: at 7x7, batch 100, 128 x 256
# took 17.4 ms fused and 5.8 in rounds, 128 x 128 2.8 against 2.9 (2 AVX2 EPYC cores).
F7_FUSED_MAX_WEIGHTS = 128 * 128
# The weights' gradient of narrower layers ran slower through torch.baddbmm's products than
# torch's own kernel: 32 images at 28x28, 16 channels in and out 1.14 against 1.00 ms, 8 channels 0.70 against 0.31.
MIN_WEIGHT_GRAD_CHANNELS = 32
# Where the transforms and products go in rounds (layers wider than FUSED_MAX_WEIGHTS, and the
# weights' gradient), images per round of transforms and products: as many as keep the two tile buffers
# within this many bytes. In sampling, so that they stay in the cache (a 64-channel 28x28 layer at
# batch 100: 19 ms in rounds of 4-16 images, 31 ms in one round of 100) while the 7x7 layers' products keep
# enough rows to run at the matmul peak (a 256-channel one: 14.3 ms in one round of 100 images,
# 16.1 in rounds of 16). In training, smaller: there the rounds' buffers come and go between the
# activations kept for the backward pass, and with 32 MB the glibc heap grew the training step's
# peak RSS from 1.17 to 1.36 GiB (`bench/train_step.py --paths fast`, the tutorial's config, 2
# cores), at the same speed.
ROUND_BYTES = 32_000_000
TRAINING_ROUND_BYTES = 4_000_000
# ...but never fewer tiles than this in a round (or the whole batch), which the products need to
# run near the matmul peak: 32 images of a 256-channel 7x7 layer in training took 7.5 ms in 4 MB
# rounds (52 tiles) and 6.3 ms in one round of 128 tiles (9.4 MB), 2 AVX2 EPYC cores.
MIN_ROUND_TILES = 128
# Outputs per tile side: F(4x4, 3x3) everywhere, F(7x7, 3x3) in sampling where it makes fewer
# products (:func:`sampling_tile`). Inputs per tile side are the tile's + 2.
TILE = 4
SAMPLING_TILE = 7
# F(7x7, 3x3)'s transforms cost more per output than F(4x4, 3x3)'s: sampling takes it only where
# its products are at most this share of F(4x4, 3x3)'s.
F7_PRODUCTS_AT_MOST = 0.8
# The weights' gradient goes through Winograd on images of at least this many pixels. 32 images,
# 2 AVX2 EPYC cores, torch's direct kernel against weight_grad: 64 channels at 28x28 14.8 against
# 5.6 ms, 128 at 14x14 12.6 against 6.8, 256 at 7x7 13.6 against 7.8, 256 at 2x2 5.6 against 3.3,
# but at 1x1 2.7 against 3.5: one pixel uses a ninth of its tile.
MIN_WEIGHT_GRAD_PIXELS = 2 * 2


def available() -> bool:
    """Whether this install and this CPU run the transforms."""
    return native.kernels("_winograd") is not None


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a 3x3, stride 1, padding 1 convolution of ``x`` by ``weight`` is this module's case:
    fp32 on the CPU, ``x`` in channels-last memory, channels in and out multiples of 8."""
    cout, cin = weight.shape[:2]
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() == 4
            and weight.shape[2:] == (3, 3) and x.shape[1] == cin
            and cin % 8 == 0 and cout % 8 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and available())


def weight_grad_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`weight_grad` is the faster way to the weights' gradient: where :func:`applies`,
    with at least :data:`MIN_WEIGHT_GRAD_CHANNELS` channels in and out, on images of at least
    :data:`MIN_WEIGHT_GRAD_PIXELS`."""
    return (applies(x, weight) and min(weight.shape[:2]) >= MIN_WEIGHT_GRAD_CHANNELS
            and x.shape[2] * x.shape[3] >= MIN_WEIGHT_GRAD_PIXELS)


def sampling_tile(h: int, w: int) -> int:
    """The tile that sampling convolves ``h`` x ``w`` images with: :data:`SAMPLING_TILE` where its
    products, counted over whole tiles, are at most :data:`F7_PRODUCTS_AT_MOST` of F(4x4, 3x3)'s
    (28x28, 14x14 and 7x7 images: 0.73, 0.56, 0.56; 32x32 1.03; 8x8 2.25), else :data:`TILE`."""
    def products(tile: int) -> int:
        return -(-h // tile) * -(-w // tile) * (tile + 2) ** 2
    return SAMPLING_TILE if products(SAMPLING_TILE) <= F7_PRODUCTS_AT_MOST * products(TILE) else TILE


def tile_of(u: torch.Tensor) -> int:
    """The tile size that transformed weights ``u`` were made for."""
    return round(u.shape[0] ** 0.5) - 2


def transform_weight(weight: torch.Tensor, transposed: bool = False, tile: int = TILE) -> torch.Tensor:
    """(C_out, C_in, 3, 3) weights as the (tile + 2)^2 (C_in, C_out) matrices G g G^T that
    :func:`conv3x3` takes, for weights where :func:`applies`; each matrix's memory is laid out in
    panels of 16 columns, as the kernels' products read it (``packed_at`` in ``core/_matmul.h``).

    ``transposed``: those of the transposed convolution (the input's gradient), whose kernel is
    the weights turned by 180 degrees with inputs and outputs swapped: (positions, C_out, C_in).
    ``tile``: :data:`TILE`, or :data:`SAMPLING_TILE` for sampling (:func:`sampling_tile`).
    """
    w = weight.detach().float().contiguous()
    cout, cin = w.shape[:2]
    rows, cols = (cin, cout) if transposed else (cout, cin)
    u = torch.empty(((tile + 2) ** 2, cols, rows))
    native.kernels("_winograd").weights(w.data_ptr(), u.data_ptr(), rows, cols, transposed, tile,
                                        torch.get_num_threads())
    return u


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None,
            residual: torch.Tensor | None = None, round_bytes: int = ROUND_BYTES) -> torch.Tensor:
    """``conv2d(x, weight, padding=1) + bias + residual`` for ``x`` where :func:`applies`, with ``u``
    from :func:`transform_weight`; channels-last like ``x``.

    ``bias`` is (C_out,), or (N, C_out) for one per image (the network adds its time embedding
    so); ``residual`` is shaped like the output. Both are added as the tiles are written, which
    saves a pass over the output each. ``round_bytes``: see :data:`ROUND_BYTES`, for the layers
    wider than :data:`FUSED_MAX_WEIGHTS`.
    """
    n, cin, h, w = x.shape
    cout = u.shape[2]
    tile = tile_of(u)
    kernels = native.kernels("_winograd")
    threads = torch.get_num_threads()
    out = torch.empty((n, cout, h, w), memory_format=torch.channels_last)
    if bias is not None:
        bias = bias.detach().float().contiguous()
    bias_per_image = bias is not None and bias.dim() == 2
    if residual is not None:
        residual = residual.contiguous(memory_format=torch.channels_last)
    if cin * cout <= (F7_FUSED_MAX_WEIGHTS if tile == SAMPLING_TILE else FUSED_MAX_WEIGHTS):
        kernels.conv(x.data_ptr(), u.data_ptr(), _address(bias, 0), cout if bias_per_image else 0,
                     _address(residual, 0), out.data_ptr(), n, h, w, cin, cout, tile, threads)
        return out
    for first, count, tiles, products in _rounds(x.shape, cout, round_bytes, tile):
        kernels.input(x[first].data_ptr(), tiles.data_ptr(), tiles.stride(0), count, h, w, cin, tile, threads)
        kernels.products(tiles.data_ptr(), tiles.stride(0), u.data_ptr(), products.data_ptr(), products.stride(0),
                         tiles.shape[1], cin, cout, tile, threads)
        kernels.output(products.data_ptr(), products.stride(0), _address(bias, first if bias_per_image else 0),
                       cout if bias_per_image else 0, _address(residual, first), out[first].data_ptr(),
                       count, h, w, cout, tile, threads)
    return out


def _rounds(shape: torch.Size, cout: int, round_bytes: int,
            tile: int = TILE) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(first image, images, input tiles, product tiles) for each round of as many images of an
    input of ``shape`` as keep the two tile buffers within ``round_bytes``, or make
    :data:`MIN_ROUND_TILES` tiles; the buffers are made once, and again for a shorter last round.
    Each buffer is (positions, tiles, channels) with its positions the kernels' ``POSITION_PAD``
    floats further apart than their tiles need (see ``core/_winograd.cpp``)."""
    n, cin, h, w = shape
    positions = (tile + 2) ** 2
    tiles_per_image = -(-h // tile) * -(-w // tile)
    by_bytes = round_bytes // (positions * tiles_per_image * (cin + cout) * 4)
    images = min(n, max(by_bytes, -(-MIN_ROUND_TILES // tiles_per_image)))
    for first in range(0, n, images):
        count = min(images, n - first)
        if first == 0 or count < images:
            rows = count * tiles_per_image
            tiles, products = _positions(positions, rows, cin), _positions(positions, rows, cout)
        yield first, count, tiles, products


def _positions(positions: int, rows: int, channels: int) -> torch.Tensor:
    """An empty (positions, rows, channels) buffer of tiles, its positions padded apart."""
    pad = native.kernels("_winograd").POSITION_PAD
    return torch.empty_strided((positions, rows, channels), (rows * channels + pad, channels, 1))


def _address(t: torch.Tensor | None, first: int) -> int:
    """Where ``t[first]`` starts (0 for no tensor), as the kernels take it."""
    return 0 if t is None else t[first].data_ptr()


class WeightCache:
    """One layer's transformed weights for sampling, where the same weights serve every step:
    made again only when the weights change (in place or for other ones). They take 36/9 of the
    weights' size in F(4x4, 3x3) and 81/9 in F(7x7, 3x3): the tutorial's network samples with
    1.23 GiB of peak RSS where it took 1.04 with F(4x4, 3x3) alone. Training transforms them in
    every pass instead, since they change every step."""

    def __init__(self) -> None:
        self._key: tuple[int, int, int] | None = None
        self._u: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, tile: int = TILE) -> torch.Tensor:
        # weights made under torch.inference_mode() have no version counter; they cannot change
        # outside it
        key = (weight.data_ptr(), 0 if weight.is_inference() else weight._version, tile)
        if self._u is None or key != self._key:
            self._key, self._u = key, transform_weight(weight, tile=tile)
        return self._u


def weight_grad(x: torch.Tensor, grad: torch.Tensor, round_bytes: int = TRAINING_ROUND_BYTES) -> torch.Tensor:
    """The weights' gradient of ``conv2d(x, weight, padding=1)`` given the output's ``grad``, for
    ``x`` where :func:`weight_grad_applies`: the input tiles' transform times the products'
    gradient (A dY A^T per output tile) as 36 matrix products summed over the tiles, then taken
    back through G (G^T M G per channel pair). In rounds of ``round_bytes`` of tiles: 32 images
    of a 64-channel 28x28 layer took 6.1 ms in rounds of 4 MB and 15.6 in one round (2 AVX2 EPYC
    cores)."""
    n, cin, h, w = x.shape
    cout = grad.shape[1]
    kernels = native.kernels("_winograd")
    threads = torch.get_num_threads()
    dy = grad.float().contiguous(memory_format=torch.channels_last)
    du = torch.zeros((36, cin, cout))
    for first, count, tiles, products in _rounds(x.shape, cout, round_bytes):
        kernels.input(x[first].data_ptr(), tiles.data_ptr(), tiles.stride(0), count, h, w, cin, TILE, threads)
        kernels.output_grad(dy[first].data_ptr(), products.data_ptr(), products.stride(0), count, h, w, cout, threads)
        du.baddbmm_(tiles.transpose(1, 2), products)
    dw = torch.empty((cout, cin, 3, 3))
    kernels.weights_grad(du.data_ptr(), dw.data_ptr(), cin, cout, threads)
    return dw
