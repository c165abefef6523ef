// The passes of core/_narrow_attention.cpp with their products in bf16 (AVX-512-BF16's dot
// products, fp32 sums), for CPUs that have them: the forward pass, for sampling and for training
// under bf16 autocast, and training's backward pass.
//
// Why it exists: for heads of 16 to 64 channels the products are most of a layer's work, and
// VDPBF16PS does twice the multiply-adds of an fp32 FMA per instruction (Zen 4: 444 against 200
// GFLOP/s in MKL's products on 2 cores). Heads of 4 and 8 channels are bound by the exponentials
// instead, which here take fewer operations than in the AVX2 kernels (VSCALEFPS, and a degree-3
// polynomial where the weights are rounded to bf16 anyway), and their weights go straight into
// the products without a pass of their own: on 2 Zen 4 cores such a pass over 784 tokens with
// 4-channel heads took 0.68 of the fp32 kernel's time, over 196 tokens with 8-channel heads 0.50
// (scratch s35/ab2.sh, builds in alternation). The backward pass over 128 maps of 784 tokens took
// 0.58 of the fp32 kernel's time with 16- and 4-channel heads, over 196 tokens 0.65-0.71 (scratch
// s36/kt.py). Everything else stays fp32: the scores, the softmax and its sums, dS, the outputs
// and gradients. The rounding is torch's bf16 autocast's, the products' operands to bf16
// (relative 2^-9), which is why these are kernels of their own that auto only times where the
// config's precision lets bf16 run (core/autotune.py).
//
// Layout: per map, keys as channel pairs along the keys (D/2, n32: lane j of pair p holds key j's
// channels 2p and 2p+1), so that each dot product's pair is one 32-bit lane and the other operand
// a broadcast query channel pair. Values of heads of 16 channels or more as key pairs along the
// channels (n32/2, D: lane c of pair p holds channel c of keys 2p and 2p+1), the other operand a
// broadcast pair of weights; of narrower heads along the keys, channel by channel (D, n32 in bf16:
// lane i of channel c holds keys 2i and 2i+1), the other operand a row's weights, whose lanes are
// summed at the end. The backward pass lays the values out as the keys, and the keys also as the
// values (dQ = dS K), and sums dK and dV transposed, (D, n32), from pairs of query rows along the
// keys. Tokens are padded to a multiple of 32 with zeros. Included by
// core/_narrow_attention.cpp inside its namespace, after the rows it reads (In, Out). GCC and
// clang only; elsewhere the module says bf16 is not supported, and attention under bf16 autocast
// goes to torch's kernels (core/attention.py).
#pragma once

#if defined(CORE_X86) && (defined(__GNUC__) || defined(__clang__))
#define CORE_BF16 1
#define BF16_FN __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

inline bool avx512_bf16_supported() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

constexpr int BR = 8;  // query rows per register tile: 16 accumulators of 16 keys or 16 channels

// x + bias to bf16 (rounded to nearest even), count a multiple of 16 or less than 16: consecutive
// values pair up.
BF16_FN inline void to_bf16(const float* x, const float* bias, int count, uint16_t* out) {
    for (int c = 0; c < count; c += 16) {
        const __mmask16 lanes = count - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (count - c)) - 1);
        const __m512 y = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, x + c), _mm512_maskz_loadu_ps(lanes, bias + c));
        _mm256_mask_storeu_epi16(out + c, lanes, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y)));
    }
}

// The rows i0 .. i0 + BR of x + bias in bf16, (BR, D) into out; rows past the end repeat the last one.
template <int D>
BF16_FN inline void block_rows_bf16(In x, const float* bias, int i0, int rows, uint16_t* out) {
    for (int r = 0; r < BR; ++r) to_bf16(x[i0 + std::min(r, rows - 1)], bias, D, out + r * D);
}

// Lane i: a[i] in bf16 in the low half, b[i] in the high half.
BF16_FN inline __m512i bf16_pairs(__m512 a, __m512 b) {
    const __m512i low = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a)));
    const __m512i high = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(b)));
    return _mm512_or_si512(low, _mm512_slli_epi32(high, 16));
}

