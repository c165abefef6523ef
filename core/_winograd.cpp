// Winograd F(4x4, 3x3) convolutions for channels-last fp32 activations on AVX2+FMA CPUs, and
// F(7x7, 3x3) for sampling (struct F7): the
// tile and weight transforms, and for layers up to 256 x 128 channels the whole convolution
// (fused_conv: each thread transforms a block of tiles, multiplies them with its own register
// tiles and transforms the products back while they are in its cache). Wider layers go in rounds
// of images, the products of a round by the same register tiles (matmul()); those of training's
// weight gradient, summed over the tiles, through torch.baddbmm (core/winograd.py).
//
// Why it exists: on an AVX2 CPU the 3x3 convolutions are half of a sampling step of the
// tutorial's network, and torch's (oneDNN's) direct convolutions already run them at the matmul
// peak; oneDNN's Winograd kernels are AVX-512 only. F(4x4, 3x3) computes each 4x4 output tile
// from a 6x6 input tile with 36 multiplications per channel pair instead of 144, so the products
// are a quarter of the direct convolution's where the image is a multiple of 4 (7x7: a third).
//
// The transforms (Lavin & Gray 2016, points 0, +-1, +-2, infinity): V = B^T d B for each 6x6
// input tile d, Y = A^T M A for each 6x6 product tile M, and U = G g G^T for each 3x3 kernel g
// (once per sampling run, in every pass in training); for the weights' gradient in training,
// A dY A^T for each 4x4 tile of the output's gradient, and G^T M G for the products' gradient
// summed over the tiles. All are adds and multiplies by small constants, vectorised along the
// channels, which channels-last memory keeps contiguous.
//
// Layout: x (images, h, w, c) and y (images, h, w, k) contiguous fp32; v (36, tiles, c) and
// m (36, tiles, k) with tiles numbered (image, tile row, tile column), ceil(h/4) x ceil(w/4)
// tiles per image (for F7: 81 positions, tiles of 7x7 outputs), each position's rows contiguous
// and the positions a stride apart (POSITION_PAD); c and k multiples of 8. Zero padding of 1 on
// every side, stride 1. The module is plain CPython: core/winograd.py passes data pointers, and
// the GIL is released while the threads run.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "_avx2.h"
#include "_matmul.h"

// Floats between one transform position's tiles (or products) and the next position's beyond
// the tiles themselves: a cache line, so that the N^2 vectors a tile's transform writes (or
// reads), a position apart, fall into all of L1's 64 sets. Without it, where the positions lie a
// multiple of 4 KB apart they all share one set of 8 lines: the input transform of a round of 100
// 256-channel 7x7 images took 1.22 against 0.47 ms, the output transform 1.07 against 0.39; in
// the fused pass, 6 tiles of 64 channels, 24 lines apart, use 8 sets, and a 64-channel 28x28
// layer took 10.7 against 10.25 ms, 64 in and 128 out at 14x14 4.35 against 4.19 (batch 100, 2
// AVX2 EPYC cores; 128 x 128 the same). core/winograd.py lays its rounds out the same way.
constexpr long POSITION_PAD = 16;

#ifdef CORE_X86
namespace {

struct Shape {
    long images;
    int h, w, channels;
    int m = 4;  // outputs per tile side: 4 (F4) or 7 (F7)
    int tile_rows() const { return (h + m - 1) / m; }
    int tile_cols() const { return (w + m - 1) / m; }
    long tiles() const { return images * tile_rows() * tile_cols(); }
};

// tile(t, image, row, col) for tile t of s, (row, col) the top-left output of its image's tile.
template <typename Tile>
void at_tile(const Shape& s, long t, Tile tile) {
    const int tr = s.tile_rows(), tc = s.tile_cols();
    tile(t, t / (tr * tc), static_cast<int>(t / tc % tr) * s.m, static_cast<int>(t % tc) * s.m);
}

// B^T applied to six vectors (a column or a row of a 6x6 tile): B^T is
//   [4  0 -5  0  1  0]
//   [0 -4 -4  1  1  0]
//   [0  4 -4 -1  1  0]
//   [0 -2 -1  2  1  0]
//   [0  2 -1 -2  1  0]
//   [0  4  0 -5  0  1]
AVX2_FN inline void bt6(const __m256 d[6], __m256 out[6]) {
    const __m256 four = _mm256_set1_ps(4.0f), minus5 = _mm256_set1_ps(-5.0f), two = _mm256_set1_ps(2.0f);
    const __m256 a = _mm256_fmadd_ps(minus5, d[2], d[4]);           // d4 - 5 d2
    const __m256 b = _mm256_fnmadd_ps(four, d[2], d[4]);            // d4 - 4 d2
    const __m256 c = _mm256_fnmadd_ps(four, d[1], d[3]);            // d3 - 4 d1
    const __m256 e = _mm256_sub_ps(d[4], d[2]);                      // d4 - d2
    const __m256 f = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));  // 2 (d3 - d1)
    out[0] = _mm256_fmadd_ps(four, d[0], a);
    out[1] = _mm256_add_ps(b, c);
    out[2] = _mm256_sub_ps(b, c);
    out[3] = _mm256_add_ps(e, f);
    out[4] = _mm256_sub_ps(e, f);
    out[5] = _mm256_fmadd_ps(four, d[1], _mm256_fmadd_ps(minus5, d[3], d[5]));
}

