/* ops/minmax.c — piecewise-linear elementwise ops: sl_abs and sl_clamp (unary), sl_minimum and
 * sl_maximum (binary, broadcasting).
 *
 * The kernels live in minmax_kernels.h (one type-generic source, made into f32 and f64
 * functions below). The unary ops and the binary ones on contiguous operands of one shape run
 * in parallel chunks, forward and backward; broadcast or strided binary operands go through the
 * broadcast iterator, whose backward sums over the dims an input was broadcast along. Every
 * backward reads its inputs' values, which the forward keeps with sl_save_for_backward. */
#include "internal.h"

#include <math.h>

#define SL_KERNELS "minmax_kernels.h"
#include "instantiate.h"

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* ---------------------------------------------------------------- abs, clamp */

typedef struct {
    bool clamp;    /* else abs */
    double lo, hi; /* clamp's bounds */
    sl_tensor *x;  /* the input, contiguous (the input itself when it was) */
} unary_saved;

typedef struct {
    const unary_saved *s;
    sl_dtype dtype;
    const void *x, *g;
    void *out; /* y forward, gx backward */
} unary_job;

static void unary_forward_range(void *ctx, int64_t b, int64_t e)
{
    const unary_job *j = ctx;
    const unary_saved *s = j->s;
    if (j->dtype == SL_F32) {
        const float *x = (const float *)j->x + b;
        float *y = (float *)j->out + b;
        if (s->clamp) clamp_forward_f32(x, y, e - b, (float)s->lo, (float)s->hi);
        else abs_forward_f32(x, y, e - b);
    } else {
        const double *x = (const double *)j->x + b;
        double *y = (double *)j->out + b;
        if (s->clamp) clamp_forward_f64(x, y, e - b, s->lo, s->hi);
        else abs_forward_f64(x, y, e - b);
    }
}

static void unary_backward_range(void *ctx, int64_t b, int64_t e)
{
    const unary_job *j = ctx;
    const unary_saved *s = j->s;
    if (j->dtype == SL_F32) {
        const float *x = (const float *)j->x + b, *g = (const float *)j->g + b;
        float *gx = (float *)j->out + b;
        if (s->clamp) clamp_backward_f32(x, g, gx, e - b, (float)s->lo, (float)s->hi);
        else abs_backward_f32(x, g, gx, e - b);
    } else {
        const double *x = (const double *)j->x + b, *g = (const double *)j->g + b;
        double *gx = (double *)j->out + b;
        if (s->clamp) clamp_backward_f64(x, g, gx, e - b, s->lo, s->hi);
        else abs_backward_f64(x, g, gx, e - b);
    }
}

/* abs:   y = |x|                 =>  dx = g sign(x), with sign(0) = 0
 * clamp: y = min(max(x, lo), hi) =>  dx = g where lo <= x <= hi, else 0 (PyTorch's rule: the
 *        bounds themselves pass the gradient) */
static bool unary_backward(sl_node *n)
{
    const unary_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    unary_job j = {s, gx->dtype, sl_ptr(s->x), n->grad->data, gx->data};
    sl_parallel_for(sl_numel(gx), GRAIN, unary_backward_range, &j);
    return true;
}

static sl_tensor *unary(const char *op, sl_tensor *a, const unary_saved *opts)
{
    sl_tensor *x = sl__contig(op, a);
    sl_tensor *y = x ? sl__new_like(op, a) : NULL;
    if (!y) return NULL;
    unary_saved s = *opts;
    s.x = x;
    unary_job j = {&s, a->dtype, sl_ptr(x), NULL, y->data};
    sl_parallel_for(sl_numel(y), GRAIN, unary_forward_range, &j);
    sl_node *n;
    if (!sl_record(&n, op, y, 1, &a, unary_backward, sizeof(unary_saved))) return NULL;
    if (n) *(unary_saved *)n->saved = s;
    if (!sl_save_for_backward(n, x)) return NULL;
    return y;
}

sl_tensor *sl_abs(sl_tensor *a)
{
    SL_CHECK_TENSOR("sl_abs", a);
    if (!sl__check_float("sl_abs", a)) return NULL;
    return unary("sl_abs", a, &(unary_saved){.clamp = false});
}

sl_tensor *sl_clamp(sl_tensor *a, double lo, double hi)
{
    SL_CHECK_TENSOR("sl_clamp", a);
    if (!sl__check_float("sl_clamp", a)) return NULL;
    if (isnan(lo) || isnan(hi))
        return SL_FAIL(SL_ERR_ARG, "sl_clamp: a bound is NaN (lo %g, hi %g) for %s", lo, hi,
                       sl_shape_str(a));
    if (lo > hi)
        return SL_FAIL(SL_ERR_ARG, "sl_clamp: lo %g > hi %g for %s", lo, hi, sl_shape_str(a));
    return unary("sl_clamp", a, &(unary_saved){.clamp = true, .lo = lo, .hi = hi});
}

