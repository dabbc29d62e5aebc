/* ops/simd.h — the library's one home for SIMD (not installed): vector types, loads and stores
 * (whole and partial), a splat, a lane select and the vector e^x, on GCC/Clang vector
 * extensions.
 *
 * The width: in a <name>_isa.c file (ops/isa.h) it is the level's register, SL_VEC_BYTES (16,
 * 32 or 64 bytes); elsewhere 64 bytes, which the compiler splits into as many registers of the
 * build's target as it takes. sl_vf has SL_VF lanes of float, sl_vd SL_VD lanes of double, and
 * sl_vi / sl_vl are the integer vectors a comparison of two of them gives (all ones or all
 * zeros per lane). Everything is static inline. */
#ifndef SL_OPS_SIMD_H
#define SL_OPS_SIMD_H

#include "isa.h"

#include <stdint.h>
#include <string.h>

#ifndef SL_VEC_BYTES
#define SL_VEC_BYTES 64
#endif

typedef float sl_vf __attribute__((vector_size(SL_VEC_BYTES)));
typedef int32_t sl_vi __attribute__((vector_size(SL_VEC_BYTES)));
typedef double sl_vd __attribute__((vector_size(SL_VEC_BYTES)));
typedef int64_t sl_vl __attribute__((vector_size(SL_VEC_BYTES)));
enum { SL_VF = SL_VEC_BYTES / 4, SL_VD = SL_VEC_BYTES / 8 };

static inline sl_vf sl_vf_load(const float *p)
{
    sl_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl_vf_store(float *p, sl_vf v) { memcpy(p, &v, sizeof v); }

static inline sl_vf sl_vf_splat(float x) { return (sl_vf){0} + x; }

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

static inline sl_vd sl_vd_load(const double *p)
{
    sl_vd v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl_vd_store(double *p, sl_vd v) { memcpy(p, &v, sizeof v); }

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

#endif
