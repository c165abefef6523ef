// fp32 matrix products by AVX2 register tiles, shared by core/_winograd.cpp (the 36 products of a
// Winograd convolution) and core/_matmul.cpp (linear layers: attention's projections, 1x1
// convolutions).
//
// The right operand of every product is packed (packed_at): its columns in panels of 16, each
// panel's rows one after another, so that a register tile reads 64 contiguous bytes per step
// along the depth. Read in place, a panel's rows lie k floats apart, and for k = 128 to 768 those
// addresses fall into 4 to 8 of the 64 sets of the core's L1 cache, whose 8 ways hold fewer rows
// than the depth. On 2 AVX2 EPYC cores, batch 100, the F(7x7, 3x3) convolutions took 0.76 of the
// time with 128 channels at 14x14, 0.80 at 7x7, 0.87 with 64 at 28x28 (F(4x4, 3x3): 0.89-0.94),
// and a sampling step of the tutorial's network 0.970 (18 steps each, in alternation). Linear
// layers vary more with where their operands lie than with the packing (4,900 x 256 by 256 x 768:
// 9.9-11.7 ms packed, 10.4-11.2 in place, from one set of allocations to the next).
//
// Why not torch's (MKL's) sgemm: on 2 AVX2 EPYC cores it ran the products of the tutorial's
// network, 64 to 256 channels deep and a few hundred to 78,400 rows long, at 98-133 GFLOP/s, and
// these tiles at 129-179 (a 1024 x 1024 x 1024 product, which needs blocking along the depth that
// these tiles leave out, is MKL's: 134 against 94). Each tile is 6 rows by 16 columns: twelve
// accumulators, two rows of b and one broadcast element of a in registers, twelve FMAs per step
// along the depth against eight loads.
#pragma once

#include <algorithm>
#include <vector>

#include "_avx2.h"

#ifdef CORE_X86
namespace {

// One row of a register tile, one step along the depth: lo and hi (16 columns) += a * (b0, b1).
AVX2_FN inline void step_row(const float* a, __m256 b0, __m256 b1, __m256& lo, __m256& hi) {
    const __m256 av = _mm256_broadcast_ss(a);
    lo = _mm256_fmadd_ps(av, b0, lo);
    hi = _mm256_fmadd_ps(av, b1, hi);
}

// What a tile's accumulator for row r, columns 8h.. starts from: bias (the tile's columns) where
// given, plus that row of `added` (laid out as the output, row stride ld) where given: the sum
// comes out of the pass that writes the product, where adding it afterwards would read and write
// the whole output once more.
AVX2_FN inline __m256 start(const float* bias, const float* added, long ld, int r, int h) {
    const __m256 b = bias ? _mm256_loadu_ps(bias + 8 * h) : _mm256_setzero_ps();
    return added ? _mm256_add_ps(b, _mm256_loadu_ps(added + r * ld + 8 * h)) : b;
}

// c (6 x 16, row stride ldc) = a (6 x depth, row stride lda) b (depth x 16, row stride ldb), plus
// bias (16 columns) on every row and `added` (6 x 16, row stride ldc) where given. The twelve
// accumulators are named one by one: gcc kept an array of them in registers too, but stored it
// back to the stack at every step (a 64-channel 28x28 Winograd layer took 19.9 ms, 13.2 this way).
AVX2_FN inline void product_6x16(const float* a, long lda, const float* b, long ldb, float* c, long ldc, int depth,
                                 const float* bias, const float* added = nullptr) {
    __m256 c00 = start(bias, added, ldc, 0, 0), c01 = start(bias, added, ldc, 0, 1);
    __m256 c10 = start(bias, added, ldc, 1, 0), c11 = start(bias, added, ldc, 1, 1);
    __m256 c20 = start(bias, added, ldc, 2, 0), c21 = start(bias, added, ldc, 2, 1);
    __m256 c30 = start(bias, added, ldc, 3, 0), c31 = start(bias, added, ldc, 3, 1);
    __m256 c40 = start(bias, added, ldc, 4, 0), c41 = start(bias, added, ldc, 4, 1);
    __m256 c50 = start(bias, added, ldc, 5, 0), c51 = start(bias, added, ldc, 5, 1);
    for (int k = 0; k < depth; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
        step_row(a + k, b0, b1, c00, c01);
        step_row(a + lda + k, b0, b1, c10, c11);
        step_row(a + 2 * lda + k, b0, b1, c20, c21);
        step_row(a + 3 * lda + k, b0, b1, c30, c31);
        step_row(a + 4 * lda + k, b0, b1, c40, c41);
        step_row(a + 5 * lda + k, b0, b1, c50, c51);
    }
    const __m256 rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < 6; ++r) {
        _mm256_storeu_ps(c + r * ldc, rows[r][0]);
        _mm256_storeu_ps(c + r * ldc + 8, rows[r][1]);
    }
}