// A^T applied to six vectors: A^T is
//   [1  1  1  1  1  0]
//   [0  1 -1  2 -2  0]
//   [0  1  1  4  4  0]
//   [0  1 -1  8 -8  1]
AVX2_FN inline void at6(const __m256 m[6], __m256 out[4]) {
    const __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
    const __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
    out[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
    out[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d34, d12);
    out[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), s34, s12);
    out[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d34, d12), m[5]);
}

// The address of the 8 channels from c of pixel (y, x) of an image, or of 8 zeros where the pixel
// lies in the padding: chosen by a mask rather than a load branched over, since with F(7x7, 3x3)'s
// tiles most tiles touch the padding. (Branching per pixel, layers at batch 100 took 1.00-1.01x
// the time with 32 to 128 channels, 1.06x with 16, 2 AVX2 EPYC cores; gcc compiles a ?: of the
// two addresses to the same branches.)
AVX2_FN inline const float* pixel_or_zeros(const Shape& s, const float* image, int y, int x, int c) {
    alignas(32) static const float zeros[8] = {};
    const bool inside = static_cast<unsigned>(y) < static_cast<unsigned>(s.h) &&
                        static_cast<unsigned>(x) < static_cast<unsigned>(s.w);
    const auto mask = static_cast<std::uintptr_t>(0) - inside;
    const auto pixel = reinterpret_cast<std::uintptr_t>(image + (static_cast<long>(y) * s.w + x) * s.channels + c);
    return reinterpret_cast<const float*>((pixel & mask) | (reinterpret_cast<std::uintptr_t>(zeros) & ~mask));
}

// One input tile, 8 channels from c: the NxN patch at (row, col) (its top-left corner, which may
// lie in the padding) becomes N^2 vectors of v, one per transform position.
template <typename T>
AVX2_FN inline void input_tile(const Shape& s, const float* image, int row, int col, int c, float* v, long stride) {
    constexpr int N = T::N;
    __m256 t[N][N];  // t = B^T d, column by column
    for (int j = 0; j < N; ++j) {
        __m256 d[N];
        for (int i = 0; i < N; ++i) d[i] = _mm256_loadu_ps(pixel_or_zeros(s, image, row + i, col + j, c));
        __m256 col_out[N];
        T::bt(d, col_out);
        for (int i = 0; i < N; ++i) t[i][j] = col_out[i];
    }
    for (int i = 0; i < N; ++i) {
        __m256 out[N];
        T::bt(t[i], out);
        for (int j = 0; j < N; ++j) _mm256_storeu_ps(v + (i * N + j) * stride + c, out[j]);
    }
}

// tile(t, image, row, col) for every tile t of s, (row, col) the top-left output of its image's
// tile, tiles split over OpenMP threads (torch's own, see core/_narrow_attention.cpp).
template <typename Tile>
void for_each_tile(const Shape& s, int threads, Tile tile) {
    const long tiles = s.tiles();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < tiles; ++t) at_tile(s, t, tile);
}

// x (images, h, w, c) -> v (N^2, tiles, c), positions `stride` floats apart: each tile's NxN
// input patch starts one pixel up and left of its outputs.
template <typename T>
void input_transform(const Shape& s, const float* x, float* v, long stride, int threads) {
    for_each_tile(s, threads, [&](long t, long image, int row, int col) {
        const float* src = x + image * s.h * s.w * s.channels;
        for (int c = 0; c < s.channels; c += 8) input_tile<T>(s, src, row - 1, col - 1, c, v + t * s.channels, stride);
    });
}