BF16_FN inline __m512 dot_pairs(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

// 2^x for 16 lanes, the integer part applied by VSCALEFPS, the fraction's power by a degree-3
// polynomial (relative error 1.0e-4, minimax on [-1/2, 1/2] with 2^0 = 1): the weights it makes
// are rounded to bf16 (relative 2^-9) before they are used, so the fp32 kernels' degree 4 (2.8e-6)
// bought nothing, and one FMA fewer made the pass over 784 tokens with 16-channel heads take
// 0.95 of the time (2 Zen 4 cores, builds in alternation; scratch s35/ab2.sh).
BF16_FN inline __m512 exp2_16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    const __m512 whole = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, whole);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(5.5008914321660995e-2f), r, _mm512_set1_ps(2.422109991312027e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(6.93282961845398e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, whole);
}

// Lanes of the 16 keys from j that are real tokens.
inline __mmask16 real_keys(int j, int n) {
    const int real = n - j;
    return real >= 16 ? __mmask16(0xFFFF) : real <= 0 ? __mmask16(0) : __mmask16((1u << real) - 1);
}

// The D x n32 transposed tokens xT as channel pairs along the keys, (D/2, n32): lane j of pair p
// holds token j's channels 2p and 2p+1, the layout of the scores' right operand.
template <int D>
BF16_FN void channel_pairs(const float* xT, int n32, uint32_t* out) {
    for (int p = 0; p < D / 2; ++p)
        for (int j = 0; j < n32; j += 16) {
            const float* even = xT + 2 * p * n32 + j;
            _mm512_storeu_si512(out + p * n32 + j, bf16_pairs(_mm512_loadu_ps(even), _mm512_loadu_ps(even + n32)));
        }
}

// The n tokens x + bias as the right operand of a product with rows of weights over the keys:
// key pairs along the channels, (n32/2, D), or for heads under 16 channels along the keys, (D,
// n32/2) bf16 pairs, from xT, their transpose. Zero past n.
template <int D>
BF16_FN void product_rows(In x, const float* bias, int n, const float* xT, int n32, uint32_t* out) {
    if constexpr (D < 16) {
        for (int c = 0; c < D; ++c)
            for (int j = 0; j < n32; j += 32) {
                const float* t = xT + c * n32 + j;
                _mm512_storeu_si512(out + (c * n32 + j) / 2, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(
                                                                 _mm512_loadu_ps(t + 16), _mm512_loadu_ps(t))));
            }
    } else {
        for (int j = 0; j < n32; j += 2)
            for (int c = 0; c < D; c += 16) {
                const __m512 b = _mm512_loadu_ps(bias + c);
                const __m512 first = j < n ? _mm512_add_ps(_mm512_loadu_ps(x[j] + c), b) : _mm512_setzero_ps();
                const __m512 second = j + 1 < n ? _mm512_add_ps(_mm512_loadu_ps(x[j + 1] + c), b) : _mm512_setzero_ps();
                _mm512_storeu_si512(out + j / 2 * D + c, bf16_pairs(first, second));
            }
    }
}

template <int D>
struct Bf16Buffers {
    static constexpr int P = D / 2;  // channel pairs
    // heads under 16 channels: values along the keys and weights straight into the products
    static constexpr bool along_keys = D < 16;
    int n, n32;
    std::vector<float> xT;  // (D, n32): the keys, then (along_keys) the values, transposed; zero past n
    // keys (P, n32); values (n32 / 2, D), or along_keys (D, n32 / 2); queries (BR, P)
    std::vector<uint32_t> keys, values, queries;
    std::vector<float> scores;  // (BR, n32)
    std::vector<uint16_t> weights;  // (BR, n32): the softmax's numerators in bf16; none along_keys
    explicit Bf16Buffers(int tokens)
        : n(tokens), n32((tokens + 31) / 32 * 32), xT(D * n32), keys(P * n32), values(n32 / 2 * D),
          queries(BR * P), scores(BR * n32), weights(along_keys ? 0 : BR * n32) {}

    BF16_FN void pack(In k, In v, const float* const* bias) {
        transpose(k, bias[1]);
        channel_pairs<D>(xT.data(), n32, keys.data());
        if constexpr (along_keys) transpose(v, bias[2]);
        product_rows<D>(v, bias[2], n, xT.data(), n32, values.data());
    }

