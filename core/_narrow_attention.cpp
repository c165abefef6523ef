// Exact softmax attention for narrow fp32 heads (4, 8, 16, 32 or 64 channels) on AVX2+FMA CPUs.
//
// Why it exists: torch's fused CPU kernel (scaled_dot_product_attention) runs such heads far
// below the arithmetic they need, above all in the backward pass and for 4-channel heads, which
// it can only run zero-padded to 16 channels (core/attention.py). These kernels do the
// flash-attention passes with register tiles of MR query rows against 16 keys (or 16 channels),
// a block's scores never leaving a row buffer in the core's cache, and only the maximum and sum of
// each query row kept for the backward pass.
//
// Layout, all fp32: qkv is the input projection as nn.MultiheadAttention makes it, (batch, tokens,
// 3, heads, d): queries, keys and values side by side in each token's row, so no copy separates
// them; out and grad_out are (batch, tokens, heads, d), the output projection's input; dqkv is laid
// out as qkv. stats is (batch, heads, tokens, 2): each query row's largest score (unscaled) and the
// reciprocal of its softmax denominator, which the backward pass recomputes the probabilities
// from as the forward pass computed them. bias, (3, heads, d) or none, is the input projection's:
// the kernels add it as they read the projections, so that the projection before them is a plain
// matrix product (with its bias, torch's addmm first fills its whole output with copies of it,
// 7.5 ms per 784-token layer with 16-channel heads at batch 100 on 2 AVX2 EPYC cores).
// Sampling's forward pass may instead run its products in bf16: core/_narrow_attention_bf16.h.
// The module is plain CPython (no torch headers): core/narrow_attention.py passes data pointers
// of contiguous CPU tensors, and the GIL is released while the threads run.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "_avx2.h"

#ifdef CORE_X86
namespace {

constexpr int MR = 6;  // query rows per register tile: 12 accumulators of 16 keys, or of 16 channels

// The rows of one head's queries, keys, values or outputs: token j's d channels at p + j * stride.
template <typename T>
struct Rows {
    T* p;
    long stride;
    T* operator[](int j) const { return p + j * stride; }
};
using In = Rows<const float>;
using Out = Rows<float>;

// Lanes of the key block j..j+8 that are real tokens (the rest are padding).
AVX2_FN inline __m256 tail_mask(int j, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n - j), lane));
}

// out (D, stride) = the n rows of x (n, D) plus bias, transposed; columns from n on are left as they are.
template <int D>
void transpose_rows(In x, const float* bias, int n, int stride, float* out) {
    for (int j = 0; j < n; ++j)
        for (int c = 0; c < D; ++c) out[c * stride + j] = x[j][c] + bias[c];
}

// Per-thread buffers for one map. Tokens are padded to a multiple of 16 (n16) and channels to a
// multiple of 8 (D8); the padding is zero and stays zero.
template <int D>
struct Buffers {
    static constexpr int D8 = D < 8 ? 8 : D;
    static constexpr int V = D8 / 8;  // registers per row of channels
    // registers per pass of the row products: 16 channels at most, so that MR rows of them and the
    // operand fit in the 16 AVX2 registers (32- and 64-channel heads take two and four passes)
    static constexpr int C = V < 2 ? V : 2;
    int n, n16;
    // kT, vT: keys and values transposed, (D, n16); byRow: the right operand of weighted_rows, the
    // values in the forward pass and the keys in the backward pass, (n16, D) or for D = 4 (D, n16)
    // dkN, dvN: the keys' and values' gradients, (n16, D8), or for D = 4 transposed, (D, n16);
    // queries: the block's MR query rows with their bias
    std::vector<float> kT, vT, byRow, rowsA, rowsB, dkN, dvN, queries;
    explicit Buffers(int tokens)
        : n(tokens), n16((tokens + 15) / 16 * 16), kT(D * n16), vT(D * n16), byRow(n16 * D),
          rowsA(MR * n16), rowsB(MR * n16), dkN(n16 * D8), dvN(n16 * D8), queries(MR * D) {}