// What the output transform adds to A^T M A: a bias per channel, for every image alike or each
// its own (the network's time embedding), and a tensor shaped like the output (a residual).
struct Addends {
    const float* bias;  // (channels,) or (images, channels); or null
    long bias_stride;   // 0: one bias for every image; channels: one per image
    const float* residual;  // like y; or null
};

// One output tile of the image-th image, 8 channels from k: A^T M A plus the addends, the MxM
// outputs that lie inside the image written to y.
template <typename T>
AVX2_FN inline void output_tile(const Shape& s, const float* m, long stride, const Addends& add, long image,
                                float* y, int row, int col, int k) {
    constexpr int N = T::N, M = T::M;
    __m256 t[M][N];  // t = A^T M, column by column
    for (int j = 0; j < N; ++j) {
        __m256 in[N], out[M];
        for (int i = 0; i < N; ++i) in[i] = _mm256_loadu_ps(m + (i * N + j) * stride + k);
        T::at(in, out);
        for (int i = 0; i < M; ++i) t[i][j] = out[i];
    }
    const __m256 b = add.bias ? _mm256_loadu_ps(add.bias + image * add.bias_stride + k) : _mm256_setzero_ps();
    const long first = image * s.h * s.w * s.channels;
    for (int i = 0; i < M && row + i < s.h; ++i) {
        __m256 out[M];
        T::at(t[i], out);
        for (int j = 0; j < M && col + j < s.w; ++j) {
            const long at = first + (static_cast<long>(row + i) * s.w + col + j) * s.channels + k;
            __m256 v = _mm256_add_ps(out[j], b);
            if (add.residual) v = _mm256_add_ps(v, _mm256_loadu_ps(add.residual + at));
            _mm256_storeu_ps(y + at, v);
        }
    }
}

// m (N^2, tiles, k), positions `stride` floats apart -> y (images, h, w, k), with s.channels = k.
template <typename T>
void output_transform(const Shape& s, const float* m, long stride, const Addends& add, float* y, int threads) {
    for_each_tile(s, threads, [&](long t, long image, int row, int col) {
        for (int k = 0; k < s.channels; k += 8) output_tile<T>(s, m + t * s.channels, stride, add, image, y, row, col, k);
    });
}

// A applied to four vectors, A^T's transpose: the adjoint of at6, which takes an output tile's
// gradient back to its product tile's.
AVX2_FN inline void a6(const __m256 d[4], __m256 out[6]) {
    const __m256 s02 = _mm256_add_ps(d[0], d[2]), s13 = _mm256_add_ps(d[1], d[3]);
    const __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), d[2], d[0]);
    const __m256 f = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), d[3], _mm256_mul_ps(_mm256_set1_ps(2.0f), d[1]));
    out[0] = d[0];
    out[1] = _mm256_add_ps(s02, s13);
    out[2] = _mm256_sub_ps(s02, s13);
    out[3] = _mm256_add_ps(e, f);
    out[4] = _mm256_sub_ps(e, f);
    out[5] = d[3];
}

// One output tile's gradient, 8 channels from k: A dY A^T, the 36 vectors of the products'
// gradient (outputs outside the image count as zero).
AVX2_FN inline void output_grad_tile(const Shape& s, const float* image, int row, int col, int k, float* m,
                                     long stride) {
    __m256 t[6][4];  // t = A dY, column by column
    for (int j = 0; j < 4; ++j) {
        __m256 d[4], out[6];
        const int x = col + j;
        for (int i = 0; i < 4; ++i) d[i] = _mm256_loadu_ps(pixel_or_zeros(s, image, row + i, x, k));
        a6(d, out);
        for (int i = 0; i < 6; ++i) t[i][j] = out[i];
    }
    for (int i = 0; i < 6; ++i) {
        __m256 out[6];
        a6(t[i], out);
        for (int j = 0; j < 6; ++j) _mm256_storeu_ps(m + (i * 6 + j) * stride + k, out[j]);
    }
}

// dy (images, h, w, k) -> m (36, tiles, k), positions `stride` floats apart: the products'
// gradient, for the weights' gradient.
void output_grad_transform(const Shape& s, const float* dy, float* m, long stride, int threads) {
    for_each_tile(s, threads, [&](long t, long image, int row, int col) {
        const float* src = dy + image * s.h * s.w * s.channels;
        for (int k = 0; k < s.channels; k += 8) output_grad_tile(s, src, row, col, k, m + t * s.channels, stride);
    });
}

