/* tensor/rng.c — the seeded generator: xoshiro256** (Blackman & Vigna), seeded by splitmix64.
 * Integer-only state updates, so a seed gives the same stream on every machine. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

sl_rng sl_rng_seed(uint64_t seed)
{
    sl_rng r;
    for (int i = 0; i < 4; i++) r.s[i] = splitmix64(&seed);
    return r;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sl_rng_next(sl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void sl_rng_to_hex(const sl_rng *r, char *buf)
{
    static const char digits[] = "0123456789abcdef";
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < 16; i++) buf[16 * w + i] = digits[(r->s[w] >> (60 - 4 * i)) & 15];
    buf[64] = '\0';
}

bool sl_rng_from_hex(const char *hex, sl_rng *r)
{
    if (!hex || !r || strlen(hex) != 64) return false;
    sl_rng v;
    for (int w = 0; w < 4; w++) {
        v.s[w] = 0;
        for (int i = 0; i < 16; i++) {
            char c = hex[16 * w + i];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) return false;
            v.s[w] = v.s[w] << 4 | (uint64_t)d;
        }
    }
    *r = v;
    return true;
}

double sl_rng_uniform(sl_rng *r) { return (double)(sl_rng_next(r) >> 11) * 0x1.0p-53; }

double sl_rng_normal(sl_rng *r)
{
    /* Box-Muller; u1 in (0, 1] so the log is finite. One draw per call, for a stream that does
     * not depend on how calls are interleaved. */
    double u1 = 1.0 - sl_rng_uniform(r), u2 = sl_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t sl_rng_below(sl_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the short last bucket */
    uint64_t x;
    do x = sl_rng_next(r);
    while (x >= limit);
    return x % n;
}

static sl_tensor *rand_fill(const char *op, sl_rng *r, sl_dtype dtype, int ndim,
                            const int64_t *shape, double a, double b, bool normal)
{
    if (!r) return SL_FAIL(SL_ERR_ARG, "%s: rng is NULL", op);
    if (dtype == SL_I32) return SL_FAIL(SL_ERR_DTYPE, "%s: dtype must be f32 or f64", op);
    if (!isfinite(a) || !isfinite(b) || (normal && b < 0) || (!normal && b < a))
        return SL_FAIL(SL_ERR_ARG, "%s: bad parameters %g, %g", op, a, b);
    sl_tensor *t = sl_empty(dtype, ndim, shape);
    if (!t) return NULL;
    int64_t n = sl_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = normal ? a + b * sl_rng_normal(r) : a + (b - a) * sl_rng_uniform(r);
        if (dtype == SL_F32) ((float *)t->data)[i] = (float)v;
        else ((double *)t->data)[i] = v;
    }
    return t;
}

sl_tensor *sl_rand_uniform(sl_rng *r, sl_dtype dtype, int ndim, const int64_t *shape, double lo,
                           double hi)
{
    return rand_fill("sl_rand_uniform", r, dtype, ndim, shape, lo, hi, false);
}

sl_tensor *sl_rand_normal(sl_rng *r, sl_dtype dtype, int ndim, const int64_t *shape, double mean,
                          double std)
{
    return rand_fill("sl_rand_normal", r, dtype, ndim, shape, mean, std, true);
}
