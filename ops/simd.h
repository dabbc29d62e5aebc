/* ops/simd.h — the library's one home for SIMD (not installed): vector types, loads and stores
 * (whole and partial), splats, a lane select, the vector e^x, vectors of 8 lanes whose width
 * does not depend on the level (for sums whose order must not), and SL_EACH, the loop shape the
 * compiler vectorises; on GCC/Clang vector extensions. Everything is static inline.
 *
 * The width: in a <name>_isa.c file (tensor/isa.h) it is the level's register, SL_VEC_BYTES
 * (16, 32 or 64 bytes); elsewhere 64 bytes, which the compiler splits into as many registers of
 * the build's target as it takes. sl_vf has SL_VF lanes of float, sl_vd SL_VD lanes of double,
 * sl_vi / sl_vl are the integer vectors a comparison of two of them gives (all ones or all
 * zeros per lane), and sl_vfd is sl_vf's lanes as doubles (two registers). */
#ifndef SL_OPS_SIMD_H
#define SL_OPS_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if !defined(SL_ISA_SUFFIX) || defined(__AVX512F__)
#define SL_VEC_BYTES 64
#elif defined(__AVX2__)
#define SL_VEC_BYTES 32
#else
#define SL_VEC_BYTES 16
#endif

typedef float sl_vf __attribute__((vector_size(SL_VEC_BYTES)));
typedef int32_t sl_vi __attribute__((vector_size(SL_VEC_BYTES)));
typedef double sl_vd __attribute__((vector_size(SL_VEC_BYTES)));
typedef int64_t sl_vl __attribute__((vector_size(SL_VEC_BYTES)));
typedef double sl_vfd __attribute__((vector_size(2 * SL_VEC_BYTES)));
enum { SL_VF = SL_VEC_BYTES / 4, SL_VD = SL_VEC_BYTES / 8 };

/* ---------------------------------------------------------------- loops */

/* for (i = 0; i < n; i++) body, as two loops: the first n - n % 16 iterations, then the rest. A
 * trip count known to be a multiple of 16 is what GCC's -O2 (its "very cheap" cost model) needs
 * to vectorise a loop; every element gets the same operations either way. */
#define SL_EACH(n, body)                                                                         \
    do {                                                                                         \
        int64_t n16_ = (n) & ~(int64_t)15, i = 0;                                                \
        for (; i < n16_; i++) {                                                                  \
            body;                                                                                \
        }                                                                                        \
        for (; i < (n); i++) {                                                                   \
            body;                                                                                \
        }                                                                                        \
    } while (0)

/* ---------------------------------------------------------------- float vectors */