    void transpose(In x, const float* bias) { transpose_rows<D>(x, bias, n, n32, xT.data()); }

    // The query block from i0 as channel pairs; rows past the end repeat the last one.
    BF16_FN void query_pairs(In q, const float* bias, int i0, int rows) {
        block_rows_bf16<D>(q, bias, i0, rows, reinterpret_cast<uint16_t*>(queries.data()));
    }
};

// acc[r][h] = the BR rows' (rows, (BR, D/2) channel pairs) dot products with the 16 tokens from
// j + 16 h of `pairs`, (D/2, n32) channel pairs along the keys: the unscaled scores of queries
// against keys, or in the backward pass dP, the output gradient's against the values.
template <int D>
BF16_FN inline void score_tile(const uint32_t* rows, const uint32_t* pairs, int n32, int j, __m512 (*acc)[2]) {
    constexpr int P = D / 2;
    for (int r = 0; r < BR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < P; ++p) {
        const uint32_t* row = pairs + p * n32 + j;
        const __m512i b0 = _mm512_loadu_si512(row), b1 = _mm512_loadu_si512(row + 16);
        for (int r = 0; r < BR; ++r) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(rows[r * P + p]));
            acc[r][0] = dot_pairs(acc[r][0], a, b0);
            acc[r][1] = dot_pairs(acc[r][1], a, b1);
        }
    }
}

// out_r = factor[r] sum_j w[r][j] x_j for the BR rows of weights w (BR, n32) in bf16 and the tokens
// x laid out by product_rows (key pairs along the channels), channels c0 .. c0 + 16 H.
template <int D, int H>
BF16_FN inline void weighted_rows_bf16(const uint16_t* weights, const uint32_t* x, int n32, int c0,
                                       const float* factor, int rows, Out out, int i0) {
    __m512 acc[BR][H];
    for (int r = 0; r < BR; ++r)
        for (int h = 0; h < H; ++h) acc[r][h] = _mm512_setzero_ps();
    const uint32_t* w = reinterpret_cast<const uint32_t*>(weights);
    const int pairs = n32 / 2;
    for (int jp = 0; jp < pairs; ++jp) {
        __m512i b[H];
        for (int h = 0; h < H; ++h) b[h] = _mm512_loadu_si512(x + jp * D + c0 + 16 * h);
        for (int r = 0; r < BR; ++r) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(w[r * pairs + jp]));
            for (int h = 0; h < H; ++h) acc[r][h] = dot_pairs(acc[r][h], a, b[h]);
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int h = 0; h < H; ++h)
            _mm512_storeu_ps(out[i0 + r] + c0 + 16 * h, _mm512_mul_ps(acc[r][h], _mm512_set1_ps(factor[r])));
}

// weighted_rows_bf16 over all the channels, 32 at a time (16 accumulators at most).
template <int D>
BF16_FN inline void weighted_rows_bf16(const uint16_t* weights, const uint32_t* x, int n32, const float* factor,
                                       int rows, Out out, int i0) {
    constexpr int H = D / 16 < 2 ? D / 16 : 2;
    for (int c0 = 0; c0 < D; c0 += 16 * H) weighted_rows_bf16<D, H>(weights, x, n32, c0, factor, rows, out, i0);
}

// Heads under 16 channels: row r's attended values into o and the reciprocal of its softmax sum,
// its weights made from its scores (maximum m) 32 keys at a time and taken straight into the dot
// products with the values, whose lanes run along the keys (two keys a lane): each output channel
// is one register's lanes summed at the end.
template <int D>
BF16_FN inline float attend_narrow(const Bf16Buffers<D>& B, int r, float m, float scale, float* o) {
    const __m512 base2 = _mm512_set1_ps(scale * LOG2E), shifted = _mm512_set1_ps(-m * (scale * LOG2E));
    const float* s = B.scores.data() + r * B.n32;
    __m512 acc[D], total = _mm512_setzero_ps();
    for (int c = 0; c < D; ++c) acc[c] = _mm512_setzero_ps();
    for (int j = 0; j < B.n32; j += 32) {
        const __m512 p0 = exp2_16(_mm512_fmadd_ps(_mm512_loadu_ps(s + j), base2, shifted));
        const __m512 p1 = exp2_16(_mm512_fmadd_ps(_mm512_loadu_ps(s + j + 16), base2, shifted));
        total = _mm512_add_ps(total, _mm512_add_ps(p0, p1));
        const __m512i w = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0));
        for (int c = 0; c < D; ++c)
            acc[c] = dot_pairs(acc[c], w, _mm512_loadu_si512(B.values.data() + (c * B.n32 + j) / 2));
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    for (int c = 0; c < D; ++c) o[c] = _mm512_reduce_add_ps(acc[c]) * inv;
    return inv;
}

