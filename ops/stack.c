/* ops/stack.c — sl_stack (tensors of one shape joined along a new dim), and sl_split /
 * sl_chunk (a tensor cut along a dim into views).
 *
 * Stacking is sl_concat of the inputs each unsqueezed at dim, done as one copy per input into
 * its slice of the output, with one node whose backward hands each input its slice of the
 * gradient. Splitting makes no copy: each piece is an sl_narrow view of the input, whose own
 * node routes the piece's gradient back into its part of the input's gradient. No kernels of
 * their own: copies and accumulations go through the strided helpers of tensor/. */
#include "internal.h"

#include <stdio.h>

/* ---------------------------------------------------------------- stack */

/* v (a header of t) at index i of dim d, without that dim: slice i of a stacked tensor. */
static void select_view(sl_tensor *v, int d, int64_t i)
{
    v->offset += i * v->strides[d];
    for (int k = d; k + 1 < v->ndim; k++) {
        v->shape[k] = v->shape[k + 1];
        v->strides[k] = v->strides[k + 1];
    }
    v->ndim--;
}

/* y = stack(x_0, .., x_{n-1}) along d, so y[.., i, ..] = x_i: dL/dx_i is slice i of g. */
static bool stack_backward(sl_node *n)
{
    int d = *(const int *)n->saved;
    for (int i = 0; i < n->n_in; i++) {
        if (!n->in[i]->requires_grad) continue;
        sl_tensor *gx = sl_input_grad(n, i);
        if (!gx) return false;
        sl_tensor v = *n->grad;
        select_view(&v, d, i);
        sl__accumulate(gx, &v);
    }
    return true;
}

sl_tensor *sl_stack(int n, sl_tensor *const *tensors, int dim)
{
    const char *op = "sl_stack";
    if (n < 1 || !tensors)
        return SL_FAIL(SL_ERR_ARG, "sl_stack: no tensors (n = %d, tensors %s)", n,
                       tensors ? "given" : "NULL");
    for (int i = 0; i < n; i++) {
        char arg[32];
        snprintf(arg, sizeof arg, "tensors[%d]", i);
        if (!tensors[i]) {
            sl__null_arg(op, arg);
            return NULL;
        }
        if (!sl__check_live(op, tensors[i], arg)) return NULL;
    }
    const sl_tensor *a = tensors[0];
    for (int i = 1; i < n; i++) {
        const sl_tensor *t = tensors[i];
        if (t->dtype != a->dtype)
            return SL_FAIL(SL_ERR_DTYPE,
                           "sl_stack: dtypes differ: tensors[0] %s %s vs tensors[%d] %s %s",
                           sl_dtype_name(a->dtype), sl_shape_str(a), i, sl_dtype_name(t->dtype),
                           sl_shape_str(t));
        if (!sl__same_shape(a, t))
            return SL_FAIL(SL_ERR_SHAPE, "sl_stack: shapes differ: tensors[0] %s vs tensors[%d] %s",
                           sl_shape_str(a), i, sl_shape_str(t));
    }
    int d = dim < 0 ? dim + a->ndim + 1 : dim;
    if (d < 0 || d > a->ndim)
        return SL_FAIL(SL_ERR_ARG, "sl_stack: dim %d out of range for stacking %s (from %d to %d)",
                       dim, sl_shape_str(a), -a->ndim - 1, a->ndim);
    if (a->ndim == SL_MAX_DIMS)
        return SL_FAIL(SL_ERR_SHAPE, "sl_stack: %s already has %d dims", sl_shape_str(a),
                       SL_MAX_DIMS);
    int64_t shape[SL_MAX_DIMS];
    for (int k = 0, j = 0; k <= a->ndim; k++) shape[k] = k == d ? n : a->shape[j++];
    sl_tensor *y = sl__new(op, a->dtype, a->ndim + 1, shape);
    if (!y) return NULL;
    for (int i = 0; i < n; i++) {
        sl_tensor v = *y;
        select_view(&v, d, i);
        sl_copy_into(&v, tensors[i]);
    }
    sl_node *node;
    if (!sl_record(&node, op, y, n, tensors, stack_backward, sizeof(int))) return NULL;
    if (node) *(int *)node->saved = d;
    return y;
}

/* ---------------------------------------------------------------- split, chunk */

/* The checks an op returning a count starts with (SL_CHECK_TENSOR returns NULL). */
static bool check_input(const char *op, sl_tensor *a)
{
    if (!a) return sl__null_arg(op, "a");
    return sl__check_live(op, a, "a");
}

/* out[i] = a[.., start_i : start_i + size_i, ..] along d for i < n, the starts running from 0:
 * size_i = sizes[i], or without sizes `size` for all but the last, which takes the rest. On
 * failure every out[i] is NULL. */
static int split_views(sl_tensor *a, int d, int n, const int64_t *sizes, int64_t size,
                       sl_tensor **out)
{
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        int64_t len = sizes ? sizes[i] : i + 1 < n ? size : a->shape[d] - at;
        out[i] = sl_narrow(a, d, at, len);
        if (!out[i]) {
            for (int k = 0; k < n; k++) out[k] = NULL;
            return -1;
        }
        at += len;
    }
    return n;
}

int sl_split(sl_tensor *a, int dim, int n, const int64_t *sizes, sl_tensor **out)
{
    const char *op = "sl_split";
    if (out && n > 0)
        for (int i = 0; i < n; i++) out[i] = NULL;
    if (!check_input(op, a)) return -1;
    if (n < 1 || !sizes || !out) {
        sl_set_error(SL_ERR_ARG, "sl_split: n = %d, sizes %s, out %s: need n >= 1 and both", n,
                     sizes ? "given" : "NULL", out ? "given" : "NULL");
        return -1;
    }
    int d;
    if (!sl__axis(op, a, dim, &d)) return -1;
    int64_t total = 0;
    bool overflow = false;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0) {
            sl_set_error(SL_ERR_ARG, "sl_split: size %lld at position %d is negative",
                         (long long)sizes[i], i);
            return -1;
        }
        overflow |= __builtin_add_overflow(total, sizes[i], &total);
    }
    if (overflow || total != a->shape[d]) {
        sl_set_error(SL_ERR_SHAPE,
                     "sl_split: %d sizes add up to %s%lld, not %lld, the size of dim %d of %s",
                     n, overflow ? "more than " : "", (long long)(overflow ? INT64_MAX : total),
                     (long long)a->shape[d], dim, sl_shape_str(a));
        return -1;
    }
    return split_views(a, d, n, sizes, 0, out);
}

int sl_chunk(sl_tensor *a, int dim, int n, sl_tensor **out)
{
    const char *op = "sl_chunk";
    if (out && n > 0)
        for (int i = 0; i < n; i++) out[i] = NULL;
    if (!check_input(op, a)) return -1;
    if (n < 1 || !out) {
        sl_set_error(SL_ERR_ARG, "sl_chunk: n = %d, out %s: need n >= 1 and out", n,
                     out ? "given" : "NULL");
        return -1;
    }
    int d;
    if (!sl__axis(op, a, dim, &d)) return -1;
    /* torch.chunk: pieces of ceil(L / n), the last one smaller, as many as that takes (fewer
     * than n when L does not fill them: L = 5 in 4 chunks is 2, 2, 1); an empty dim gives n
     * empty pieces. */
    int64_t len = a->shape[d], size = (len + n - 1) / n;
    int count = len == 0 ? n : (int)((len + size - 1) / size);
    return split_views(a, d, count, NULL, size, out);
}