// product_6x16 for the last 8 columns, where their count is not a multiple of 16.
AVX2_FN inline void product_6x8(const float* a, long lda, const float* b, long ldb, float* c, long ldc, int depth,
                                const float* bias, const float* added = nullptr) {
    __m256 c0 = start(bias, added, ldc, 0, 0), c1 = start(bias, added, ldc, 1, 0), c2 = start(bias, added, ldc, 2, 0),
           c3 = start(bias, added, ldc, 3, 0), c4 = start(bias, added, ldc, 4, 0), c5 = start(bias, added, ldc, 5, 0);
    for (int k = 0; k < depth; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b + k * ldb);
        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + k), b0, c0);
        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + lda + k), b0, c1);
        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 2 * lda + k), b0, c2);
        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 3 * lda + k), b0, c3);
        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 4 * lda + k), b0, c4);
        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a + 5 * lda + k), b0, c5);
    }
    const __m256 rows[6] = {c0, c1, c2, c3, c4, c5};
    for (int r = 0; r < 6; ++r) _mm256_storeu_ps(c + r * ldc, rows[r]);
}

// The columns from n of a (rows, k) matrix's row r, or none.
inline const float* at_column(const float* x, long r, int k, int n) { return x ? x + r * k + n : nullptr; }

// Where element (d, col) of a (depth, k) right operand lies packed: in the panel of columns from
// col - col % 16, 16 wide (8 for the last where k is not a multiple of 16), depth rows long.
inline long packed_at(int d, int col, int depth, int k) {
    const int first = col - col % 16, width = first + 16 <= k ? 16 : 8;
    return static_cast<long>(first) * depth + static_cast<long>(d) * width + col % 16;
}

// w (depth, k), element (d, col) at w[d * d_stride + col * col_stride], packed into out.
inline void pack_columns(const float* w, long d_stride, long col_stride, float* out, int depth, int k) {
    for (int col = 0; col < k; ++col)
        for (int d = 0; d < depth; ++d) out[packed_at(d, col, depth, k)] = w[d * d_stride + col * col_stride];
}

// m (rows, k) = v (rows, c) u (c, k, packed) [+ bias (k,)] [+ added (rows, k)], the rest
// contiguous, rows a multiple of 6 and k of 8.
AVX2_FN void block_product(const float* v, const float* u, float* m, long rows, int c, int k,
                           const float* bias = nullptr, const float* added = nullptr) {
    for (int n = 0; n + 16 <= k; n += 16)
        for (long r = 0; r < rows; r += 6)
            product_6x16(v + r * c, c, u + packed_at(0, n, c, k), 16, m + r * k + n, k, c, at_column(bias, 0, k, n),
                         at_column(added, r, k, n));
    if (k % 16)
        for (long r = 0; r < rows; r += 6)
            product_6x8(v + r * c, c, u + packed_at(0, k - 8, c, k), 8, m + r * k + k - 8, k, c,
                        at_column(bias, 0, k, k - 8), at_column(added, r, k, k - 8));
}

// block_product for any number of rows: the last ones (fewer than 6) through copies padded with zeros.
inline void rows_product(const float* v, const float* u, float* m, long rows, int c, int k,
                         const float* bias = nullptr, const float* added = nullptr) {
    const long whole = rows / 6 * 6;
    block_product(v, u, m, whole, c, k, bias, added);
    if (rows == whole) return;
    std::vector<float> a(6L * c, 0.0f), out(6L * k), more(added ? 6L * k : 0, 0.0f);
    std::copy(v + whole * c, v + rows * c, a.begin());
    if (added) std::copy(added + whole * k, added + rows * k, more.begin());
    block_product(a.data(), u, out.data(), 6, c, k, bias, added ? more.data() : nullptr);
    std::copy(out.begin(), out.begin() + (rows - whole) * k, m + whole * k);
}

// Rows a thread takes at a time, at most: a multiple of 6, so that only the last group has a
// remainder. A product's rows are split evenly into as many groups as that makes: Winograd's 81
// products of 100 rows at 7x7 in sampling went in groups of 96 and 4, each group reading all of its
// weights, and took 1.04-1.08x the time of groups of 54 and 46 (256 channels, 2 AVX2 EPYC cores).
constexpr long PRODUCT_ROWS = 96;

// y (rows, k) = x (rows, c) w (c, k, packed) [+ bias (k,)] [+ added (rows, k)]; with `count` above 1, that
// many such products laid one after another in w and added, and x_step and y_step floats apart
// in x and y (Winograd's positions), sharing the bias. Groups of rows of all of them split over
// OpenMP threads.
inline void matmul(const float* x, const float* w, const float* bias, const float* added, float* y, long rows, int c,
                   int k, int threads, int count = 1, long x_step = 0, long y_step = 0) {
    const long groups = (rows + PRODUCT_ROWS - 1) / PRODUCT_ROWS;
    const long per_group = (rows + groups * 6 - 1) / (groups * 6) * 6;  // the rows split evenly, in sixes
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long job = 0; job < count * groups; ++job) {
        const long p = job / groups, first = job % groups * per_group;
        if (first < rows)
            rows_product(x + p * x_step + first * c, w + p * c * k, y + p * y_step + first * k,
                         std::min(per_group, rows - first), c, k, bias, at_column(added, p * rows + first, k, 0));
    }
}

}  // namespace
#endif  // CORE_X86
