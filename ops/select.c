/* ops/select.c — elementwise selection by an i32 condition: sl_where (y = cond ? a : b) and
 * sl_masked_fill (y = mask ? value : x), both broadcasting.
 *
 * The kernels live in select_kernels.h (one type-generic source, made into f32 and f64
 * functions below); every operand is read through the broadcast iterator, and a backward sums
 * over the dims its input was broadcast along. */
#include "internal.h"

#define SL_KERNELS "select_kernels.h"
#include "instantiate.h"

typedef struct {
    sl_dtype dtype;
    bool when;    /* select_backward: pass the gradient where the condition is this */
    double value; /* masked_fill */
} select_ctx;

static void where_forward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    if (((const select_ctx *)ctx)->dtype == SL_F32) where_forward_f32(p, bs, n);
    else where_forward_f64(p, bs, n);
}

static void masked_fill_forward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    const select_ctx *c = ctx;
    if (c->dtype == SL_F32) masked_fill_forward_f32(p, bs, n, (float)c->value);
    else masked_fill_forward_f64(p, bs, n, c->value);
}

static void select_backward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    const select_ctx *c = ctx;
    if (c->dtype == SL_F32) select_backward_f32(p, bs, n, c->when);
    else select_backward_f64(p, bs, n, c->when);
}

/* y = c ? a : b, so dL/da = g where c and dL/db = g where !c, each summed over the dims its
 * input was broadcast along (the gradient buffer is read with stride 0 there). */
static bool where_backward(sl_node *n)
{
    for (int k = 1; k <= 2; k++) {
        if (!n->in[k]->requires_grad) continue;
        sl_tensor *d = sl_input_grad(n, k);
        if (!d) return false;
        select_ctx c = {n->out->dtype, k == 1, 0};
        sl__foreach_broadcast(select_backward_run, &c, 3,
                              (sl_tensor *[]){d, n->grad, n->in[0]}, n->out);
    }
    return true;
}

/* numpy broadcasting of cond, a and b; reports all three shapes when they do not broadcast. */
static bool where_shape(sl_tensor *const *t, int *nout, int64_t *out)
{
    int nd = 0;
    for (int k = 0; k < 3; k++) nd = t[k]->ndim > nd ? t[k]->ndim : nd;
    for (int i = 0; i < nd; i++) {
        out[i] = 1;
        for (int k = 0; k < 3; k++) {
            int it = i - (nd - t[k]->ndim);
            int64_t d = it >= 0 ? t[k]->shape[it] : 1;
            if (d != 1 && out[i] != 1 && d != out[i])
                return sl_set_error(SL_ERR_SHAPE,
                                    "sl_where: shapes do not broadcast: cond %s, a %s, b %s",
                                    sl_shape_str(t[0]), sl_shape_str(t[1]), sl_shape_str(t[2]));
            if (d != 1) out[i] = d;
        }
    }
    *nout = nd;
    return true;
}

sl_tensor *sl_where(sl_tensor *cond, sl_tensor *a, sl_tensor *b)
{
    const char *op = "sl_where";
    SL_CHECK_TENSOR(op, cond);
    SL_CHECK_TENSOR(op, a);
    SL_CHECK_TENSOR(op, b);
    if (cond->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_where: cond must be i32, got %s %s",
                       sl_dtype_name(cond->dtype), sl_shape_str(cond));
    if (!sl__check_float(op, a) || !sl__check_same_dtype(op, a, b)) return NULL;
    sl_tensor *in[3] = {cond, a, b};
    int nd = 0;
    int64_t shape[SL_MAX_DIMS];
    if (!where_shape(in, &nd, shape)) return NULL;
    sl_tensor *y = sl__new(op, a->dtype, nd, shape);
    if (!y) return NULL;
    select_ctx c = {a->dtype, false, 0};
    sl__foreach_broadcast(where_forward_run, &c, 4, (sl_tensor *[]){y, cond, a, b}, y);
    sl_node *n;
    if (!sl_record(&n, op, y, 3, in, where_backward, 0) || !sl_save_for_backward(n, cond))
        return NULL;
    return y;
}

/* y = mask ? value : x, so dL/dx = g where mask is 0. */
static bool masked_fill_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    select_ctx c = {gx->dtype, false, 0};
    sl__foreach_broadcast(select_backward_run, &c, 3, (sl_tensor *[]){gx, n->grad, n->in[1]},
                          n->out);
    return true;
}

sl_tensor *sl_masked_fill(sl_tensor *x, sl_tensor *mask, double value)
{
    const char *op = "sl_masked_fill";
    SL_CHECK_TENSOR(op, x);
    SL_CHECK_TENSOR(op, mask);
    if (!sl__check_float(op, x)) return NULL;
    if (mask->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_masked_fill: mask must be i32, got %s %s",
                       sl_dtype_name(mask->dtype), sl_shape_str(mask));
    bool fits = mask->ndim <= x->ndim;
    for (int i = 0; fits && i < mask->ndim; i++) {
        int64_t d = mask->shape[i];
        fits = d == 1 || d == x->shape[x->ndim - mask->ndim + i];
    }
    if (!fits)
        return SL_FAIL(SL_ERR_SHAPE, "sl_masked_fill: mask %s does not broadcast to x %s",
                       sl_shape_str(mask), sl_shape_str(x));
    sl_tensor *y = sl__new_like(op, x);
    if (!y) return NULL;
    select_ctx c = {x->dtype, false, value};
    sl__foreach_broadcast(masked_fill_forward_run, &c, 3, (sl_tensor *[]){y, x, mask}, y);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){x, mask}, masked_fill_backward, 0) ||
        !sl_save_for_backward(n, mask))
        return NULL;
    return y;
}