template <int D>
BF16_FN void forward_map_bf16(In q, In k, In v, const float* const* bias, Out out, float* stats, float scale,
                              Bf16Buffers<D>& B) {
    const int n = B.n, n32 = B.n32;
    B.pack(k, v, bias);
    for (int i0 = 0; i0 < n; i0 += BR) {
        const int rows = std::min(BR, n - i0);
        B.query_pairs(q, bias[0], i0, rows);
        __m512 vmax[BR];
        for (int r = 0; r < BR; ++r) vmax[r] = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < n32; j += 32) {
            __m512 acc[BR][2];
            score_tile<D>(B.queries.data(), B.keys.data(), n32, j, acc);
            const __mmask16 real[2] = {real_keys(j, n), real_keys(j + 16, n)};
            for (int r = 0; r < BR; ++r)
                for (int h = 0; h < 2; ++h) {
                    const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), real[h], acc[r][h]);
                    vmax[r] = _mm512_max_ps(vmax[r], s);
                    _mm512_storeu_ps(B.scores.data() + r * n32 + j + 16 * h, s);
                }
        }
        float mx[BR], inv[BR];
        for (int r = 0; r < BR; ++r) mx[r] = _mm512_reduce_max_ps(vmax[r]);
        if constexpr (Bf16Buffers<D>::along_keys) {
            for (int r = 0; r < rows; ++r) inv[r] = attend_narrow<D>(B, r, mx[r], scale, out[i0 + r]);
        } else {
            const __m512 base2 = _mm512_set1_ps(scale * LOG2E);
            for (int r = 0; r < BR; ++r) {
                const __m512 shifted = _mm512_set1_ps(-mx[r] * (scale * LOG2E));
                const float* s = B.scores.data() + r * n32;
                __m512 total = _mm512_setzero_ps();
                for (int j = 0; j < n32; j += 32) {
                    const __m512 p0 = exp2_16(_mm512_fmadd_ps(_mm512_loadu_ps(s + j), base2, shifted));
                    const __m512 p1 = exp2_16(_mm512_fmadd_ps(_mm512_loadu_ps(s + j + 16), base2, shifted));
                    total = _mm512_add_ps(total, _mm512_add_ps(p0, p1));
                    _mm512_storeu_si512(B.weights.data() + r * n32 + j,
                                        reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0)));
                }
                inv[r] = 1.0f / _mm512_reduce_add_ps(total);
            }
            weighted_rows_bf16<D>(B.weights.data(), B.values.data(), n32, inv, rows, out, i0);
        }
        for (int r = 0; r < rows; ++r) {
            stats[2 * (i0 + r)] = mx[r];
            stats[2 * (i0 + r) + 1] = inv[r];
        }
    }
}

// Per-thread buffers of the bf16 backward pass, for maps of `tokens` tokens (none for 0).
template <int D>
struct Bf16GradBuffers {
    static constexpr int P = D / 2, RP = BR / 2;  // channel pairs; pairs of query rows
    int n, n32;
    // xT: the keys, then the values, transposed (D, n32); dkT, dvT: the keys' and values'
    // gradients transposed (D, n32), fp32 sums; probs: the block's softmax weights, 32 keys (BR, 32)
    std::vector<float> xT, dkT, dvT, probs;
    // keys, values (P, n32) channel pairs along the keys; keyRows, the keys as product_rows lays
    // them out; queries, douts: the block's rows (BR, P); queryPairs, doutPairs (RP, D): lane c
    // of pair p holds channel c of the block's rows 2p and 2p + 1
    std::vector<uint32_t> keys, values, keyRows, queries, douts, queryPairs, doutPairs;
    std::vector<uint16_t> grads;  // (BR, n32): the block's dS in bf16
    explicit Bf16GradBuffers(int tokens)
        : n(tokens), n32((tokens + 31) / 32 * 32), xT(D * n32), dkT(D * n32), dvT(D * n32), probs(BR * 32),
          keys(P * n32), values(P * n32), keyRows(n32 / 2 * D), queries(BR * P), douts(BR * P),
          queryPairs(RP * D), doutPairs(RP * D), grads(BR * n32) {}

