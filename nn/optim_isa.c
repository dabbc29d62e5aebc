/* nn/optim_isa.c — the optimizers' update kernels and the gradients' finiteness check, for one
 * SIMD level (tensor/isa.h). */
#include "optim.h"
#include "../ops/simd.h"

#include <math.h>

/* AdamW, torch.optim.AdamW's single-tensor algorithm, per element:
 *     p  = p * (1 - lr wd)                       decoupled decay, before the moment update
 *     m  = b1 m + (1 - b1) g
 *     v  = b2 v + (1 - b2) g^2
 *     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat, vhat the bias-corrected moments.
 *
 * f32 parameters run 8 at a time in vectors of doubles (ops/simd.h; the tail of a range
 * zero-padded into one more vector, so that every element goes through the same instructions
 * wherever a chunk boundary falls: the results do not depend on the thread count), with the
 * bias correction of v moved out of the division: p -= (step_size sqrt(1 - b2^t)) m /
 * (sqrt(v) + eps sqrt(1 - b2^t)), one division and one square root where the written form has
 * two of each kind of divider work (in double they bound the kernel; the same value up to
 * double's rounding, far below the f32 result's). f64 stays scalar, as written: it is the
 * reference precision. */
typedef sl_v8_f64 vd8;
typedef sl_v8_f32 vf8;

/* The update of 8 f32 elements; p, m, v in place. */
static inline void adamw_vec8(const sl__update_args *a, vf8 *p, vf8 g, vf8 *m, vf8 *v)
{
    vd8 gd = sl_v8_widen(g);
    *m = __builtin_convertvector(a->beta1 * sl_v8_widen(*m) + (1 - a->beta1) * gd, vf8);
    *v = __builtin_convertvector(a->beta2 * sl_v8_widen(*v) + (1 - a->beta2) * gd * gd, vf8);
    vd8 pd = sl_v8_widen(*p) * a->decay;
    pd -= (a->step_size * a->bc2_sqrt) * sl_v8_widen(*m) /
          (sl_v8_sqrt(sl_v8_widen(*v)) + a->eps * a->bc2_sqrt);
    *p = __builtin_convertvector(pd, vf8);
}

static void adamw_f32(void *ctx, int64_t begin, int64_t end)
{
    const sl__update_args *a = ctx;
    float *p = a->p, *m = a->m, *v = a->v;
    const float *g = a->g;
    vf8 pv, gv, mv, vv;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        pv = sl_v8_load_f32(p + i);
        gv = sl_v8_load_f32(g + i);
        mv = sl_v8_load_f32(m + i);
        vv = sl_v8_load_f32(v + i);
        adamw_vec8(a, &pv, gv, &mv, &vv);
        sl_v8_store_f32(p + i, pv);
        sl_v8_store_f32(m + i, mv);
        sl_v8_store_f32(v + i, vv);
    }
    if (i < end) { /* the tail, zero-padded */
        size_t bytes = sizeof(float) * (size_t)(end - i);
        pv = gv = mv = vv = (vf8){0};
        memcpy(&pv, p + i, bytes);
        memcpy(&gv, g + i, bytes);
        memcpy(&mv, m + i, bytes);
        memcpy(&vv, v + i, bytes);
        adamw_vec8(a, &pv, gv, &mv, &vv);
        memcpy(p + i, &pv, bytes);
        memcpy(m + i, &mv, bytes);
        memcpy(v + i, &vv, bytes);
    }
}

static void adamw_f64(void *ctx, int64_t begin, int64_t end)
{
    const sl__update_args *a = ctx;
    double *p = a->p, *m = a->m, *v = a->v;
    const double *g = a->g;
    for (int64_t i = begin; i < end; i++) {
        double gi = g[i];
        m[i] = a->beta1 * m[i] + (1 - a->beta1) * gi;
        v[i] = a->beta2 * v[i] + (1 - a->beta2) * gi * gi;
        double pi = p[i] * a->decay;
        pi -= a->step_size * m[i] / (sqrt(v[i]) / a->bc2_sqrt + a->eps);
        p[i] = pi;
    }
}

/* SGD, torch.optim.SGD (dampening 0, no Nesterov), per element:
 *     g  = g + wd p                              L2 decay, coupled through the gradient
 *     b  = mu b + g                              (momentum only; b starts at 0, so b_1 = g)
 *     p -= lr b                                  (b is g without momentum) */
#define DEFINE_SGD(T, SUF)                                                                       \
    static void sgd_##SUF(void *ctx, int64_t begin, int64_t end)                                \
    {                                                                                            \
        const sl__update_args *a = ctx;                                                          \
        T *p = a->p, *b = a->m;                                                                  \
        const T *g = a->g;                                                                       \
        for (int64_t i = begin; i < end; i++) {                                                  \
            double d = g[i] + a->decay * (double)p[i];                                           \
            if (a->momentum != 0) {                                                              \
                d = a->momentum * b[i] + d;                                                      \
                b[i] = (T)d;                                                                     \
                d = b[i];                                                                        \
            }                                                                                    \
            p[i] = (T)(p[i] - a->lr * d);                                                        \
        }                                                                                        \
    }
DEFINE_SGD(float, f32)
DEFINE_SGD(double, f64)
#undef DEFINE_SGD

/* ---------------------------------------------------------------- the finiteness check */

/* The index in [0, n) of the first non-finite element of a block, or -1: an element is not
 * finite when its exponent bits are all ones. */
static int64_t first_nonfinite(sl_dtype dtype, const void *p, int64_t n)
{
    bool any = false;
    int64_t i = 0;
    if (dtype == SL_F32) {
        const int32_t *u = p;
        const sl_vi e = (sl_vi){0} + 0x7f800000;
        sl_vi acc = {0};
        for (; i + SL_VF <= n; i += SL_VF) {
            sl_vi v;
            memcpy(&v, u + i, sizeof v);
            acc |= (v & e) == e;
        }
        for (int k = 0; k < SL_VF; k++) any |= acc[k] != 0;
        for (; i < n; i++) any |= (u[i] & e[0]) == e[0];
    } else {
        const int64_t *u = p;
        const sl_vl e = (sl_vl){0} + INT64_C(0x7ff0000000000000);
        sl_vl acc = {0};
        for (; i + SL_VD <= n; i += SL_VD) {
            sl_vl v;
            memcpy(&v, u + i, sizeof v);
            acc |= (v & e) == e;
        }
        for (int k = 0; k < SL_VD; k++) any |= acc[k] != 0;
        for (; i < n; i++) any |= (u[i] & e[0]) == e[0];
    }
    if (!any) return -1;
    for (i = 0; i < n; i++) {
        double v = dtype == SL_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
        if (!isfinite(v)) return i;
    }
    return -1;
}

const sl__optim_kernels SL_ISA(sl__optim_kernels) = {adamw_f32, adamw_f64, sgd_f32, sgd_f64,
                                                     first_nonfinite};