// G applied to three vectors (a row or a column of a 3x3 kernel): G is
//   [ 1/4     0     0 ]
//   [-1/6  -1/6  -1/6 ]
//   [-1/6   1/6  -1/6 ]
//   [1/24  1/12   1/6 ]
//   [1/24 -1/12   1/6 ]
//   [   0     0     1 ]
AVX2_FN inline void g3(const __m256 a[3], __m256 out[6]) {
    const __m256 s = _mm256_add_ps(a[0], a[2]);
    const __m256 big = _mm256_fmadd_ps(_mm256_set1_ps(1.0f / 24), a[0], _mm256_mul_ps(_mm256_set1_ps(1.0f / 6), a[2]));
    const __m256 mid = _mm256_mul_ps(_mm256_set1_ps(1.0f / 12), a[1]);
    out[0] = _mm256_mul_ps(_mm256_set1_ps(0.25f), a[0]);
    out[1] = _mm256_mul_ps(_mm256_set1_ps(-1.0f / 6), _mm256_add_ps(s, a[1]));
    out[2] = _mm256_mul_ps(_mm256_set1_ps(-1.0f / 6), _mm256_sub_ps(s, a[1]));
    out[3] = _mm256_add_ps(big, mid);
    out[4] = _mm256_sub_ps(big, mid);
    out[5] = a[2];
}

// acc + sum_j a[j] x[j] over the columns j from `first` by `step`, for a row a of a constant
// matrix, its zero entries skipped: the loops unroll, so the tests fold away at compile time.
template <int C>
AVX2_FN inline __m256 row_sum(const float (&a)[C], const __m256* x, __m256 acc, int first = 0, int step = 1) {
#pragma GCC unroll 16
    for (int j = first; j < C; j += step)
        if (a[j] != 0.0f) acc = _mm256_fmadd_ps(_mm256_set1_ps(a[j]), x[j], acc);
    return acc;
}

// out[i] = sum_j a[i][j] x[j] for a constant matrix a.
template <int R, int C>
AVX2_FN inline void apply(const float (&a)[R][C], const __m256* x, __m256* out) {
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) out[i] = row_sum(a[i], x, _mm256_setzero_ps());
}

// The tiles: M outputs per side of a tile, computed from N = M + 2 inputs; bt, at and g apply B^T,
// A^T and G to a column or row of a tile or kernel.
//
// F4, F(4x4, 3x3): the transforms above, all that training uses.
struct F4 {
    static constexpr int M = 4, N = 6;
    AVX2_FN static void bt(const __m256* d, __m256* out) { bt6(d, out); }
    AVX2_FN static void at(const __m256* m, __m256* out) { at6(m, out); }
    AVX2_FN static void g(const __m256* a, __m256* out) { g3(a, out); }
};

