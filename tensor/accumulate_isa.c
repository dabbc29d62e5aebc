/* tensor/accumulate_isa.c — the runs of sl__accumulate_reduced (every view's and every
 * broadcasting op's backward) for one SIMD level (tensor/isa.h). */
#include "accumulate.h"

/* d += s over n contiguous elements, d apart from s. The first n - n % 16 in a loop of their
 * own: a trip count that is a multiple of 16 is what GCC's -O2 needs to vectorise a loop. */
static void add_run_f32(float *restrict d, const float *restrict s, int64_t n)
{
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i++) d[i] += s[i];
    for (int64_t i = n16; i < n; i++) d[i] += s[i];
}

static void add_run_f64(double *restrict d, const double *restrict s, int64_t n)
{
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i++) d[i] += s[i];
    for (int64_t i = n16; i < n; i++) d[i] += s[i];
}

static void run(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const sl__acc_ctx *c = vctx;
    if (c->dtype == SL_F32) {
        float *d = (float *)p[0];
        const float *s = (const float *)p[1];
        int64_t sd = bs[0] / 4, ss = bs[1] / 4;
        if (sd == 0) { /* a reduction over a broadcast dim: sum in double */
            double acc = 0;
            for (int64_t i = 0; i < n; i++) acc += s[i * ss];
            *d += (float)acc;
        } else if (sd == 1 && ss == 1 && (d + n <= s || s + n <= d)) {
            add_run_f32(d, s, n);
        } else {
            for (int64_t i = 0; i < n; i++) d[i * sd] += s[i * ss];
        }
    } else {
        double *d = (double *)p[0];
        const double *s = (const double *)p[1];
        int64_t sd = bs[0] / 8, ss = bs[1] / 8;
        if (sd == 0) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++) acc += s[i * ss];
            *d += acc;
        } else if (sd == 1 && ss == 1 && (d + n <= s || s + n <= d)) {
            add_run_f64(d, s, n);
        } else {
            for (int64_t i = 0; i < n; i++) d[i * sd] += s[i * ss];
        }
    }
}

const sl__accumulate_kernels SL_ISA(sl__accumulate_kernels) = {run};
