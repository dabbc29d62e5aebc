/* ops/linear_isa.c — sl_linear's epilogues (linear_kernels.h: bias, GELU and its derivative,
 * the bias gradient's sums) for one SIMD level (tensor/isa.h). */
#include "linear.h"
#include "simd.h"

#include <math.h>

/* ---------------------------------------------------------------- GELU, tanh form */

/* gelu(u) = 0.5 u (1 + tanh(z)), z = c (u + k u^3), c = sqrt(2/pi), k = 0.044715. With
 * 1 + tanh(z) = 2 sigmoid(2 z), that is u s with e = e^(-2z), s = 1 / (1 + e): a form without
 * cancellation at either tail. And with 1 - s = e s (no cancellation either):
 *     gelu'(u) = 0.5 (1 + t) + 0.5 u (1 - t^2) c (1 + 3 k u^2)      (t = tanh(z))
 *              = s + 2 c u s (e s) (1 + 3 k u^2),
 * whose second term vanishes at both tails (e = 0: s = 1; e = inf: s = 0), where u^2 may have
 * overflowed: it is dropped there rather than turned into inf * 0. */
static const double GELU_C = 0.7978845608028654, GELU_K = 0.044715;

static double gelu_f64(double u, double *deriv)
{
    double e = exp(-2 * GELU_C * (u + GELU_K * u * u * u)), s = 1 / (1 + e);
    if (deriv) {
        *deriv = s;
        if (e > 0 && e < INFINITY)
            *deriv += 2 * GELU_C * u * s * (e * s) * (1 + 3 * GELU_K * u * u);
    }
    return u * s;
}

/* f32: SL_VF lanes at a time. e = e^(-2 c (u + k u^3)) per lane; s = 1 / (1 + e). */
static inline sl_vf gelu_e(sl_vf u)
{
    const float c2 = (float)(-2 * GELU_C), k = (float)GELU_K;
    return sl_vf_exp(c2 * (u + k * u * u * u));
}

/* gelu(u) = u s and gelu'(u), given e = gelu_e(u) and s = 1 / (1 + e): one division for both,
 * as in gelu_f64. */
static inline sl_vf gelu_vec(sl_vf u, sl_vf s) { return u * s; }

static inline sl_vf gelu_deriv_vec(sl_vf u, sl_vf e, sl_vf s)
{
    const float c2 = (float)(2 * GELU_C), k3 = (float)(3 * GELU_K);
    sl_vf term = c2 * u * s * (e * s) * (1.0f + k3 * u * u);
    sl_vi mid = (e > 0.0f) & (e < __builtin_inff());
    return s + (sl_vf)((sl_vi)term & mid);
}

/* ---------------------------------------------------------------- epilogues */

#define SL_KERNELS "linear_kernels.h"
#include "instantiate.h"

static void forward_rows(sl_dtype dt, char *y, char *d, const char *b, int64_t r0, int64_t r1,
                         int64_t n, bool gelu)
{
    size_t es = sl_dtype_size(dt);
    for (int64_t r = r0; r < r1; r++) {
        size_t off = (size_t)(r * n) * es;
        if (dt == SL_F32)
            forward_row_f32((float *)(y + off), d ? (float *)(d + off) : NULL, (const float *)b,
                            n, gelu);
        else
            forward_row_f64((double *)(y + off), d ? (double *)(d + off) : NULL,
                            (const double *)b, n, gelu);
    }
}

static void backward_rows(sl_dtype dt, const char *g, const char *d, char *du, double *db,
                          int64_t r0, int64_t r1, int64_t n, bool gelu)
{
    size_t es = sl_dtype_size(dt);
    for (int64_t r = r0; r < r1; r++) {
        size_t off = (size_t)(r * n) * es;
        if (dt == SL_F32)
            backward_row_f32((const float *)(g + off), gelu ? (const float *)(d + off) : NULL,
                             (float *)(du + off), db, n, gelu);
        else
            backward_row_f64((const double *)(g + off), gelu ? (const double *)(d + off) : NULL,
                             (double *)(du + off), db, n, gelu);
    }
}

static void add(sl_dtype dt, void *d, const void *p, int64_t n)
{
    if (dt == SL_F32) add_f32(d, p, n);
    else add_f64(d, p, n);
}

const sl__linear_kernels SL_ISA(sl__linear_kernels) = {forward_rows, backward_rows, add};
