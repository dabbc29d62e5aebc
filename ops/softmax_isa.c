/* ops/softmax_isa.c — the softmax and log-softmax kernels for one SIMD level (tensor/isa.h). */
#include "softmax.h"

#include <math.h>

/* ---------------------------------------------------------------- kernels */

/* One lane of L elements, `s` apart. Forward: y = softmax(x) or log_softmax(x). Backward,
 * from the forward output y and the output gradient g, ACCUMULATES into gx:
 *   softmax:     y_k = e^(x_k) / sum_i e^(x_i)   =>  dx_k = y_k (g_k - sum_i g_i y_i)
 *   log_softmax: y_k = x_k - log sum_i e^(x_i)   =>  dx_k = g_k - e^(y_k) sum_i g_i */
#define SOFTMAX_KERNELS(T, SUF, EXP)                                                             \
    static T lane_max_##SUF(const T *x, int64_t L, int64_t s)                                    \
    {                                                                                            \
        T m = x[0];                                                                              \
        for (int64_t k = 1; k < L; k++)                                                          \
            if (x[k * s] > m) m = x[k * s];                                                      \
        return m;                                                                                \
    }                                                                                            \
    static void softmax_lane_##SUF(const T *x, T *y, int64_t L, int64_t s)                       \
    {                                                                                            \
        T m = lane_max_##SUF(x, L, s);                                                           \
        double sum = 0;                                                                          \
        for (int64_t k = 0; k < L; k++) {                                                        \
            T e = EXP(x[k * s] - m);                                                             \
            y[k * s] = e;                                                                        \
            sum += e;                                                                            \
        }                                                                                        \
        for (int64_t k = 0; k < L; k++) y[k * s] = (T)(y[k * s] / sum);                          \
    }                                                                                            \
    static void log_softmax_lane_##SUF(const T *x, T *y, int64_t L, int64_t s)                   \
    {                                                                                            \
        T m = lane_max_##SUF(x, L, s);                                                           \
        double sum = 0;                                                                          \
        for (int64_t k = 0; k < L; k++) sum += EXP(x[k * s] - m);                                \
        double log_sum = log(sum);                                                               \
        for (int64_t k = 0; k < L; k++) y[k * s] = (T)((double)(x[k * s] - m) - log_sum);        \
    }                                                                                            \
    static void softmax_back_lane_##SUF(const T *y, const T *g, T *gx, int64_t L, int64_t s)     \
    {                                                                                            \
        double dot = 0;                                                                          \
        for (int64_t k = 0; k < L; k++) dot += (double)g[k * s] * y[k * s];                      \
        for (int64_t k = 0; k < L; k++) gx[k * s] += y[k * s] * (g[k * s] - (T)dot);             \
    }                                                                                            \
    static void log_softmax_back_lane_##SUF(const T *y, const T *g, T *gx, int64_t L, int64_t s) \
    {                                                                                            \
        double sum = 0;                                                                          \
        for (int64_t k = 0; k < L; k++) sum += g[k * s];                                         \
        for (int64_t k = 0; k < L; k++) gx[k * s] += g[k * s] - EXP(y[k * s]) * (T)sum;          \
    }

SOFTMAX_KERNELS(float, f32, expf)
SOFTMAX_KERNELS(double, f64, exp)
#undef SOFTMAX_KERNELS

static void lanes(void *ctx, int64_t begin, int64_t end)
{
    const lane_job *j = ctx;
    size_t es = sl_dtype_size(j->dtype);
    for (int64_t l = begin; l < end; l++) {
        size_t at = (size_t)((l / j->inner) * j->L * j->inner + l % j->inner) * es;
        const void *a = (const char *)j->a + at, *b = j->b ? (const char *)j->b + at : NULL;
        void *out = (char *)j->out + at;
        int64_t L = j->L, s = j->inner;
        if (j->dtype == SL_F32) {
            if (!j->backward && !j->log) softmax_lane_f32(a, out, L, s);
            else if (!j->backward) log_softmax_lane_f32(a, out, L, s);
            else if (!j->log) softmax_back_lane_f32(a, b, out, L, s);
            else log_softmax_back_lane_f32(a, b, out, L, s);
        } else {
            if (!j->backward && !j->log) softmax_lane_f64(a, out, L, s);
            else if (!j->backward) log_softmax_lane_f64(a, out, L, s);
            else if (!j->log) softmax_back_lane_f64(a, b, out, L, s);
            else log_softmax_back_lane_f64(a, b, out, L, s);
        }
    }
}

const sl__softmax_kernels SL_ISA(sl__softmax_kernels) = {lanes};