    void transpose(In x, const float* bias, std::vector<float>& xT) const {
        transpose_rows<D>(x, bias, n, n16, xT.data());
    }

    void copy_rows(In x, const float* bias) {
        if constexpr (D == 4)
            transpose(x, bias, byRow);
        else
            for (int j = 0; j < n; ++j)
                for (int c = 0; c < D; ++c) byRow[j * D + c] = x[j][c] + bias[c];
    }

    // Row pointers of the query block from i0 with the bias added; rows past the end repeat the last one.
    void query_rows(In q, const float* bias, int i0, int rows, const float** out) {
        for (int r = 0; r < MR; ++r) {
            const float* x = q[i0 + std::min(r, rows - 1)];
            for (int c = 0; c < D; ++c) queries[r * D + c] = x[c] + bias[c];
            out[r] = &queries[r * D];
        }
    }
};

// Channels 8 h0 .. 8 (h0 + C) of a row as C registers, zero past D.
template <int D>
AVX2_FN inline void load_chunk(const float* x, int h0, __m256* out) {
    if constexpr (D < 8) {
        out[0] = _mm256_insertf128_ps(_mm256_setzero_ps(), _mm_loadu_ps(x), 0);
    } else {
        for (int h = 0; h < Buffers<D>::C; ++h) out[h] = _mm256_loadu_ps(x + 8 * (h0 + h));
    }
}

// acc[r][h] = a_r . bT[:, j + 8h] for MR rows a_r and the 16 keys (columns of bT) from j.
template <int D>
AVX2_FN inline void tile16(const float* const* a, const float* bT, int n16, int j, __m256 (*acc)[2]) {
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int c = 0; c < D; ++c) {
        const __m256 b0 = _mm256_loadu_ps(bT + c * n16 + j), b1 = _mm256_loadu_ps(bT + c * n16 + j + 8);
        for (int r = 0; r < MR; ++r) {
            const __m256 x = _mm256_set1_ps(a[r][c]);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
}

// The lanes of a group of 8 keys that are real tokens: all of them (NoMask, a type of its own so
// that the tiles before the last spend no operation on masking) or those a Mask says (the last).
struct NoMask {
    AVX2_FN __m256 zeroed(__m256 x) const { return x; }  // padding lanes 0
    AVX2_FN __m256 or_minus_inf(__m256 x) const { return x; }  // padding lanes -inf
};
struct Mask {
    __m256 real;
    AVX2_FN __m256 zeroed(__m256 x) const { return _mm256_and_ps(x, real); }
    AVX2_FN __m256 or_minus_inf(__m256 x) const { return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, real); }
};

// Calls f(j, acc, lanes) for each tile of 16 keys from j: acc[r][h] the unscaled scores q_r . k
// of the MR rows and the keys j + 8h .. j + 8h + 7, lanes[h] which of those keys are real tokens.
template <int D, typename F>
AVX2_FN inline void for_score_tiles(const float* const* qr, const Buffers<D>& B, F&& f) {
    for (int j = 0; j < B.n16; j += 16) {
        __m256 acc[MR][2];
        tile16<D>(qr, B.kT.data(), B.n16, j, acc);
        if (j + 16 <= B.n) {
            const NoMask all[2] = {};
            f(j, acc, all);
        } else {
            const Mask tail[2] = {{tail_mask(j, B.n)}, {tail_mask(j + 8, B.n)}};
            f(j, acc, tail);
        }
    }
}

