/* ops/softmax.c — softmax and log-softmax along one axis.
 *
 * A tensor of shape (outer, L, inner), L the softmax axis, is a set of outer * inner "lanes":
 * lane l holds the L elements base(l) + k * inner, k in [0, L). The last axis of a contiguous
 * input is the fast case (inner == 1: each lane is a contiguous row); other axes run the same
 * kernels with stride inner. A non-contiguous input is copied to contiguous first. Lanes run
 * in parallel on the pool.
 *
 * Numerically stable: the lane's maximum m is subtracted before exp, so exp never overflows
 * and the largest term is exactly 1; the denominators (and the backward's dot products) are
 * summed in double. */
#include "internal.h"

#include <math.h>

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

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

/* ---------------------------------------------------------------- lanes */

typedef struct {
    bool log;
    bool backward;
    sl_dtype dtype;
    int64_t L, inner;
    const void *a, *b; /* forward: x, -;  backward: y, g */
    void *out;         /* forward: y;     backward: gx */
} lane_job;

static void lanes_range(void *ctx, int64_t begin, int64_t end)
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

/* Runs the kernels over every lane of a contiguous tensor of t's shape along `axis`. */
static void run_lanes(lane_job *j, const sl_tensor *t, int axis)
{
    int64_t n = sl_numel(t);
    j->L = t->shape[axis];
    j->inner = 1;
    for (int d = axis + 1; d < t->ndim; d++) j->inner *= t->shape[d];
    if (n == 0) return;
    sl_parallel_for(n / j->L, GRAIN / j->L + 1, lanes_range, j);
}

/* ---------------------------------------------------------------- the ops */

typedef struct {
    int axis;
    bool log;
} softmax_saved;

/* The math is above the kernels; here y is the contiguous forward output and g the gradient. */
static bool softmax_backward(sl_node *n)
{
    const softmax_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    lane_job j = {s->log, true, gx->dtype, 0, 0, n->out->data, n->grad->data, gx->data};
    run_lanes(&j, gx, s->axis);
    return true;
}

static sl_tensor *softmax(sl_tensor *a, int axis, bool log)
{
    const char *name = log ? "sl_log_softmax" : "sl_softmax";
    SL_CHECK_TENSOR(name, a);
    if (!sl__check_float(name, a)) return NULL;
    int ax;
    if (!sl__axis(name, a, axis, &ax)) return NULL;
    sl_tensor *x = sl__contig(name, a);
    sl_tensor *y = x ? sl__new_like(name, a) : NULL;
    if (!y) return NULL;
    lane_job j = {log, false, a->dtype, 0, 0, sl_ptr(x), NULL, y->data};
    run_lanes(&j, y, ax);
    sl_node *n;
    if (!sl_record(&n, name, y, 1, &a, softmax_backward, sizeof(softmax_saved))) return NULL;
    if (n) *(softmax_saved *)n->saved = (softmax_saved){ax, log};
    if (!sl_save_for_backward(n, y)) return NULL; /* the backward reads the output */
    return y;
}

sl_tensor *sl_softmax(sl_tensor *a, int axis) { return softmax(a, axis, false); }
sl_tensor *sl_log_softmax(sl_tensor *a, int axis) { return softmax(a, axis, true); }