    BF16_FN void pack(In k, In v, const float* const* bias) {
        transpose_rows<D>(k, bias[1], n, n32, xT.data());
        channel_pairs<D>(xT.data(), n32, keys.data());
        product_rows<D>(k, bias[1], n, xT.data(), n32, keyRows.data());
        transpose_rows<D>(v, bias[2], n, n32, xT.data());
        channel_pairs<D>(xT.data(), n32, values.data());
        std::fill(dkT.begin(), dkT.end(), 0.0f);
        std::fill(dvT.begin(), dvT.end(), 0.0f);
    }

    // The block's rows of x + bias from i0 in bf16, as channel pairs (BR, P) and as pairs of rows
    // (RP, D); rows past the end repeat the last one.
    BF16_FN void block(In x, const float* bias, int i0, int rows, std::vector<uint32_t>& byRow,
                       std::vector<uint32_t>& byPair) const {
        uint16_t* half = reinterpret_cast<uint16_t*>(byRow.data());
        block_rows_bf16<D>(x, bias, i0, rows, half);
        for (int rp = 0; rp < RP; ++rp)
            for (int c = 0; c < D; ++c)
                byPair[rp * D + c] = half[2 * rp * D + c] | static_cast<uint32_t>(half[(2 * rp + 1) * D + c]) << 16;
    }
};

// grad^T[c][j..j+32] += sum over the block's rows r of w[r][j..] x[r][c] for every channel c: the
// keys' or values' gradient, transposed, from the 32 keys' weights w (RP pairs of rows along the
// keys, two registers of 16 keys each) and the rows x as pairs of rows (RP, D).
template <int D>
BF16_FN inline void accumulate_keys(const __m512i (*w)[2], const uint32_t* x, int n32, int j, float* gradT) {
    constexpr int RP = BR / 2;
    for (int c = 0; c < D; ++c) {
        float* g = gradT + c * n32 + j;
        __m512 acc[2] = {_mm512_loadu_ps(g), _mm512_loadu_ps(g + 16)};
        for (int rp = 0; rp < RP; ++rp) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(x[rp * D + c]));
            acc[0] = dot_pairs(acc[0], w[rp][0], a);
            acc[1] = dot_pairs(acc[1], w[rp][1], a);
        }
        _mm512_storeu_ps(g, acc[0]);
        _mm512_storeu_ps(g + 16, acc[1]);
    }
}

// Heads under 16 channels: out_r = factor sum_j w[r][j] x_j for the block's rows r < rows, the
// weights (BR, n32) in bf16 and x laid out along the keys by product_rows; each channel one
// register's lanes summed at the end, as attend_narrow does.
template <int D>
BF16_FN inline void weighted_rows_along_keys(const uint16_t* weights, const uint32_t* x, int n32, float factor,
                                             int rows, Out out, int i0) {
    for (int r = 0; r < rows; ++r) {
        __m512 acc[D];
        for (int c = 0; c < D; ++c) acc[c] = _mm512_setzero_ps();
        for (int j = 0; j < n32; j += 32) {
            const __m512i w = _mm512_loadu_si512(weights + r * n32 + j);
            for (int c = 0; c < D; ++c) acc[c] = dot_pairs(acc[c], w, _mm512_loadu_si512(x + (c * n32 + j) / 2));
        }
        for (int c = 0; c < D; ++c) out[i0 + r][c] = _mm512_reduce_add_ps(acc[c]) * factor;
    }
}