// acc_r = sum_j w[r][j] * rows[j] over the n keys: an (MR, n) x (n, D) product, `rows` laid out as
// Buffers::byRow, zero past n.
template <int D>
AVX2_FN inline void weighted_rows(const float* w, int n16, int n, const float* rows, __m256 (*acc)[Buffers<D>::V]) {
    constexpr int V = Buffers<D>::V;
    if constexpr (D == 4) {
        // Channel by channel along the keys, from the transposed rows (D, n16): 4 FMAs per 8 keys
        // of a row, where a row zero-padded to 8 channels takes 8 and 8 broadcasts. Three rows at
        // a time, so that the 12 sums stay in registers.
        for (int r0 = 0; r0 < MR; r0 += 3) {
            __m256 sum[3][4];
            for (int r = 0; r < 3; ++r)
                for (int c = 0; c < 4; ++c) sum[r][c] = _mm256_setzero_ps();
            for (int j = 0; j < n; j += 8) {
                __m256 col[4];
                for (int c = 0; c < 4; ++c) col[c] = _mm256_loadu_ps(rows + c * n16 + j);
                for (int r = 0; r < 3; ++r) {
                    const __m256 w8 = _mm256_loadu_ps(w + (r0 + r) * n16 + j);
                    for (int c = 0; c < 4; ++c) sum[r][c] = _mm256_fmadd_ps(w8, col[c], sum[r][c]);
                }
            }
            for (int r = 0; r < 3; ++r) {
                float o[8] = {hsum8(sum[r][0]), hsum8(sum[r][1]), hsum8(sum[r][2]), hsum8(sum[r][3])};
                acc[r0 + r][0] = _mm256_loadu_ps(o);
            }
        }
    } else {
        constexpr int C = Buffers<D>::C;
        for (int h0 = 0; h0 < V; h0 += C) {
            __m256 sum[MR][C];
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < C; ++h) sum[r][h] = _mm256_setzero_ps();
            for (int j = 0; j < n; ++j) {
                __m256 b[C];
                load_chunk<D>(rows + j * D, h0, b);
                for (int r = 0; r < MR; ++r) {
                    const __m256 x = _mm256_set1_ps(w[r * n16 + j]);
                    for (int h = 0; h < C; ++h) sum[r][h] = _mm256_fmadd_ps(x, b[h], sum[r][h]);
                }
            }
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < C; ++h) acc[r][h0 + h] = sum[r][h];
        }
    }
}

// grad[j] += sum_r w[r][j] * x_r for every key j: the (n, MR) x (MR, D8) product that
// accumulates dK and dV, with the MR rows x_r held in registers. (Measured against updating
// several keys at once and against a transposed (D, n16) accumulator: this is the fastest, but for
// 4-channel heads, whose rows fill half a register: their gradients are transposed, (D, n16), and
// the backward pass of 128 maps of 784 tokens took 48.7 against 55.9 ms.)
template <int D>
AVX2_FN inline void accumulate_rows(const float* w, int n16, int n, const float* const* x, float* grad) {
    constexpr int V = Buffers<D>::V, C = Buffers<D>::C;
    if constexpr (D == 4) {
        for (int c = 0; c < D; ++c) {
            __m256 xr[MR];
            for (int r = 0; r < MR; ++r) xr[r] = _mm256_set1_ps(x[r][c]);
            float* g = grad + c * n16;
            for (int j = 0; j < n; j += 8) {
                __m256 acc = _mm256_loadu_ps(g + j);
                for (int r = 0; r < MR; ++r) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + r * n16 + j), xr[r], acc);
                _mm256_storeu_ps(g + j, acc);
            }
        }
        return;
    }
    for (int h0 = 0; h0 < V; h0 += C) {
        __m256 xr[MR][C];
        for (int r = 0; r < MR; ++r) load_chunk<D>(x[r], h0, xr[r]);
        for (int j = 0; j < n; ++j) {
            float* g = grad + j * Buffers<D>::D8 + 8 * h0;
            __m256 acc[C];
            for (int h = 0; h < C; ++h) acc[h] = _mm256_loadu_ps(g + 8 * h);
            for (int r = 0; r < MR; ++r) {
                const __m256 s = _mm256_set1_ps(w[r * n16 + j]);
                for (int h = 0; h < C; ++h) acc[h] = _mm256_fmadd_ps(s, xr[r][h], acc[h]);
            }
            for (int h = 0; h < C; ++h) _mm256_storeu_ps(g + 8 * h, acc[h]);
        }
    }
}