/* ---------------------------------------------------------------- minimum, maximum */

typedef struct {
    bool max;
    bool flat; /* a and b contiguous, of the output's shape */
} extreme_saved;

typedef struct {
    bool max;
    sl_dtype dtype;
    int which;
} extreme_ctx;

static void extreme_forward_run(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const extreme_ctx *c = vctx;
    if (c->dtype == SL_F32) extreme_forward_f32(c->max, p, bs, n);
    else extreme_forward_f64(c->max, p, bs, n);
}

static void extreme_backward_run(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const extreme_ctx *c = vctx;
    if (c->dtype == SL_F32) extreme_backward_f32(c->max, c->which, p, bs, n);
    else extreme_backward_f64(c->max, c->which, p, bs, n);
}

/* Contiguous operands of one shape, in chunks: runs of nops operands of stride es. */
typedef struct {
    extreme_ctx c;
    int nops;
    char *p[4];
    int64_t es;
} extreme_flat_job;

static void extreme_flat_range(void *vctx, int64_t b, int64_t e)
{
    const extreme_flat_job *j = vctx;
    char *p[4];
    int64_t bs[4];
    for (int k = 0; k < j->nops; k++) {
        p[k] = j->p[k] + b * j->es;
        bs[k] = j->es;
    }
    if (j->nops == 3) extreme_forward_run((void *)&j->c, p, bs, e - b);
    else extreme_backward_run((void *)&j->c, p, bs, e - b);
}

/* y = max(a, b): dL/da = g where a > b, g / 2 where a == b, 0 where a < b (and g where either is
 * NaN); dL/db likewise with the roles swapped; min(a, b) the same with the inequalities
 * reversed. Each is summed over the dims its input was broadcast along (the gradient buffer is
 * read with stride 0 there). */
static bool extreme_backward(sl_node *n)
{
    const extreme_saved *s = n->saved;
    sl_tensor *y = n->out;
    for (int which = 0; which < 2; which++) {
        if (!n->in[which]->requires_grad) continue;
        sl_tensor *gx = sl_input_grad(n, which);
        if (!gx) return false;
        extreme_ctx c = {s->max, y->dtype, which};
        if (s->flat) {
            char *p[4] = {gx->data, n->grad->data, sl_ptr(n->in[0]), sl_ptr(n->in[1])};
            extreme_flat_job j = {c, 4, {p[0], p[1], p[2], p[3]}, (int64_t)sl_dtype_size(y->dtype)};
            sl_parallel_for(sl_numel(y), GRAIN, extreme_flat_range, &j);
        } else {
            sl__foreach_broadcast(extreme_backward_run, &c, 4,
                                  (sl_tensor *[]){gx, n->grad, n->in[0], n->in[1]}, y);
        }
    }
    return true;
}

static sl_tensor *extreme(const char *op, bool max, sl_tensor *a, sl_tensor *b)
{
    SL_CHECK_TENSOR(op, a);
    SL_CHECK_TENSOR(op, b);
    if (!sl__check_float(op, a) || !sl__check_same_dtype(op, a, b)) return NULL;
    int nd;
    int64_t shape[SL_MAX_DIMS];
    if (!sl__broadcast_shapes(op, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return NULL;
    sl_tensor *y = sl__new(op, a->dtype, nd, shape);
    if (!y) return NULL;
    extreme_ctx c = {max, a->dtype, 0};
    bool flat = sl__same_shape(a, b) && sl_is_contiguous(a) && sl_is_contiguous(b);
    if (flat) {
        extreme_flat_job j = {
            c, 3, {y->data, sl_ptr(a), sl_ptr(b)}, (int64_t)sl_dtype_size(a->dtype)};
        sl_parallel_for(sl_numel(y), GRAIN, extreme_flat_range, &j);
    } else {
        sl__foreach_broadcast(extreme_forward_run, &c, 3, (sl_tensor *[]){y, a, b}, y);
    }
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){a, b}, extreme_backward, sizeof(extreme_saved)))
        return NULL;
    if (n) *(extreme_saved *)n->saved = (extreme_saved){max, flat};
    if (!sl_save_for_backward(n, a) || !sl_save_for_backward(n, b)) return NULL;
    return y;
}

sl_tensor *sl_minimum(sl_tensor *a, sl_tensor *b) { return extreme("sl_minimum", false, a, b); }
sl_tensor *sl_maximum(sl_tensor *a, sl_tensor *b) { return extreme("sl_maximum", true, a, b); }
