// What the compiled kernels (core/_narrow_attention.cpp, core/_norm_act.cpp, core/_winograd.cpp,
// core/_matmul.cpp) share:
// the x86-64 detection, the AVX2+FMA target attribute, the run-time CPU check and the vector math helpers.
// Each kernel file is built for the baseline ISA; only functions marked AVX2_FN use AVX2, and they
// run only where avx2_fma_supported() said yes.
#pragma once

#include <Python.h>

#include <cmath>

#if defined(__x86_64__) || defined(_M_X64)
#define CORE_X86 1
#include <immintrin.h>
#ifdef _MSC_VER
#include <intrin.h>
#endif
#if defined(__GNUC__) || defined(__clang__)
#define AVX2_FN __attribute__((target("avx2,fma")))
#else
#define AVX2_FN
#endif
#endif

#ifdef CORE_X86
namespace {

constexpr float LOG2E = 1.44269504088896341f;  // e^x = 2^(x log2 e)

// 2^x in fp32 for x < 127 (callers clamp larger inputs): a degree-5 polynomial on the fraction
// (fitted to 2^r on [-1/2, 1/2] with 2^0 exactly 1: relative error 1.9e-7 evaluated in fp32,
// against 1.0e-7 at degree 6, which took one FMA more; Degree 4, one FMA less: 2.9e-6) with the
// integer part added to the exponent bits; inputs below -126, -infinity included, give 2^-126. 10 vector ops against the
// 18 of a natural exp with its two-part range reduction, which attention's 4-channel heads spend
// most of their time in. For N vectors in place, evaluated stage by stage: each is one chain of
// dependent operations (five FMAs in a row), and N chains side by side keep the FMA pipes busier
// than one after another (attention's forward pass, 100 maps of 784 tokens on 2 AVX2 EPYC cores,
// with N = 4: 16-channel heads 139-141 against 132-133 ms, 4-channel heads 72-73 against 70-71).
template <int N, int Degree = 5>
AVX2_FN inline void exp2_n(__m256* x) {
    static_assert(Degree == 4 || Degree == 5);
    __m256 whole[N], r[N], y[N];
    for (int i = 0; i < N; ++i) {
        x[i] = _mm256_max_ps(x[i], _mm256_set1_ps(-126.0f));
        whole[i] = _mm256_round_ps(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    for (int i = 0; i < N; ++i) r[i] = _mm256_sub_ps(x[i], whole[i]);
    if constexpr (Degree == 5) {
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(_mm256_set1_ps(1.3270233757793903e-3f), r[i], _mm256_set1_ps(9.671706706285477e-3f));
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(5.550716817378998e-2f));
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(2.4022237956523895e-1f));
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(6.931470036506653e-1f));
    } else {
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(_mm256_set1_ps(9.582826808165728e-3f), r[i], _mm256_set1_ps(5.590637580547839e-2f));
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(2.4024098762257615e-1f));
        for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(6.931241991206918e-1f));
    }
    for (int i = 0; i < N; ++i) y[i] = _mm256_fmadd_ps(y[i], r[i], _mm256_set1_ps(1.0f));
    for (int i = 0; i < N; ++i) {
        const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(whole[i]), 23);
        x[i] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y[i]), e));
    }
}

AVX2_FN inline __m256 exp2_8(__m256 x) {
    exp2_n<1>(&x);
    return x;
}

AVX2_FN inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_FN inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline bool avx2_fma_supported() {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(_MSC_VER)
    // AVX2 and FMA by CPUID, and the OS saving the YMM registers (OSXSAVE, then XCR0 bits 1-2)
    int info[4];
    __cpuid(info, 1);
    const bool fma = info[2] & (1 << 12), osxsave = info[2] & (1 << 27);
    if (!fma || !osxsave || (_xgetbv(0) & 6) != 6) return false;
    __cpuidex(info, 7, 0);
    return info[1] & (1 << 5);
#else
    return false;
#endif
}

}  // namespace
#endif  // CORE_X86

// The Python side of both modules: "supported" and the data pointers Python passes as integers.
static PyObject* py_supported(PyObject*, PyObject*) {
#ifdef CORE_X86
    return PyBool_FromLong(avx2_fma_supported());
#else
    Py_RETURN_FALSE;
#endif
}

static float* pointer(unsigned long long address) { return reinterpret_cast<float*>(address); }