// F7, F(7x7, 3x3), for sampling: 81 products per 49 outputs where F4 takes 36 per 16, so 0.73 of
// F4's products on 28x28 images and 0.56 on 14x14 and 7x7 (F4's last tiles there lie half
// outside the image). Points 0, +-1, +-2, +-1/2, -3/4 and infinity (Toom-Cook; of the ninth
// points tried, -3/4 rounded least): its largest errors, relative to the largest output of 64
// channels, were 4.4e-5 in a float64 model of fp32 rounding, where F4's were 2.3e-6 and a direct
// fp32 convolution's 1.1e-7 (bf16 rounds each input to 4e-3). B^T is dense, so the transforms
// cost 2-3 times F4's per output: small against the products from 32 channels up.
struct F7 {
    static constexpr int M = 7, N = 9;
    static constexpr float AT[7][9] = {
        {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0},
        {0, 1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, -0.75f, 0},
        {0, 1.0f, 1.0f, 4.0f, 4.0f, 0.25f, 0.25f, 0.5625f, 0},
        {0, 1.0f, -1.0f, 8.0f, -8.0f, 0.125f, -0.125f, -0.421875f, 0},
        {0, 1.0f, 1.0f, 16.0f, 16.0f, 0.0625f, 0.0625f, 0.31640625f, 0},
        {0, 1.0f, -1.0f, 32.0f, -32.0f, 0.03125f, -0.03125f, -0.237304688f, 0},
        {0, 1.0f, 1.0f, 64.0f, 64.0f, 0.015625f, 0.015625f, 0.177978516f, 1.0f}};
    static constexpr float G[9][3] = {
        {1.0f, 0, 0}, {1.0f, 1.0f, 1.0f}, {1.0f, -1.0f, 1.0f}, {1.0f, 2.0f, 4.0f}, {1.0f, -2.0f, 4.0f},
        {1.0f, 0.5f, 0.25f}, {1.0f, -0.5f, 0.25f}, {1.0f, -0.75f, 0.5625f}, {0, 0, 1.0f}};
    static constexpr float BT[9][9] = {
        {1.0f, 1.33333333f, -5.25f, -7.0f, 5.25f, 7.0f, -1.0f, -1.33333333f, 0},
        {0, -0.0952380952f, -0.222222222f, 0.277777778f, 0.944444444f, 0.444444444f, -0.222222222f, -0.126984127f, 0},
        {0, -0.666666667f, -0.222222222f, 3.72222222f, 0.944444444f, -4.44444444f, -0.222222222f, 0.888888889f, 0},
        {0, 0.00151515152f, 0.00277777778f, -0.00656565657f, -0.0138888889f, 0.00101010101f, 0.0111111111f,
         0.00404040404f, 0},
        {0, 0.00333333333f, 0.00277777778f, -0.0188888889f, -0.0138888889f, 0.0244444444f, 0.0111111111f,
         -0.00888888889f, 0},
        {0, 0.853333333f, 2.84444444f, 1.20888889f, -3.55555556f, -2.63111111f, 0.711111111f, 0.568888889f, 0},
        {0, -4.26666667f, 2.84444444f, 16.7111111f, -3.55555556f, -15.2888889f, 0.711111111f, 2.84444444f, 0},
        {0, 2.83705628f, 0, -14.8945455f, 0, 14.8945455f, 0, -2.83705628f, 0},
        {0, -0.75f, -1.0f, 3.9375f, 5.25f, -3.9375f, -5.25f, 0.75f, 1.0f}};
    // B^T: the rows of each pair of points +-p share their even columns, summed once (52
    // operations where the matrix has 62 entries)
    AVX2_FN static void bt(const __m256* d, __m256* out) {
#pragma GCC unroll 3
        for (int p = 1; p < 7; p += 2) {
            const __m256 even = row_sum(BT[p], d, _mm256_setzero_ps(), 2, 2);
            out[p] = row_sum(BT[p], d, even, 1, 2);
            out[p + 1] = row_sum(BT[p + 1], d, even, 1, 2);
        }
        for (int i : {0, 7, 8}) out[i] = row_sum(BT[i], d, _mm256_setzero_ps());
    }
    // A^T by the pairs of points +-p: p^i (m_p + (-1)^i m_-p), from their sums and differences
    // (29 operations where the matrix has 51 entries)
    AVX2_FN static void at(const __m256* m, __m256* out) {
        const __m256 sum[3] = {_mm256_add_ps(m[1], m[2]), _mm256_add_ps(m[3], m[4]), _mm256_add_ps(m[5], m[6])};
        const __m256 diff[3] = {_mm256_sub_ps(m[1], m[2]), _mm256_sub_ps(m[3], m[4]), _mm256_sub_ps(m[5], m[6])};
        for (int i = 0; i < 7; ++i) {
            const __m256* x = i % 2 ? diff : sum;
            __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(AT[i][3]), x[1], x[0]);
            y = _mm256_fmadd_ps(_mm256_set1_ps(AT[i][5]), x[2], y);
            out[i] = _mm256_fmadd_ps(_mm256_set1_ps(AT[i][7]), m[7], y);
        }
        out[0] = _mm256_add_ps(out[0], m[0]);
        out[6] = _mm256_add_ps(out[6], m[8]);
    }
    AVX2_FN static void g(const __m256* a, __m256* out) { apply(G, a, out); }
};

// The 3x3 kernels w (rows, cols, 3, 3) -> u (N^2, cols, rows): G g G^T per kernel, 8 rows at a
// time, gathered. With `turned`, those of the transposed convolution: w (cols, rows, 3, 3), each
// kernel turned by 180 degrees, -> u (N^2, cols, rows) (see core/winograd.py). Each of the N^2
// matrices is packed as the products read it (packed_at, core/_matmul.h).
template <typename T>
AVX2_FN void weight_transform(const float* w, float* u, int rows, int cols, bool turned, int threads) {
    constexpr int N = T::N;
    // the element (r, c, tap) of the kernels in the order u wants them
    const long r_step = turned ? 9 : 9L * cols, c_step = turned ? 9L * rows : 9;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int c = 0; c < cols; ++c)
        for (int r = 0; r < rows; r += 8) {
            const __m256i at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                  _mm256_set1_epi32(static_cast<int>(r_step)));
            const float* base = w + r * r_step + c * c_step;
            __m256 t[N][3];  // G g, column by column
            for (int b = 0; b < 3; ++b) {
                __m256 col[3], out[N];
                for (int a = 0; a < 3; ++a) {
                    const int tap = turned ? 8 - (3 * a + b) : 3 * a + b;
                    col[a] = _mm256_i32gather_ps(base + tap, at, 4);
                }
                T::g(col, out);
                for (int i = 0; i < N; ++i) t[i][b] = out[i];
            }
            for (int i = 0; i < N; ++i) {
                __m256 out[N];
                T::g(t[i], out);
                for (int j = 0; j < N; ++j)
                    _mm256_storeu_ps(u + (i * N + j) * static_cast<long>(cols) * rows + packed_at(c, r, cols, rows),
                                     out[j]);
            }
        }
}

