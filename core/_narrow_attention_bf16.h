// The inference pass of core/_narrow_attention.cpp with its two products in bf16 (AVX-512-BF16's
// dot products, fp32 sums), for sampling on CPUs that have them.
//
// Why it exists: for heads of 16 to 64 channels the products are most of a layer's work, and
// VDPBF16PS does twice the multiply-adds of an fp32 FMA per instruction (Zen 4: 444 against 200
// GFLOP/s in MKL's products on 2 cores). Heads of 4 and 8 channels are bound by the exponentials
// instead, which here take fewer operations than in the AVX2 kernels (VSCALEFPS, and a degree-3
// polynomial where the weights are rounded to bf16 anyway), and their weights go straight into
// the products without a pass of their own: on 2 Zen 4 cores such a pass over 784 tokens with
// 4-channel heads took 0.68 of the fp32 kernel's time, over 196 tokens with 8-channel heads 0.50
// (scratch s35/ab2.sh, builds in alternation). Everything else stays fp32: the scores, the
// softmax and its sums, the outputs. The rounding is torch's bf16 autocast's, queries, keys,
// values and the softmax weights to bf16 (relative 2^-9), which is why it is a kernel of its own
// that auto only times where the config's precision lets bf16 run (core/autotune.py) and never in
// training.
//
// Layout: per map, keys as channel pairs along the keys (D/2, n32: lane j of pair p holds key j's
// channels 2p and 2p+1), so that each dot product's pair is one 32-bit lane and the other operand
// a broadcast query channel pair. Values of heads of 16 channels or more as key pairs along the
// channels (n32/2, D: lane c of pair p holds channel c of keys 2p and 2p+1), the other operand a
// broadcast pair of weights; of narrower heads along the keys, channel by channel (D, n32 in bf16:
// lane i of channel c holds keys 2i and 2i+1), the other operand a row's weights, whose lanes are
// summed at the end. Tokens are padded to a multiple of 32 with zeros. Included by
// core/_narrow_attention.cpp inside its namespace, after the rows it reads (In, Out). GCC and
// clang only; elsewhere the module says bf16 is not supported and sampling keeps the fp32 kernels.
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
        for (int p = 0; p < P; ++p)
            for (int j = 0; j < n32; j += 16) {
                const float* even = xT.data() + 2 * p * n32 + j;
                _mm512_storeu_si512(keys.data() + p * n32 + j,
                                    bf16_pairs(_mm512_loadu_ps(even), _mm512_loadu_ps(even + n32)));
            }
        if constexpr (along_keys) {
            transpose(v, bias[2]);
            for (int c = 0; c < D; ++c)
                for (int j = 0; j < n32; j += 32) {
                    const float* x = xT.data() + c * n32 + j;
                    _mm512_storeu_si512(values.data() + (c * n32 + j) / 2, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(
                                                                                _mm512_loadu_ps(x + 16), _mm512_loadu_ps(x))));
                }
        } else {
            for (int j = 0; j < n; j += 2)
                for (int c = 0; c < D; c += 16) {
                    const __m512 b = _mm512_loadu_ps(bias[2] + c);
                    const __m512 first = _mm512_add_ps(_mm512_loadu_ps(v[j] + c), b);
                    const __m512 second =
                        j + 1 < n ? _mm512_add_ps(_mm512_loadu_ps(v[j + 1] + c), b) : _mm512_setzero_ps();
                    _mm512_storeu_si512(values.data() + j / 2 * D + c, bf16_pairs(first, second));
                }
        }
    }

    void transpose(In x, const float* bias) { transpose_rows<D>(x, bias, n, n32, xT.data()); }

    // The query block from i0 as channel pairs; rows past the end repeat the last one.
    BF16_FN void query_pairs(In q, const float* bias, int i0, int rows) {
        for (int r = 0; r < BR; ++r)
            to_bf16(q[i0 + std::min(r, rows - 1)], bias, D, reinterpret_cast<uint16_t*>(queries.data() + r * P));
    }
};

// The unscaled scores of the BR query rows against the 32 keys from j.
template <int D>
BF16_FN inline void score_tile(const Bf16Buffers<D>& B, int j, __m512 (*acc)[2]) {
    for (int r = 0; r < BR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < Bf16Buffers<D>::P; ++p) {
        const uint32_t* row = B.keys.data() + p * B.n32 + j;
        const __m512i b0 = _mm512_loadu_si512(row), b1 = _mm512_loadu_si512(row + 16);
        for (int r = 0; r < BR; ++r) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(B.queries[r * Bf16Buffers<D>::P + p]));
            acc[r][0] = dot_pairs(acc[r][0], a, b0);
            acc[r][1] = dot_pairs(acc[r][1], a, b1);
        }
    }
}

// out_r = sum_j w[r][j] v_j for the BR rows, channels c0 .. c0 + 16 H, each row divided by its sum.
template <int D, int H>
BF16_FN inline void weighted_values(const Bf16Buffers<D>& B, int c0, const float* inv, int rows, Out out, int i0) {
    __m512 acc[BR][H];
    for (int r = 0; r < BR; ++r)
        for (int h = 0; h < H; ++h) acc[r][h] = _mm512_setzero_ps();
    const uint32_t* w = reinterpret_cast<const uint32_t*>(B.weights.data());
    const int pairs = B.n32 / 2;
    for (int jp = 0; jp < pairs; ++jp) {
        __m512i b[H];
        for (int h = 0; h < H; ++h) b[h] = _mm512_loadu_si512(B.values.data() + jp * D + c0 + 16 * h);
        for (int r = 0; r < BR; ++r) {
            const __m512i a = _mm512_set1_epi32(static_cast<int>(w[r * pairs + jp]));
            for (int h = 0; h < H; ++h) acc[r][h] = dot_pairs(acc[r][h], a, b[h]);
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int h = 0; h < H; ++h)
            _mm512_storeu_ps(out[i0 + r] + c0 + 16 * h, _mm512_mul_ps(acc[r][h], _mm512_set1_ps(inv[r])));
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
            score_tile<D>(B, j, acc);
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
            constexpr int H = D / 16 < 2 ? D / 16 : 2;  // 16 accumulators at most
            for (int c0 = 0; c0 < D; c0 += 16 * H) weighted_values<D, H>(B, c0, inv, rows, out, i0);
        }
        for (int r = 0; r < rows; ++r) {
            stats[2 * (i0 + r)] = mx[r];
            stats[2 * (i0 + r) + 1] = inv[r];
        }
    }
}

#endif