static inline sl_vf sl_vf_load(const float *p)
{
    sl_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl_vf_store(float *p, sl_vf v) { memcpy(p, &v, sizeof v); }

/* x in every lane. Written x - 0, which is x for every x (0 + x is not: 0 + -0 is +0), so the
 * compiler emits the broadcast alone; from 0 + x it adds first (a scalar add per splat, one in
 * every 4 instructions of the product kernel's inner loop). */
static inline sl_vf sl_vf_splat(float x) { return x - (sl_vf){0}; }

/* The first n (< SL_VF) lanes; the others `fill`. A row's last n % SL_VF elements go through
 * the same vector code this way, so every element's result is the same wherever it sits. */
static inline sl_vf sl_vf_load_part(const float *p, int64_t n, float fill)
{
    sl_vf v = sl_vf_splat(fill);
    memcpy(&v, p, sizeof(float) * (size_t)n);
    return v;
}

static inline void sl_vf_store_part(float *p, sl_vf v, int64_t n)
{
    memcpy(p, &v, sizeof(float) * (size_t)n);
}

/* mask ? a : b, lane by lane. */
static inline sl_vf sl_vf_select(sl_vi mask, sl_vf a, sl_vf b)
{
    return (sl_vf)(((sl_vi)a & mask) | ((sl_vi)b & ~mask));
}

/* Lane numbers 0, 1, ..., SL_VF - 1. */
static inline sl_vi sl_vi_iota(void)
{
    sl_vi v;
    for (int i = 0; i < SL_VF; i++) v[i] = i;
    return v;
}

/* The lanes in double, and back (rounded to nearest). */
static inline sl_vfd sl_vf_widen(sl_vf v) { return __builtin_convertvector(v, sl_vfd); }
static inline sl_vf sl_vfd_narrow(sl_vfd v) { return __builtin_convertvector(v, sl_vf); }

/* e^z lane by lane, within 2 ulp: e^z = 2^n e^r, n = round(z / ln 2), |r| <= ln2 / 2, e^r by
 * Cephes' expf polynomial. Lanes above 88.376 (where 2^n would leave the exponent range; the
 * true overflow is at 88.72) give +inf, lanes below -87.33 (FLT_MIN) give 0, -inf gives 0;
 * NaN stays NaN. */
static inline sl_vf sl_vf_exp(sl_vf z)
{
    const sl_vi big = z > 88.3762626647949f, small = z < -87.3365447505531f;
    z = (sl_vf)((sl_vi)z & ~(big | small)); /* out-of-range lanes computed at 0, replaced */
    sl_vf t = z * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    sl_vf n = t - 12582912.0f;
    sl_vf r = z - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    sl_vf p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    sl_vi e = (__builtin_convertvector(n, sl_vi) + 127) << 23; /* 2^n, n in [-126, 127] */
    sl_vi y = (sl_vi)(p * (sl_vf)e) & ~small;
    const sl_vi inf = (sl_vi){0} + 0x7f800000;
    return (sl_vf)((y & ~big) | (inf & big));
}

/* e^x for lanes x <= 0 (a logit minus a maximum or a log-sum-exp over it), cheaper than
 * sl_vf_exp: within 1.05 ulp, 0 below log(FLT_MIN) and for -inf; NaN stays NaN. The same
 * reduction and polynomial; nothing checks for overflow, so a lane above 0 is wrong. */
static inline sl_vf sl_vf_exp_nonpos(sl_vf x)
{
    const sl_vi tiny = x < -87.33654f;
    x = (sl_vf)((sl_vi)x & ~tiny); /* tiny lanes: 0, any finite value would do */
    sl_vf t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    sl_vf n = t - 12582912.0f;
    sl_vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    sl_vf p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    sl_vi e = (__builtin_convertvector(n, sl_vi) + 127) << 23; /* 2^n, n in [-126, 0] */
    sl_vf y = p * (sl_vf)e;
    return (sl_vf)((sl_vi)y & ~tiny);
}

/* ---------------------------------------------------------------- double vectors */

static inline sl_vd sl_vd_load(const double *p)
{
    sl_vd v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl_vd_store(double *p, sl_vd v) { memcpy(p, &v, sizeof v); }

static inline sl_vd sl_vd_splat(double x) { return x - (sl_vd){0}; } /* as sl_vf_splat */

/* SL_VD floats in double, and back (rounded to nearest) into memory; the _f64 forms are the
 * plain load and store, for kernels written over T (FN(sl_vd_wide), FN(sl_vd_narrow)). */
typedef float sl_vd_f32 __attribute__((vector_size(SL_VEC_BYTES / 2)));

/* SL_VD floats as doubles. GCC 12 makes __builtin_convertvector of a whole register's worth
 * two half-width conversions and an insert (at AVX-512 also an extract): shuffle-port work
 * where one vcvtps2pd does, the bottleneck of layer norm's passes. */
static inline sl_vd sl_vd_widen(sl_vd_f32 v)
{
#if SL_VEC_BYTES == 64 && defined(__AVX512F__)
    return (sl_vd)_mm512_cvtps_pd((__m256)v);
#elif SL_VEC_BYTES == 32 && defined(__AVX__)
    return (sl_vd)_mm256_cvtps_pd((__m128)v);
#else
    return __builtin_convertvector(v, sl_vd);
#endif
}

static inline sl_vd sl_vd_wide_f32(const float *p)
{
    sl_vd_f32 v;
    memcpy(&v, p, sizeof v);
    return sl_vd_widen(v);
}

static inline void sl_vd_narrow_f32(float *p, sl_vd v)
{
    sl_vd_f32 f = __builtin_convertvector(v, sl_vd_f32);
    memcpy(p, &f, sizeof f);
}

static inline sl_vd sl_vd_wide_f64(const double *p) { return sl_vd_load(p); }
static inline void sl_vd_narrow_f64(double *p, sl_vd v) { sl_vd_store(p, v); }

/* p[0 .. SL_VD - 1] += v, v rounded to T first and the add in T (as a scalar p[i] += (T)v[i]). */
static inline void sl_vd_add_to_f32(float *p, sl_vd v)
{
    sl_vd_f32 f;
    memcpy(&f, p, sizeof f);
    f += __builtin_convertvector(v, sl_vd_f32);
    memcpy(p, &f, sizeof f);
}

static inline void sl_vd_add_to_f64(double *p, sl_vd v) { sl_vd_store(p, sl_vd_load(p) + v); }

/* e^x lane by lane through libm's exp: f64 is the reference precision. */
static inline sl_vd sl_vd_exp(sl_vd x)
{
    for (int i = 0; i < SL_VD; i++) x[i] = exp(x[i]);
    return x;
}

/* ---------------------------------------------------------------- transposes
 *
 * r[0 .. n - 1], vectors of n lanes, transposed in registers (lane j of r[i] and lane i of r[j]
 * change places), in log2(n) stages of two-vector shuffles: the stage of width s swaps, between
 * r[i] and r[i + s] (bit s of i clear), their s x s blocks off the diagonal, which exchanges bit
 * s of the row with bit s of the lane. A copy: every value keeps its bits. */
#define SL_UNPAREN_(...) __VA_ARGS__
#define SL_SWAP_BLOCKS_(r, n, s, lo, hi)                                                           \
    _Pragma("GCC unroll 16") for (int i_ = 0; i_ < (n); i_++) if (!(i_ & (s))) {                   \
        __typeof__((r)[0]) a_ = (r)[i_], b_ = (r)[i_ + (s)];                                       \
        (r)[i_] = __builtin_shufflevector(a_, b_, SL_UNPAREN_ lo);                                 \
        (r)[i_ + (s)] = __builtin_shufflevector(a_, b_, SL_UNPAREN_ hi);                           \
    }
#define SL_TRANSPOSE_2(r)                                                                          \
    SL_SWAP_BLOCKS_(r, 2, 1, (0, 2), (1, 3))
#define SL_TRANSPOSE_4(r)                                                                          \
    SL_SWAP_BLOCKS_(r, 4, 1, (0, 4, 2, 6), (1, 5, 3, 7))                                           \
    SL_SWAP_BLOCKS_(r, 4, 2, (0, 1, 4, 5), (2, 3, 6, 7))
#define SL_TRANSPOSE_8(r)                                                                          \
    SL_SWAP_BLOCKS_(r, 8, 1, (0, 8, 2, 10, 4, 12, 6, 14), (1, 9, 3, 11, 5, 13, 7, 15))             \
    SL_SWAP_BLOCKS_(r, 8, 2, (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15))             \
    SL_SWAP_BLOCKS_(r, 8, 4, (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15))
#define SL_TRANSPOSE_16(r)                                                                         \
    SL_SWAP_BLOCKS_(r, 16, 1,                                                                      \
                    (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),                   \
                    (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))                   \
    SL_SWAP_BLOCKS_(r, 16, 2,                                                                      \
                    (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),                    \
                    (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))                  \
    SL_SWAP_BLOCKS_(r, 16, 4,                                                                      \
                    (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),                    \
                    (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))                  \
    SL_SWAP_BLOCKS_(r, 16, 8,                                                                      \
                    (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),                      \
                    (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))

/* r[0 .. SL_VF - 1] and r[0 .. SL_VD - 1] transposed (see above). */
static inline __attribute__((always_inline)) void sl_vf_transpose(sl_vf *r)
{
#if SL_VEC_BYTES == 64
    SL_TRANSPOSE_16(r);
#elif SL_VEC_BYTES == 32
    SL_TRANSPOSE_8(r);
#else
    SL_TRANSPOSE_4(r);
#endif
}

static inline __attribute__((always_inline)) void sl_vd_transpose(sl_vd *r)
{
#if SL_VEC_BYTES == 64
    SL_TRANSPOSE_8(r);
#elif SL_VEC_BYTES == 32
    SL_TRANSPOSE_4(r);
#else
    SL_TRANSPOSE_2(r);
#endif
}

/* ---------------------------------------------------------------- 8 lanes at every level
 *
 * Sums in double over 8 lanes, lane k taking elements k, k + 8, ..., then the lanes added
 * pairwise (sl_acc8_hsum): a fixed order, the same at every level and on any thread count, that
 * the compiler can keep in vector registers, where one running double would serialise a row on
 * the latency of an add. sl_v8_f32 / sl_v8_f64 are 8 floats / 8 doubles, for arithmetic on 8
 * elements at once (the optimizers'). */
typedef float sl_v8_f32 __attribute__((vector_size(32)));
typedef double sl_v8_f64 __attribute__((vector_size(64)));

/* 8 floats as doubles (one vcvtps2pd at AVX-512: see sl_vd_widen). */
static inline sl_v8_f64 sl_v8_widen(sl_v8_f32 v)
{
#if defined(__AVX512F__)
    return (sl_v8_f64)_mm512_cvtps_pd((__m256)v);
#else
    return __builtin_convertvector(v, sl_v8_f64);
#endif
}

static inline sl_v8_f32 sl_v8_load_f32(const float *p)
{
    sl_v8_f32 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl_v8_store_f32(float *p, sl_v8_f32 v) { memcpy(p, &v, sizeof v); }

/* A running sum over the 8 lanes, carried from one iteration of a loop to the next, held as
 * SL_ACC8 of the level's own registers (one 64-byte, two 32-byte or four 16-byte vectors;
 * register h holds lanes h SL_VD to h SL_VD + SL_VD - 1). Not one sl_v8_f64: GCC keeps a 64-byte
 * vector that a loop carries in memory when the level has no 64-byte registers (AVX2, SSE2),
 * going through the stack and general registers every iteration; layer norm's forward ran at
 * half the generic level's speed at the AVX2 level that way. */
enum { SL_ACC8 = 8 / SL_VD };
typedef struct {
    sl_vd r[SL_ACC8];
} sl_acc8;

/* a + the SL_VF lanes of v in double, lane k of a taking v's lanes k mod 8: v[k] + v[k + 8]
 * with 16 lanes (that pair added first), v[k] with 8, v[k] for k < 4 (the others unchanged)
 * with 4. */
static inline sl_acc8 sl_acc8_add_vf(sl_acc8 a, sl_vf v)
{
    sl_vd_f32 half[2]; /* v's lower and upper SL_VD lanes */
    memcpy(half, &v, sizeof half);
    sl_vd lo = sl_vd_widen(half[0]), hi = sl_vd_widen(half[1]);
#if SL_VEC_BYTES == 64
    a.r[0] += lo + hi;
#else
    a.r[0] += lo;
    a.r[1] += hi;
#endif
    return a;
}

static inline double sl_acc8_hsum(sl_acc8 a)
{
    double l[8];
    memcpy(l, a.r, sizeof l);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* sqrt lane by lane, correctly rounded (as sqrt() is), in vector instructions where the level
 * has them: libm's sqrt keeps errno, which stops the compiler vectorising it. */
static inline sl_v8_f64 sl_v8_sqrt(sl_v8_f64 x)
{
#if defined(__AVX512F__)
    return (sl_v8_f64)_mm512_sqrt_pd((__m512d)x);
#elif defined(__AVX__)
    __m256d h[2];
    memcpy(h, &x, sizeof h);
    for (int i = 0; i < 2; i++) h[i] = _mm256_sqrt_pd(h[i]);
    memcpy(&x, h, sizeof h);
    return x;
#elif defined(__SSE2__)
    __m128d h[4];
    memcpy(h, &x, sizeof h);
    for (int i = 0; i < 4; i++) h[i] = _mm_sqrt_pd(h[i]);
    memcpy(&x, h, sizeof h);
    return x;
#else
    for (int k = 0; k < 8; k++) x[k] = sqrt(x[k]);
    return x;
#endif
}

#endif