// G^T applied to six vectors (a row or a column of a 6x6 tile), the adjoint of g3: G^T is
//   [1/4  -1/6  -1/6  1/24   1/24  0]
//   [  0  -1/6   1/6  1/12  -1/12  0]
//   [  0  -1/6  -1/6   1/6    1/6  1]
AVX2_FN inline void gt6(const __m256 m[6], __m256 out[3]) {
    const __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
    const __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
    const __m256 sixth = _mm256_set1_ps(1.0f / 6);
    out[0] = _mm256_fmadd_ps(_mm256_set1_ps(0.25f), m[0],
                             _mm256_fmsub_ps(_mm256_set1_ps(1.0f / 24), s34, _mm256_mul_ps(sixth, s12)));
    out[1] = _mm256_fmsub_ps(_mm256_set1_ps(1.0f / 12), d34, _mm256_mul_ps(sixth, d12));
    out[2] = _mm256_fmadd_ps(sixth, _mm256_sub_ps(s34, s12), m[5]);
}

// The products' weight gradients du (36, cin, cout) -> the kernels' dw (cout, cin, 3, 3): G^T M G
// for each channel pair, 8 outputs at a time along cout and scattered to their kernels. (As an
// einsum through torch this took 9.8 ms for 256 channels, more than the rest of the gradient.)
AVX2_FN void weight_grad_transform(const float* du, float* dw, int cin, int cout, int threads) {
    const long stride = static_cast<long>(cin) * cout;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int c = 0; c < cin; ++c)
        for (int k = 0; k < cout; k += 8) {
            __m256 t[3][6];  // G^T M, column by column
            for (int j = 0; j < 6; ++j) {
                __m256 in[6], out[3];
                for (int i = 0; i < 6; ++i) in[i] = _mm256_loadu_ps(du + (i * 6 + j) * stride + static_cast<long>(c) * cout + k);
                gt6(in, out);
                for (int a = 0; a < 3; ++a) t[a][j] = out[a];
            }
            float taps[9][8];
            for (int a = 0; a < 3; ++a) {
                __m256 out[3];
                gt6(t[a], out);
                for (int b = 0; b < 3; ++b) _mm256_storeu_ps(taps[3 * a + b], out[b]);
            }
            for (int l = 0; l < 8; ++l)
                for (int tap = 0; tap < 9; ++tap) dw[(static_cast<long>(k + l) * cin + c) * 9 + tap] = taps[tap][l];
        }
}

// Tiles a thread takes at a time in fused_conv, a multiple of 6 (product_6x16's rows): its tiles
// and products, N^2 x block x (c + k) floats, stay in its L2 cache. F4: 36 x 18 x (64 + 64), 0.33
// MB; on 2 AVX2 EPYC cores (batch 100) blocks of 6 to 36 tiles were within 5 % of each other from
// 32 to 128 channels; with 256 in and 128 out 18 took 8.9 ms, 36 10.2 and 144 13.2. F7, whose
// tiles are three times F4's: 256 in and 64 out at 14x14 took 11.0 ms in blocks of 6, 12.1 in
// blocks of 12; 128 x 128 at 7x7 2.5 against 2.7; 64 x 64 at 28x28 11.3 against 11.0.
template <typename T>
constexpr int BLOCK_TILES = T::N == 6 ? 18 : 6;