// The backward pass of forward_map_bf16, one block of BR query rows at a time, in one sweep over
// the keys 32 at a time: P recomputed from the scores as the forward pass computed them (the same
// products in the same order, so the same weights) and its row maxima and sums, dP = dO V^T,
// dS = P (dP - delta), dV += P^T dO and dK += dS^T Q; then dQ = dS K. Every product's operands in
// bf16, their sums fp32, as torch's bf16 autocast rounds them; P, dS and delta fp32 until they
// enter a product.
template <int D>
BF16_FN void backward_map_bf16(In q, In k, In v, const float* const* bias, In out, In dout, const float* stats,
                               Out dq, Out dk, Out dv, float scale, Bf16GradBuffers<D>& B) {
    constexpr int RP = BR / 2;
    const int n = B.n, n32 = B.n32;
    const float zeros[D] = {};
    B.pack(k, v, bias);
    const __m512 base2 = _mm512_set1_ps(scale * LOG2E);
    float* probs = B.probs.data();
    for (int i0 = 0; i0 < n; i0 += BR) {
        const int rows = std::min(BR, n - i0);
        B.block(q, bias[0], i0, rows, B.queries, B.queryPairs);
        B.block(dout, zeros, i0, rows, B.douts, B.doutPairs);
        __m512 shifted[BR], inv[BR], delta[BR];
        __mmask16 live[BR];  // repeated rows add nothing
        for (int r = 0; r < BR; ++r) {
            const int i = i0 + std::min(r, rows - 1);
            float dsum = 0.0f;
            for (int c = 0; c < D; ++c) dsum = std::fma(dout[i][c], out[i][c], dsum);
            shifted[r] = _mm512_set1_ps(-stats[2 * i] * (scale * LOG2E));
            inv[r] = _mm512_set1_ps(stats[2 * i + 1]);
            delta[r] = _mm512_set1_ps(dsum);
            live[r] = r < rows ? __mmask16(0xFFFF) : __mmask16(0);
        }
        for (int j = 0; j < n32; j += 32) {
            __m512 acc[BR][2];
            score_tile<D>(B.queries.data(), B.keys.data(), n32, j, acc);
            const __mmask16 real[2] = {real_keys(j, n), real_keys(j + 16, n)};
            for (int r = 0; r < BR; ++r)
                for (int h = 0; h < 2; ++h)
                    _mm512_storeu_ps(probs + r * 32 + 16 * h,
                                     _mm512_maskz_mul_ps(real[h] & live[r],
                                                         exp2_16(_mm512_fmadd_ps(acc[r][h], base2, shifted[r])), inv[r]));
            score_tile<D>(B.douts.data(), B.values.data(), n32, j, acc);
            __m512i weights[RP][2], grads[RP][2];
            for (int rp = 0; rp < RP; ++rp) {
                __m512 ds[2][2];
                for (int e = 0; e < 2; ++e) {
                    const int r = 2 * rp + e;
                    for (int h = 0; h < 2; ++h)
                        ds[e][h] = _mm512_mul_ps(_mm512_loadu_ps(probs + r * 32 + 16 * h), _mm512_sub_ps(acc[r][h], delta[r]));
                    _mm512_storeu_si512(B.grads.data() + r * n32 + j,
                                        reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(ds[e][1], ds[e][0])));
                }
                for (int h = 0; h < 2; ++h) {
                    weights[rp][h] = bf16_pairs(_mm512_loadu_ps(probs + 2 * rp * 32 + 16 * h),
                                                _mm512_loadu_ps(probs + (2 * rp + 1) * 32 + 16 * h));
                    grads[rp][h] = bf16_pairs(ds[0][h], ds[1][h]);
                }
            }
            accumulate_keys<D>(weights, B.doutPairs.data(), n32, j, B.dvT.data());
            accumulate_keys<D>(grads, B.queryPairs.data(), n32, j, B.dkT.data());
        }
        if constexpr (D < 16) {
            weighted_rows_along_keys<D>(B.grads.data(), B.keyRows.data(), n32, scale, rows, dq, i0);
        } else {
            float factor[BR];
            std::fill(factor, factor + BR, scale);
            weighted_rows_bf16<D>(B.grads.data(), B.keyRows.data(), n32, factor, rows, dq, i0);
        }
    }
    for (int j = 0; j < n; ++j)
        for (int c = 0; c < D; ++c) {
            dk[j][c] = B.dkT[c * n32 + j] * scale;
            dv[j][c] = B.dvT[c * n32 + j];
        }
}

#endif