// Row pointers of the query block from i0; rows past the end repeat the last one.
inline void block_rows(In x, int i0, int rows, const float** out) {
    for (int r = 0; r < MR; ++r) out[r] = x[i0 + std::min(r, rows - 1)];
}

// e^(scale (s - m)) as 2^(s b - m b), b = scale log2(e): one FMA, with a single rounding, where
// (s - m) b takes two operations on the exponential's path (the kernel ran 127 against 131 ms with
// 16-channel heads, 63 against 67 ms with 4-channel ones, 400 maps of 784 tokens). A row's largest
// weight comes out 2^(m b - fl(m b)), within an ulp of 1; the softmax's sum takes the common factor
// out again. (A one-token map, whose weight must be exactly 1, never gets here: narrow_attention.py.)
AVX2_FN inline __m256 shifted_max(float m, float scale) { return _mm256_set1_ps(-m * (scale * LOG2E)); }

// The exponentials of N vectors of scores in place, with shifted[i] = -m b for vector i. By the
// degree-4 polynomial (relative error 2.9e-6, where degree 5 gives 1.9e-7): the exponentials
// bound the kernels, above all for narrow heads, and one FMA fewer each made 100 maps of 784
// tokens take 0.95 of the time with 4-channel heads, 0.97 with 16-channel ones (forward pass,
// 2 AVX2 EPYC cores; backward 0.97 both). The outputs moved by up to 1e-6; sampling's
// convolutions round to 2e-4 (core/winograd.py).
template <int N>
AVX2_FN inline void scaled_exp(__m256* score, __m256 base2, const __m256* shifted) {
    for (int i = 0; i < N; ++i) score[i] = _mm256_fmadd_ps(score[i], base2, shifted[i]);
    exp2_n<N, 4>(score);
}

// P for the 16 keys from j: the MR rows' scores `acc` made softmax weights (the exponentials four
// at a time), the keys past n masked by `lanes` (one per 8 keys) and the repeated rows by `live`.
template <typename L>
AVX2_FN inline void tile_weights(__m256 (*acc)[2], __m256 base2, const __m256* shifted2, const __m256* inv,
                                 const __m256* live, const L* lanes, float* P, int n16, int j) {
    __m256 p[2 * MR];
    for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 2; ++h) p[2 * r + h] = acc[r][h];
    for (int g = 0; g < 2 * MR; g += 4) scaled_exp<4>(p + g, base2, shifted2 + g);
    for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 2; ++h)
            _mm256_storeu_ps(P + r * n16 + j + 8 * h,
                             _mm256_and_ps(lanes[h].zeroed(_mm256_mul_ps(p[2 * r + h], inv[r])), live[r]));
}