// y (images, h, w, k) = the convolution of x (images, h, w, c) by the transformed weights u
// (N^2, c, k), plus the addends: per block of tiles the input transform, N^2 products and the
// output transform, with s.channels = c.
template <typename T>
void fused_conv(const Shape& s, int k, const float* x, const float* u, const Addends& add, float* y, int threads) {
    constexpr int NN = T::N * T::N, BLOCK = BLOCK_TILES<T>;
    const int c = s.channels;
    const long tiles = s.tiles(), blocks = (tiles + BLOCK - 1) / BLOCK;
    const long v_stride = static_cast<long>(BLOCK) * c + POSITION_PAD;
    const long m_stride = static_cast<long>(BLOCK) * k + POSITION_PAD;
    const Shape out{s.images, s.h, s.w, k, s.m};
#pragma omp parallel num_threads(threads)
    {
        // rows past a short last block are multiplied too, never written out: zeros at first, so finite
        std::vector<float> v(NN * v_stride), m(NN * m_stride);
#pragma omp for schedule(static)
        for (long b = 0; b < blocks; ++b) {
            const long first = b * BLOCK, count = std::min<long>(BLOCK, tiles - first);
            for (long i = 0; i < count; ++i)
                at_tile(s, first + i, [&](long, long image, int row, int col) {
                    const float* src = x + image * s.h * s.w * c;
                    for (int ch = 0; ch < c; ch += 8)
                        input_tile<T>(s, src, row - 1, col - 1, ch, v.data() + i * c, v_stride);
                });
            const int rows = static_cast<int>((count + 5) / 6 * 6);
            for (int p = 0; p < NN; ++p)
                block_product(v.data() + p * v_stride, u + static_cast<long>(p) * c * k, m.data() + p * m_stride, rows,
                              c, k);
            for (long i = 0; i < count; ++i)
                at_tile(s, first + i, [&](long, long image, int row, int col) {
                    for (int ch = 0; ch < k; ch += 8)
                        output_tile<T>(out, m.data() + i * k, m_stride, add, image, y, row, col, ch);
                });
        }
    }
}

// f(F4{}) or f(F7{}), for tiles of m outputs a side (valid_tile).
template <typename F>
void with_tile(int m, F&& f) {
    if (m == 7)
        f(F7{});
    else
        f(F4{});
}
}  // namespace
#endif  // CORE_X86

// Whether the kernels have tiles of m outputs a side; if not, a ValueError is set.
static bool valid_tile(int m) {
    if (m == 4 || m == 7) return true;
    PyErr_SetString(PyExc_ValueError, "winograd: tiles are 4 or 7 outputs a side");
    return false;
}

// Whether the kernels take this shape; if not, a ValueError is set.
static bool valid_shape(long images, int h, int w, int channels) {
    if (images > 0 && h > 0 && w > 0 && channels > 0 && channels % 8 == 0) return true;
    PyErr_SetString(PyExc_ValueError, "winograd: channels must be a positive multiple of 8");
    return false;
}

