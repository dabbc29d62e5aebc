/* ops/reduce.c — sum, mean, var, max and min over any set of axes, and argmax / argmin over one.
 *
 * Strategy: view the input with the kept dims first and the reduced dims last (a header, no
 * copy), make that view contiguous (a copy only when it is not: a reduction over trailing
 * axes of a contiguous input reads the input in place), and then output element o reduces the
 * contiguous run rows[o * N, (o + 1) * N), N the number of elements per group. Rows run in
 * parallel on the pool. Sums of f32 accumulate in double. Max and min share one path (the first
 * index of the extreme of each row), and argmax / argmin return that index as i32.
 *
 * Backward kernels run over the input's shape with the output gradient read through stride-0
 * (broadcast) strides on the reduced dims, and ACCUMULATE into the input's gradient. */
#include "reduce.h"

#include <math.h>

static const char *const reduce_name[] = {"sl_sum", "sl_mean",   "sl_var",   "sl_max",
                                          "sl_min", "sl_argmax", "sl_argmin"};
_Static_assert(sizeof reduce_name / sizeof *reduce_name == R_COUNT, "a name for every reduction");

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* ---------------------------------------------------------------- geometry */

static bool make_plan(const char *op, const sl_tensor *a, int n_axes, const int *axes,
                      bool keepdim, plan *p)
{
    memset(p, 0, sizeof *p);
    if (n_axes < 0)
        return sl_set_error(SL_ERR_ARG, "%s: n_axes %d is negative for %s", op, n_axes,
                            sl_shape_str(a));
    if (n_axes > 0 && !axes)
        return sl_set_error(SL_ERR_ARG, "%s: axes is NULL with n_axes %d for %s", op, n_axes,
                            sl_shape_str(a));
    for (int k = 0; k < n_axes; k++) {
        int d;
        if (!sl__axis(op, a, axes[k], &d)) return false;
        if (p->reduced[d])
            return sl_set_error(SL_ERR_ARG, "%s: axis %d repeated for %s", op, axes[k],
                                sl_shape_str(a));
        p->reduced[d] = true;
    }
    if (n_axes == 0)
        for (int d = 0; d < a->ndim; d++) p->reduced[d] = true;

    int64_t flat[SL_MAX_DIMS];
    sl__contiguous_strides(a->ndim, a->shape, flat);
    p->rows.dtype = a->dtype;
    p->rows.ndim = a->ndim;
    p->rows.data = a->data;
    p->rows.offset = a->offset;
    p->n_out = p->group = 1;
    int k = 0;
    for (int pass = 0; pass < 2; pass++) /* kept dims, then reduced dims */
        for (int d = 0; d < a->ndim; d++) {
            if (p->reduced[d] != (pass == 1)) continue;
            p->rows.shape[k] = a->shape[d];
            p->rows.strides[k] = a->strides[d];
            p->flat_strides[k++] = flat[d];
            if (pass == 0) {
                p->n_kept = k;
                p->n_out *= a->shape[d];
            } else {
                p->group *= a->shape[d];
            }
        }
    for (int d = 0; d < a->ndim; d++)
        if (!p->reduced[d] || keepdim)
            p->shape_out[p->ndim_out++] = p->reduced[d] ? 1 : a->shape[d];
    return true;
}

/* Strides that read a tensor laid out like the output (contiguous, with or without keepdim)
 * over the input's shape: 0 on the reduced dims. */
static void output_strides_over_input(const sl_tensor *x, const bool *reduced, int64_t *strides)
{
    int64_t s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        strides[d] = reduced[d] ? 0 : s;
        if (!reduced[d]) s *= x->shape[d];
    }
}

/* ---------------------------------------------------------------- kernels */

/* The running CPU's kernels (reduce_isa.c). */
static const sl__reduce_kernels *kernels(void) { return SL_ISA_PICK(sl__reduce_kernels); }

/* ---------------------------------------------------------------- backward */

typedef struct {
    reduce_op op;
    int correction;
    bool reduced[SL_MAX_DIMS];
    double *mean;    /* sl_var: the group means (n_out, in this block) */
    int64_t *arg;    /* sl_max / sl_min: the input's flat index of each one (n_out, this block) */
} reduce_saved;

/* Runs fn over x's shape with operands gx (contiguous), g (the output gradient, broadcast back
 * over the reduced dims), and for sl_var x itself and the means (broadcast like g). */
static void foreach_over_input(sl__run_fn fn, void *ctx, sl_tensor *gx, const sl_tensor *g,
                               const sl_tensor *x, const reduce_saved *s)
{
    int64_t st[4][SL_MAX_DIMS];
    memcpy(st[0], gx->strides, sizeof st[0]);
    output_strides_over_input(x, s->reduced, st[1]);
    memcpy(st[2], x->strides, sizeof st[2]);
    memcpy(st[3], st[1], sizeof st[3]);
    char *base[4] = {sl_ptr(gx), sl_ptr(g), sl_ptr(x), (char *)s->mean};
    size_t es = sl_dtype_size(x->dtype), esize[4] = {es, es, es, sizeof(double)};
    sl__foreach(s->op == R_VAR ? 4 : 2, base, (const int64_t(*)[SL_MAX_DIMS])st, esize, x->ndim,
                x->shape, fn, ctx);
}

/* sum:  y = sum_j x_j                      =>  dx_j = g (g broadcast back over the group)
 * mean: y = sum_j x_j / N                  =>  dx_j = g / N
 * var:  y = sum_j (x_j - m)^2 / (N - c)    =>  dx_j = g * 2 (x_j - m) / (N - c)
 *       (the term through m = mean(x) vanishes: sum_j (x_j - m) = 0)
 * max:  y = x_{j*}, j* the first argmax    =>  dx_{j*} = g, every other dx_j = 0
 * min:  the same with j* the first argmin */