template <int D>
AVX2_FN void forward_map(In q, In k, In v, const float* const* bias, Out out, float* stats, float scale, Buffers<D>& B) {
    constexpr int V = Buffers<D>::V;
    const int n = B.n, n16 = B.n16;
    B.transpose(k, bias[1], B.kT);
    B.copy_rows(v, bias[2]);
    float* s = B.rowsA.data();
    const __m256 base2 = _mm256_set1_ps(scale * LOG2E);
    for (int i0 = 0; i0 < n; i0 += MR) {
        const int rows = std::min(MR, n - i0);
        const float* qr[MR];
        B.query_rows(q, bias[0], i0, rows, qr);
        __m256 vmax[MR];
        for (int r = 0; r < MR; ++r) vmax[r] = _mm256_set1_ps(-INFINITY);
        for_score_tiles<D>(qr, B, [s, n16, &vmax](int j, __m256 (*acc)[2], const auto* lanes) AVX2_FN {
            for (int r = 0; r < MR; ++r)
                for (int h = 0; h < 2; ++h) {
                    const __m256 score = lanes[h].or_minus_inf(acc[r][h]);
                    vmax[r] = _mm256_max_ps(vmax[r], score);
                    _mm256_storeu_ps(s + r * n16 + j + 8 * h, score);
                }
        });
        float mx[MR], inv[MR];
        for (int r = 0; r < MR; ++r) mx[r] = hmax8(vmax[r]);
        // two rows at a time, 16 keys each: four exponentials side by side, and a sum per row that
        // takes its two vectors added first. (A sum per vector, four chains of additions, had
        // gcc keep the sums on the stack through the loop for want of registers: 100 maps of 784
        // tokens with 16-channel heads took 129.3 against 132.3 ms, 100 maps of 196 tokens with
        // 32-channel heads 18.3 against 20.6; 4-channel heads the same.)
        for (int r = 0; r < MR; r += 2) {
            __m256 total[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            const __m256 a = shifted_max(mx[r], scale), b = shifted_max(mx[r + 1], scale);
            const __m256 shifted[4] = {a, a, b, b};
            for (int j = 0; j < n16; j += 16) {
                float* at[4] = {s + r * n16 + j, s + r * n16 + j + 8, s + (r + 1) * n16 + j, s + (r + 1) * n16 + j + 8};
                __m256 p[4];
                for (int i = 0; i < 4; ++i) p[i] = _mm256_loadu_ps(at[i]);
                scaled_exp<4>(p, base2, shifted);
                for (int i = 0; i < 4; ++i) _mm256_storeu_ps(at[i], p[i]);
                total[0] = _mm256_add_ps(total[0], _mm256_add_ps(p[0], p[1]));
                total[1] = _mm256_add_ps(total[1], _mm256_add_ps(p[2], p[3]));
            }
            inv[r] = 1.0f / hsum8(total[0]);
            inv[r + 1] = 1.0f / hsum8(total[1]);
        }
        __m256 acc[MR][V];
        weighted_rows<D>(s, n16, n, B.byRow.data(), acc);
        for (int r = 0; r < rows; ++r) {
            float o[Buffers<D>::D8];
            for (int h = 0; h < V; ++h) _mm256_storeu_ps(o + 8 * h, _mm256_mul_ps(acc[r][h], _mm256_set1_ps(inv[r])));
            std::memcpy(out[i0 + r], o, D * sizeof(float));
            stats[2 * (i0 + r)] = mx[r];
            stats[2 * (i0 + r) + 1] = inv[r];
        }
    }
}

// The flash-attention backward pass, one block of MR query rows at a time, in five sweeps over
// the keys: P from the recomputed scores and the forward pass's row maxima and sums, dS = P (dP - delta),
// dV += P^T dO, dK += dS^T Q, dQ = dS K; each sweep an MR-row register tile.
template <int D>
AVX2_FN void backward_map(In q, In k, In v, const float* const* bias, In out, In dout, const float* stats, Out dq, Out dk,
                          Out dv, float scale, Buffers<D>& B) {
    constexpr int V = Buffers<D>::V, D8 = Buffers<D>::D8;
    const int n = B.n, n16 = B.n16;
    B.transpose(k, bias[1], B.kT);
    B.transpose(v, bias[2], B.vT);
    B.copy_rows(k, bias[1]);
    std::fill(B.dkN.begin(), B.dkN.end(), 0.0f);
    std::fill(B.dvN.begin(), B.dvN.end(), 0.0f);
    float *P = B.rowsA.data(), *dS = B.rowsB.data();
    for (int i0 = 0; i0 < n; i0 += MR) {
        const int rows = std::min(MR, n - i0);
        const float *qr[MR], *dor[MR];
        B.query_rows(q, bias[0], i0, rows, qr);
        block_rows(dout, i0, rows, dor);
        const __m256 base2 = _mm256_set1_ps(scale * LOG2E);
        __m256 shifted2[2 * MR], inv[MR], delta[MR], live[MR];  // shifted2: each row's twice, one per 8 keys
        for (int r = 0; r < MR; ++r) {
            const int i = i0 + std::min(r, rows - 1);
            float dsum = 0.0f;
            // one FMA per channel in channel order, as tile16 computes dP: where a row's weight is
            // all on one token (out = v), dP - delta then cancels exactly, as it does in torch
            for (int c = 0; c < D; ++c) dsum = std::fma(dout[i][c], out[i][c], dsum);
            shifted2[2 * r] = shifted2[2 * r + 1] = shifted_max(stats[2 * i], scale);
            inv[r] = _mm256_set1_ps(stats[2 * i + 1]);
            delta[r] = _mm256_set1_ps(dsum);
            live[r] = _mm256_castsi256_ps(_mm256_set1_epi32(r < rows ? -1 : 0));  // repeated rows add nothing
        }
        for_score_tiles<D>(qr, B, [&](int j, __m256 (*acc)[2], const auto* lanes) AVX2_FN {
            tile_weights(acc, base2, shifted2, inv, live, lanes, P, n16, j);
        });
        for (int j = 0; j < n16; j += 16) {
            __m256 acc[MR][2];
            tile16<D>(dor, B.vT.data(), n16, j, acc);
            for (int h = 0; h < 2; ++h)
                for (int r = 0; r < MR; ++r) {
                    const int at = r * n16 + j + 8 * h;
                    _mm256_storeu_ps(dS + at, _mm256_mul_ps(_mm256_loadu_ps(P + at), _mm256_sub_ps(acc[r][h], delta[r])));
                }
        }
        accumulate_rows<D>(P, n16, n, dor, B.dvN.data());
        accumulate_rows<D>(dS, n16, n, qr, B.dkN.data());
        __m256 acc[MR][V];
        weighted_rows<D>(dS, n16, n, B.byRow.data(), acc);
        for (int r = 0; r < rows; ++r) {
            float g[D8];
            for (int h = 0; h < V; ++h) _mm256_storeu_ps(g + 8 * h, _mm256_mul_ps(acc[r][h], _mm256_set1_ps(scale)));
            std::memcpy(dq[i0 + r], g, D * sizeof(float));
        }
    }
    for (int j = 0; j < n; ++j)
        for (int c = 0; c < D; ++c) {
            const int at = D == 4 ? c * n16 + j : j * D8 + c;
            dk[j][c] = B.dkN[at] * scale;
            dv[j][c] = B.dvN[at];
        }
}

#include "_narrow_attention_bf16.h"

enum class Pass { forward, forward_bf16, backward, backward_bf16 };  // the bf16 passes: _narrow_attention_bf16.h

struct Problem {
    const float *qkv, *bias, *out, *dout;  // bias: never null (run() gives zeros for none)
    float *o, *stats, *dqkv;
    long batch;
    int heads, n, d;
    float scale;

    long maps() const { return batch * heads; }
    // The query, key and value biases of head m % heads.
    void head_bias(long m, const float** out) const {
        for (int part = 0; part < 3; ++part) out[part] = bias + (part * heads + m % heads) * d;
    }
    // Head m % heads of sample m / heads: its rows in a (batch, tokens, parts, heads, d) tensor.
    template <typename T>
    Rows<T> rows(T* x, int parts, int part, long m) const {
        const long width = static_cast<long>(heads) * d;
        return {x + (m / heads) * n * parts * width + part * width + (m % heads) * d, parts * width};
    }
};

// The maps handed out an image at a time (its heads' maps together) to `threads` OpenMP threads.
// Built with -fopenmp against the same libgomp that torch has loaded, these are torch's own worker
// threads: a pool of our own would compete with torch's workers, which spin for a while after each
// of torch's parallel ops. Handed out rather than split evenly: on a busy machine a thread that
// loses its core for a while leaves its images to the other, which an even split kept waiting at
// the end (in a sampling step's profile on a 2-core VM, one thread was idle at this kernel's
// barrier 0.8% of the step). An image rather than a map at a time: two threads on heads of one
// image read and write the same tokens' rows, side by side in memory, and on 2 AVX2 EPYC cores
// (100 images, 4 heads) the forward pass took 0.87-0.98 and the backward 0.84-0.96 of the time
// it took map by map, the most for the shortest maps and the narrowest heads (49 tokens of 64
// channels, 196 of 8).
template <int D>
void run_maps(const Problem& P, int threads, Pass pass) {
#pragma omp parallel num_threads(threads)
    {
        const bool bf16 = pass == Pass::forward_bf16 || pass == Pass::backward_bf16;
        Buffers<D> B(bf16 ? 0 : P.n);
#ifdef CORE_BF16
        Bf16Buffers<D> B16(pass == Pass::forward_bf16 ? P.n : 0);
        Bf16GradBuffers<D> G16(pass == Pass::backward_bf16 ? P.n : 0);
#endif
#pragma omp for schedule(dynamic, P.heads)
        for (long m = 0; m < P.maps(); ++m) {
            const In q = P.rows(P.qkv, 3, 0, m), k = P.rows(P.qkv, 3, 1, m), v = P.rows(P.qkv, 3, 2, m);
            const float* bias[3];
            P.head_bias(m, bias);
            float* stats = P.stats + 2 * m * P.n;
            if (pass == Pass::backward) {
                backward_map<D>(q, k, v, bias, P.rows(P.out, 1, 0, m), P.rows(P.dout, 1, 0, m), stats,
                                P.rows(P.dqkv, 3, 0, m), P.rows(P.dqkv, 3, 1, m), P.rows(P.dqkv, 3, 2, m), P.scale, B);
            } else if (pass == Pass::forward) {
                forward_map<D>(q, k, v, bias, P.rows(P.o, 1, 0, m), stats, P.scale, B);
            } else {
#ifdef CORE_BF16
                if (pass == Pass::forward_bf16)
                    forward_map_bf16<D>(q, k, v, bias, P.rows(P.o, 1, 0, m), stats, P.scale, B16);
                else
                    backward_map_bf16<D>(q, k, v, bias, P.rows(P.out, 1, 0, m), P.rows(P.dout, 1, 0, m), stats,
                                         P.rows(P.dqkv, 3, 0, m), P.rows(P.dqkv, 3, 1, m), P.rows(P.dqkv, 3, 2, m),
                                         P.scale, G16);
#endif
            }
        }
    }
}

void run(Problem P, int threads, Pass pass) {
    threads = static_cast<int>(std::max(1L, std::min<long>(threads, P.maps())));
    const std::vector<float> zeros(P.bias ? 0 : 3 * P.heads * P.d, 0.0f);
    if (!P.bias) P.bias = zeros.data();
    switch (P.d) {
        case 4: run_maps<4>(P, threads, pass); break;
        case 8: run_maps<8>(P, threads, pass); break;
        case 16: run_maps<16>(P, threads, pass); break;
        case 32: run_maps<32>(P, threads, pass); break;
        default: run_maps<64>(P, threads, pass); break;
    }
}

}  // namespace
#endif  // CORE_X86