static PyObject* py_input(PyObject*, PyObject* args) {
    unsigned long long x, v;
    long stride, images;
    int h, w, channels, tile, threads;
    if (!PyArg_ParseTuple(args, "KKlliiiii", &x, &v, &stride, &images, &h, &w, &channels, &tile, &threads))
        return nullptr;
    if (!valid_shape(images, h, w, channels) || !valid_tile(tile)) return nullptr;
#ifdef CORE_X86
    const Shape s{images, h, w, channels, tile};
    Py_BEGIN_ALLOW_THREADS with_tile(tile, [&](auto t) {
        input_transform<decltype(t)>(s, pointer(x), pointer(v), stride, threads);
    });
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_output(PyObject*, PyObject* args) {
    unsigned long long m, bias, residual, y;
    long stride, images, bias_stride;
    int h, w, channels, tile, threads;
    if (!PyArg_ParseTuple(args, "KlKlKKliiiii", &m, &stride, &bias, &bias_stride, &residual, &y, &images, &h, &w,
                          &channels, &tile, &threads))
        return nullptr;
    if (!valid_shape(images, h, w, channels) || !valid_tile(tile)) return nullptr;
#ifdef CORE_X86
    const Shape s{images, h, w, channels, tile};
    const Addends add{bias ? pointer(bias) : nullptr, bias_stride, residual ? pointer(residual) : nullptr};
    Py_BEGIN_ALLOW_THREADS with_tile(tile, [&](auto t) {
        output_transform<decltype(t)>(s, pointer(m), stride, add, pointer(y), threads);
    });
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_output_grad(PyObject*, PyObject* args) {
    unsigned long long dy, m;
    long stride, images;
    int h, w, channels, threads;
    if (!PyArg_ParseTuple(args, "KKlliiii", &dy, &m, &stride, &images, &h, &w, &channels, &threads)) return nullptr;
    if (!valid_shape(images, h, w, channels)) return nullptr;
#ifdef CORE_X86
    const Shape s{images, h, w, channels};
    Py_BEGIN_ALLOW_THREADS output_grad_transform(s, pointer(dy), pointer(m), stride, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_weights(PyObject*, PyObject* args) {
    unsigned long long w, u;
    int rows, cols, turned, tile, threads;
    if (!PyArg_ParseTuple(args, "KKiipii", &w, &u, &rows, &cols, &turned, &tile, &threads)) return nullptr;
    if (!valid_shape(1, 1, 1, rows) || !valid_shape(1, 1, 1, cols) || !valid_tile(tile)) return nullptr;
#ifdef CORE_X86
    Py_BEGIN_ALLOW_THREADS with_tile(tile, [&](auto t) {
        weight_transform<decltype(t)>(pointer(w), pointer(u), rows, cols, turned, threads);
    });
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_weights_grad(PyObject*, PyObject* args) {
    unsigned long long du, dw;
    int cin, cout, threads;
    if (!PyArg_ParseTuple(args, "KKiii", &du, &dw, &cin, &cout, &threads)) return nullptr;
    if (!valid_shape(1, 1, 1, cin) || !valid_shape(1, 1, 1, cout)) return nullptr;
#ifdef CORE_X86
    Py_BEGIN_ALLOW_THREADS weight_grad_transform(pointer(du), pointer(dw), cin, cout, threads);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_conv(PyObject*, PyObject* args) {
    unsigned long long x, u, bias, residual, y;
    long images, bias_stride;
    int h, w, c, k, tile, threads;
    if (!PyArg_ParseTuple(args, "KKKlKKliiiiii", &x, &u, &bias, &bias_stride, &residual, &y, &images, &h, &w, &c, &k,
                          &tile, &threads))
        return nullptr;
    if (!valid_shape(images, h, w, c) || !valid_shape(images, h, w, k) || !valid_tile(tile)) return nullptr;
#ifdef CORE_X86
    const Shape s{images, h, w, c, tile};
    const Addends add{bias ? pointer(bias) : nullptr, bias_stride, residual ? pointer(residual) : nullptr};
    Py_BEGIN_ALLOW_THREADS with_tile(tile, [&](auto t) {
        fused_conv<decltype(t)>(s, k, pointer(x), pointer(u), add, pointer(y), threads);
    });
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyObject* py_products(PyObject*, PyObject* args) {
    unsigned long long v, u, m;
    long v_stride, m_stride, rows;
    int c, k, tile, threads;
    if (!PyArg_ParseTuple(args, "KlKKlliiii", &v, &v_stride, &u, &m, &m_stride, &rows, &c, &k, &tile, &threads))
        return nullptr;
    if (!valid_shape(rows, 1, 1, c) || !valid_shape(rows, 1, 1, k) || !valid_tile(tile)) return nullptr;
    const int positions = (tile + 2) * (tile + 2);
#ifdef CORE_X86
    // the same register tiles as fused_conv's: 149-171 GFLOP/s on 2 AVX2 EPYC cores against
    // torch.bmm's 115-132 for 128 and 256 channels in and out
    Py_BEGIN_ALLOW_THREADS matmul(pointer(v), pointer(u), nullptr, nullptr, pointer(m), rows, c, k, threads, positions,
                                  v_stride, m_stride);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "winograd needs an x86-64 CPU");
#endif
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernels (AVX2 and FMA)."},
    {"products", py_products, METH_VARARGS,
     "products(v, v_stride, u, m, m_stride, rows, c, k, tile, threads): m[p] = v[p] u[p] for p < (tile + 2)^2"},
    {"conv", py_conv, METH_VARARGS,
     "conv(x, u, bias or 0, bias_stride, residual or 0, y, images, h, w, channels_in, channels_out, tile, threads)"},
    {"input", py_input, METH_VARARGS, "input(x, v, v_stride, images, h, w, channels, tile, threads)"},
    {"output", py_output, METH_VARARGS,
     "output(m, m_stride, bias or 0, bias_stride, residual or 0, y, images, h, w, channels, tile, threads)"},
    {"output_grad", py_output_grad, METH_VARARGS,
     "output_grad(dy, m, m_stride, images, h, w, channels, threads): F(4x4, 3x3)"},
    {"weights", py_weights, METH_VARARGS, "weights(w, u, rows, cols, turned, tile, threads)"},
    {"weights_grad", py_weights_grad, METH_VARARGS, "weights_grad(du, dw, cin, cout, threads)"},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_winograd", "Winograd F(4x4, 3x3) and F(7x7, 3x3) convolutions and tile transforms.", -1,
                             methods, nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__winograd(void) {
    PyObject* m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "POSITION_PAD", POSITION_PAD) < 0) Py_CLEAR(m);
    return m;
}