static bool reduce_backward(sl_node *n)
{
    const reduce_saved *s = n->saved;
    sl_tensor *x = n->in[0];
    if (!x->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    int64_t n_in = sl_numel(x), n_out = sl_numel(n->out);
    int64_t group = n_out ? n_in / n_out : 0;
    bool f32 = x->dtype == SL_F32;
    if (s->op == R_MAX || s->op == R_MIN) {
        for (int64_t o = 0; o < n_out; o++) {
            if (f32) ((float *)gx->data)[s->arg[o]] += ((const float *)n->grad->data)[o];
            else ((double *)gx->data)[s->arg[o]] += ((const double *)n->grad->data)[o];
        }
        return true;
    }
    if (group == 0) return true; /* nothing to spread onto */
    double scale = s->op == R_SUM ? 1.0
                   : s->op == R_MEAN ? 1.0 / (double)group
                                     : 1.0 / (double)(group - s->correction);
    const sl__reduce_kernels *k = kernels();
    sl__run_fn fn = s->op == R_VAR ? (f32 ? k->var_grad_f32 : k->var_grad_f64)
                                   : (f32 ? k->spread_f32 : k->spread_f64);
    foreach_over_input(fn, &scale, gx, n->grad, x, s);
    return true;
}

/* ---------------------------------------------------------------- the ops */

static sl_tensor *reduce(reduce_op op, sl_tensor *a, int n_axes, const int *axes, bool keepdim,
                         int correction)
{
    const char *name = reduce_name[op];
    SL_CHECK_TENSOR(name, a);
    if (!sl__check_float(name, a)) return NULL;
    plan p;
    if (!make_plan(name, a, n_axes, axes, keepdim, &p)) return NULL;
    if (op == R_VAR && p.group - correction <= 0)
        return SL_FAIL(SL_ERR_ARG,
                       "sl_var: N - correction = %lld - %d <= 0: too few elements per group "
                       "for %s",
                       (long long)p.group, correction, sl_shape_str(a));
    bool index_out = op == R_ARGMAX || op == R_ARGMIN;
    if (picks_one(op) && p.group == 0 && p.n_out > 0)
        return index_out ? SL_FAIL(SL_ERR_SHAPE, "%s: axis %d of %s is empty", name, axes[0],
                                   sl_shape_str(a))
                         : SL_FAIL(SL_ERR_SHAPE, "%s: the reduced axes of %s are empty", name,
                                   sl_shape_str(a));
    if (index_out && p.group > INT32_MAX)
        return SL_FAIL(SL_ERR_SHAPE, "%s: axis %d of %s is too long for i32 indices", name, axes[0],
                       sl_shape_str(a));

    const sl_tensor *rows = sl__contig(name, &p.rows); /* the input itself when it already is */
    sl_tensor *y =
        rows ? sl__new(name, index_out ? SL_I32 : a->dtype, p.ndim_out, p.shape_out) : NULL;
    if (!y) return NULL;
    /* Record first: the forward writes what the backward needs into the node's block. Indices
     * have no gradient: argmax and argmin record nothing. */
    sl_node *n = NULL;
    size_t aux = op == R_VAR || op == R_MAX || op == R_MIN ? sizeof(double) * (size_t)p.n_out : 0;
    if (!index_out && !sl_record(&n, name, y, 1, &a, reduce_backward, sizeof(reduce_saved) + aux))
        return NULL;
    if (op == R_VAR && !sl_save_for_backward(n, a)) return NULL; /* var's backward reads x */
    reduce_job j = {op, &p, sl_ptr(rows), y->data, 1, NULL, NULL};
    if (op == R_VAR) j.denom = (double)(p.group - correction);
    if (n) {
        reduce_saved *s = n->saved;
        s->op = op;
        s->correction = correction;
        memcpy(s->reduced, p.reduced, sizeof s->reduced);
        void *tail = (char *)n->saved + sizeof(reduce_saved);
        if (op == R_VAR) s->mean = j.mean = tail;
        if (op == R_MAX || op == R_MIN) s->arg = j.arg = tail;
    }
    int64_t grain = p.group ? GRAIN / p.group + 1 : GRAIN;
    sl_parallel_for(p.n_out, grain, kernels()->rows, &j);
    return y;
}

sl_tensor *sl_sum(sl_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce(R_SUM, a, n_axes, axes, keepdim, 0);
}

sl_tensor *sl_mean(sl_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce(R_MEAN, a, n_axes, axes, keepdim, 0);
}

sl_tensor *sl_var(sl_tensor *a, int n_axes, const int *axes, bool keepdim, int correction)
{
    return reduce(R_VAR, a, n_axes, axes, keepdim, correction);
}

sl_tensor *sl_max(sl_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce(R_MAX, a, n_axes, axes, keepdim, 0);
}

sl_tensor *sl_min(sl_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce(R_MIN, a, n_axes, axes, keepdim, 0);
}

sl_tensor *sl_argmax(sl_tensor *a, int axis, bool keepdim)
{
    return reduce(R_ARGMAX, a, 1, &axis, keepdim, 0);
}

sl_tensor *sl_argmin(sl_tensor *a, int axis, bool keepdim)
{
    return reduce(R_ARGMIN, a, 1, &axis, keepdim, 0);
}

sl_tensor *sl_sum_all(sl_tensor *a) { return reduce(R_SUM, a, 0, NULL, false, 0); }
sl_tensor *sl_mean_all(sl_tensor *a) { return reduce(R_MEAN, a, 0, NULL, false, 0); }