// Whether the kernels take this shape; if not, a ValueError is set.
static bool valid_shape(int n, int d) {
    if (n > 0 && (d == 4 || d == 8 || d == 16 || d == 32 || d == 64)) return true;
    PyErr_Format(PyExc_ValueError, "narrow attention: d must be 4, 8, 16, 32 or 64, not %d", d);
    return false;
}

#ifdef CORE_X86
// Whether forward_bf16 runs on this CPU; if not, a ValueError is set.
static bool bf16_runs() {
#ifdef CORE_BF16
    if (!avx512_bf16_supported()) {
        PyErr_SetString(PyExc_ValueError, "narrow attention: this CPU has no AVX-512-BF16");
        return false;
    }
    return true;
#else
    PyErr_SetString(PyExc_ValueError, "narrow attention: built without the bf16 kernels");
    return false;
#endif
}
#endif

// The forward pass, by the bf16 kernels or the fp32 ones; null with a Python error set if they can't run.
static PyObject* forward(PyObject* args, bool bf16) {
    unsigned long long qkv, bias, o, stats;
    long batch;
    int heads, n, d, threads;
    float scale;
    if (!PyArg_ParseTuple(args, "KKKKliiifi", &qkv, &bias, &o, &stats, &batch, &heads, &n, &d, &scale, &threads))
        return nullptr;
    if (!valid_shape(n, d)) return nullptr;
#ifdef CORE_X86
    if (bf16 && !bf16_runs()) return nullptr;
    const Problem P{pointer(qkv), pointer(bias), nullptr, nullptr, pointer(o), pointer(stats), nullptr,
                    batch, heads, n, d, scale};
    Py_BEGIN_ALLOW_THREADS run(P, threads, bf16 ? Pass::forward_bf16 : Pass::forward);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "narrow attention needs an x86-64 CPU");
