/* ops/vexp.h — e^x over vectors of 16 floats, and vector loads and stores, for the library's
 * f32 kernels (not installed). GCC vector extensions: one AVX-512 register per vector when the
 * build targets it, two or four narrower ones otherwise. Everything is static inline. */
#ifndef SL_OPS_VEXP_H
#define SL_OPS_VEXP_H

#include <stdint.h>
#include <string.h>

typedef float sl__vf __attribute__((vector_size(64)));
typedef int32_t sl__vi __attribute__((vector_size(64)));
enum { SL__VW = 16 }; /* lanes */

/* e^z lane by lane, within 2 ulp: e^z = 2^n e^r, n = round(z / ln 2), |r| <= ln2 / 2, e^r by
 * Cephes' expf polynomial. Lanes above 88.376 (where 2^n would leave the exponent range; the
 * true overflow is at 88.72) give +inf, lanes below -87.33 (FLT_MIN) give 0, -inf gives 0;
 * NaN stays NaN. */
static inline sl__vf sl__vexp(sl__vf z)
{
    const sl__vi big = z > 88.3762626647949f, small = z < -87.3365447505531f;
    z = (sl__vf)((sl__vi)z & ~(big | small)); /* out-of-range lanes computed at 0, replaced */
    sl__vf t = z * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    sl__vf n = t - 12582912.0f;
    sl__vf r = z - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    sl__vf p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    sl__vi e = (__builtin_convertvector(n, sl__vi) + 127) << 23; /* 2^n, n in [-126, 127] */
    sl__vi y = (sl__vi)(p * (sl__vf)e) & ~small;
    const sl__vi inf = (sl__vi){0} + 0x7f800000;
    return (sl__vf)((y & ~big) | (inf & big));
}

static inline sl__vf sl__vload(const float *p)
{
    sl__vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void sl__vstore(float *p, sl__vf v) { memcpy(p, &v, sizeof v); }

/* The first n (< 16) lanes; the others `fill`. A row's last n % 16 elements go through the
 * same vector code this way, so every element's result is the same wherever it sits. */
static inline sl__vf sl__vload_part(const float *p, int64_t n, float fill)
{
    sl__vf v = (sl__vf){0} + fill;
    memcpy(&v, p, sizeof(float) * (size_t)n);
    return v;
}

static inline void sl__vstore_part(float *p, sl__vf v, int64_t n)
{
    memcpy(p, &v, sizeof(float) * (size_t)n);
}

#endif