#endif
}

static PyObject* py_forward(PyObject*, PyObject* args) { return forward(args, false); }

static PyObject* py_forward_bf16(PyObject*, PyObject* args) { return forward(args, true); }

static PyObject* py_supported_bf16(PyObject*, PyObject*) {
#ifdef CORE_BF16
    return PyBool_FromLong(avx512_bf16_supported());
#else
    Py_RETURN_FALSE;
#endif
}

// The backward pass, by the bf16 kernels or the fp32 ones; null with a Python error set if they can't run.
static PyObject* backward(PyObject* args, bool bf16) {
    unsigned long long qkv, bias, out, dout, stats, dqkv;
    long batch;
    int heads, n, d, threads;
    float scale;
    if (!PyArg_ParseTuple(args, "KKKKKKliiifi", &qkv, &bias, &out, &dout, &stats, &dqkv, &batch, &heads, &n, &d,
                          &scale, &threads))
        return nullptr;
    if (!valid_shape(n, d)) return nullptr;
#ifdef CORE_X86
    if (bf16 && !bf16_runs()) return nullptr;
    const Problem P{pointer(qkv), pointer(bias), pointer(out), pointer(dout), nullptr, pointer(stats), pointer(dqkv),
                    batch, heads, n, d, scale};
    Py_BEGIN_ALLOW_THREADS run(P, threads, bf16 ? Pass::backward_bf16 : Pass::backward);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
#else
    return PyErr_Format(PyExc_RuntimeError, "narrow attention needs an x86-64 CPU");
#endif
}

static PyObject* py_backward(PyObject*, PyObject* args) { return backward(args, false); }

static PyObject* py_backward_bf16(PyObject*, PyObject* args) { return backward(args, true); }

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernels (AVX2 and FMA)."},
    {"forward", py_forward, METH_VARARGS, "forward(qkv, bias, out, stats, batch, heads, tokens, d, scale, threads)"},
    {"supported_bf16", py_supported_bf16, METH_NOARGS,
     "Whether this CPU runs forward_bf16 and backward_bf16 (AVX-512-BF16)."},
    {"forward_bf16", py_forward_bf16, METH_VARARGS,
     "forward with the products in bf16 (core/_narrow_attention_bf16.h); arguments as forward's"},
    {"backward", py_backward, METH_VARARGS,
     "backward(qkv, bias, out, grad_out, stats, dqkv, batch, heads, tokens, d, scale, threads)"},
    {"backward_bf16", py_backward_bf16, METH_VARARGS,
     "backward of forward_bf16, its products in bf16 (core/_narrow_attention_bf16.h); arguments as backward's"},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_narrow_attention", "Narrow-head fp32 attention kernels.", -1,
                             methods, nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__narrow_attention(void) { return PyModule_Create(&module); }
