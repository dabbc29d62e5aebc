/* ops/shape.c — views and copies that change how elements are arranged: reshape, permute,
 * transpose, slice, narrow, expand, squeeze, unsqueeze, concat, contiguous.
 *
 * A view is a new header (sl__alias) over the same storage with its own shape, strides and
 * offset. Every op records a node, views included. Each backward accumulates the output's
 * gradient into the input's gradient buffer gx (contiguous, the input's shape) through the
 * matching view of gx: the same slice of gx, the same permutation of gx, gx read in the
 * output's shape, ... The view math sits at the top of the file as small functions that act on
 * headers; forward applies them to the input, backward to gx.
 */
#include "internal.h"

/* ---------------------------------------------------------------- view math */

/* Strides that read t's elements, in row-major order, as `shape` (same numel) without moving
 * them; false when no such strides exist. numpy's no-copy reshape: dims of t of size 1 are
 * dropped (their strides do not matter); then runs of t's dims and of the new dims with equal
 * products are matched, and a run of t's dims can be read as one only where each stride is
 * the next one times the next size. Within a run the new strides are row-major over the run's
 * last stride. An empty tensor has no elements to place: any strides do. */
static bool reshape_strides(const sl_tensor *t, int ndim, const int64_t *shape,
                            int64_t *strides)
{
    if (sl_numel(t) == 0) {
        sl__contiguous_strides(ndim, shape, strides);
        return true;
    }
    int64_t od[SL_MAX_DIMS], os[SL_MAX_DIMS];
    int on = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1) {
            od[on] = t->shape[i];
            os[on++] = t->strides[i];
        }
    int oi = 0, oj = 1, ni = 0, nj = 1; /* the runs [oi, oj) and [ni, nj) */
    while (ni < ndim && oi < on) {
        int64_t np = shape[ni], op = od[oi];
        while (np != op) {
            if (np < op) np *= shape[nj++];
            else op *= od[oj++];
        }
        for (int k = oi; k < oj - 1; k++)
            if (os[k] != od[k + 1] * os[k + 1]) return false;
        strides[nj - 1] = os[oj - 1];
        for (int k = nj - 1; k > ni; k--) strides[k - 1] = strides[k] * shape[k];
        ni = nj++;
        oi = oj++;
    }
    /* Trailing new dims of size 1. */
    int64_t last = ni > 0 ? strides[ni - 1] : 1;
    for (int k = ni; k < ndim; k++) strides[k] = last;
    return true;
}

static void set_layout(sl_tensor *v, int ndim, const int64_t *shape, const int64_t *strides)
{
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        v->strides[i] = strides[i];
    }
}

/* v (a copy of a contiguous header) read as `shape`, row-major. */
static void contiguous_as(sl_tensor *v, int ndim, const int64_t *shape)
{
    int64_t st[SL_MAX_DIMS];
    sl__contiguous_strides(ndim, shape, st);
    set_layout(v, ndim, shape, st);
}

/* v's dims reordered: new dim i is old dim perm[i]. */
static void permute_view(sl_tensor *v, const int *perm)
{
    sl_tensor old = *v;
    for (int i = 0; i < v->ndim; i++) {
        v->shape[i] = old.shape[perm[i]];
        v->strides[i] = old.strides[perm[i]];
    }
}

/* v restricted to elements start, start + step, ... (len of them) along dim. */
static void slice_view(sl_tensor *v, int dim, int64_t start, int64_t len, int64_t step)
{
    v->offset += start * v->strides[dim];
    v->shape[dim] = len;
    if (len > 1) v->strides[dim] *= step; /* (a huge step over one element must not overflow) */
}

/* Strides that read t as broadcast to `shape` (numpy: t's dims align with the last ones; a
 * dim of size 1 repeats, with stride 0); false if a dim of t is neither 1 nor the target. */
static bool expand_strides(const sl_tensor *t, int ndim, const int64_t *shape, int64_t *strides)
{
    if (ndim < t->ndim) return false;
    for (int i = 0; i < ndim; i++) {
        int it = i - (ndim - t->ndim);
        if (shape[i] < 0) return false;
        if (it < 0) strides[i] = 0;
        else if (t->shape[it] == shape[i]) strides[i] = t->strides[it];
        else if (t->shape[it] == 1) strides[i] = 0;
        else return false;
    }
    return true;
}

/* v without dim (of size 1). */
static void squeeze_view(sl_tensor *v, int dim)
{
    for (int i = dim; i + 1 < v->ndim; i++) {
        v->shape[i] = v->shape[i + 1];
        v->strides[i] = v->strides[i + 1];
    }
    v->ndim--;
}

/* v with a new dim of size 1 before dim (dim == ndim: at the end). */
static void unsqueeze_view(sl_tensor *v, int dim)
{
    for (int i = v->ndim; i > dim; i--) {
        v->shape[i] = v->shape[i - 1];
        v->strides[i] = v->strides[i - 1];
    }
    v->strides[dim] = dim < v->ndim ? v->shape[dim + 1] * v->strides[dim + 1] : 1;
    v->shape[dim] = 1;
    v->ndim++;
}

/* ---------------------------------------------------------------- reshape, squeeze, unsqueeze */

/* y = x read in another shape, row-major: so dL/dx is g read in x's shape. gx is contiguous,
 * so gx read in y's shape is a view of it, and g accumulates through that view. Serves every
 * op whose output keeps the input's row-major order (reshape, squeeze, unsqueeze). */
static bool reshape_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    sl_tensor v = *gx;
    contiguous_as(&v, n->out->ndim, n->out->shape);
    sl__accumulate(&v, n->grad);
    return true;
}

/* Records y as made from x by a view op (or a copy with a view op's backward). */
static sl_tensor *record1(const char *op, sl_tensor *y, sl_tensor *x, sl_backward_fn backward,
                          const void *saved, size_t saved_bytes)
{
    sl_node *n;
    if (!sl_record(&n, op, y, 1, &x, backward, saved_bytes)) return NULL;
    if (n && saved_bytes) memcpy(n->saved, saved, saved_bytes);
    return y;
}

/* The requested shape with its -1 (if any) filled in from a's numel. */
static bool resolve_shape(const sl_tensor *a, int ndim, const int64_t *shape, int64_t *out)
{
    if (ndim < 0 || ndim > SL_MAX_DIMS)
        return sl_set_error(SL_ERR_ARG, "sl_reshape: ndim %d outside [0, %d]", ndim, SL_MAX_DIMS);
    if (ndim > 0 && !shape) return sl_set_error(SL_ERR_ARG, "sl_reshape: shape is NULL");
    int infer = -1;
    int64_t known = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                return sl_set_error(SL_ERR_ARG, "sl_reshape: more than one -1 in %s",
                                    sl__dims_str(ndim, shape));
            infer = i;
        } else if (shape[i] < 0) {
            return sl_set_error(SL_ERR_ARG, "sl_reshape: bad dim %lld in %s",
                                (long long)shape[i], sl__dims_str(ndim, shape));
        } else {
            overflow |= __builtin_mul_overflow(known, shape[i], &known);
        }
    }
    int64_t n = sl_numel(a);
    bool fits = !overflow && (infer >= 0 ? known > 0 && n % known == 0 : known == n);
    if (!fits)
        return sl_set_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape %s into %s",
                            sl_shape_str(a), sl__dims_str(ndim, shape));
    if (infer >= 0) out[infer] = n / known;
    return true;
}

sl_tensor *sl_reshape(sl_tensor *a, int ndim, const int64_t *shape)
{
    SL_CHECK_TENSOR("sl_reshape", a);
    int64_t want[SL_MAX_DIMS], strides[SL_MAX_DIMS];
    if (!resolve_shape(a, ndim, shape, want)) return NULL;
    sl_tensor *y;
    if (reshape_strides(a, ndim, want, strides)) {
        y = sl__alias("sl_reshape", a);
        if (!y) return NULL;
        set_layout(y, ndim, want, strides);
    } else {
        y = sl__new_like("sl_reshape", a); /* a contiguous copy, read in the new shape */
        if (!y || !sl_copy_into(y, a)) return NULL;
        contiguous_as(y, ndim, want);
    }
    return record1("sl_reshape", y, a, reshape_backward, NULL, 0);
}

sl_tensor *sl_squeeze(sl_tensor *a, int dim)
{
    SL_CHECK_TENSOR("sl_squeeze", a);
    int d;
    if (!sl__axis("sl_squeeze", a, dim, &d)) return NULL;
    if (a->shape[d] != 1)
        return SL_FAIL(SL_ERR_SHAPE, "sl_squeeze: dim %d of %s has size %lld, not 1", dim,
                       sl_shape_str(a), (long long)a->shape[d]);
    sl_tensor *y = sl__alias("sl_squeeze", a);
    if (!y) return NULL;
    squeeze_view(y, d);
    return record1("sl_squeeze", y, a, reshape_backward, NULL, 0);
}

sl_tensor *sl_unsqueeze(sl_tensor *a, int dim)
{
    SL_CHECK_TENSOR("sl_unsqueeze", a);
    int d = dim < 0 ? dim + a->ndim + 1 : dim;
    if (d < 0 || d > a->ndim)
        return SL_FAIL(SL_ERR_ARG, "sl_unsqueeze: axis %d out of range for %s", dim,
                       sl_shape_str(a));
    if (a->ndim == SL_MAX_DIMS)
        return SL_FAIL(SL_ERR_SHAPE, "sl_unsqueeze: %s already has %d dims", sl_shape_str(a),
                       SL_MAX_DIMS);
    sl_tensor *y = sl__alias("sl_unsqueeze", a);
    if (!y) return NULL;
    unsqueeze_view(y, d);
    return record1("sl_unsqueeze", y, a, reshape_backward, NULL, 0);
}

/* ---------------------------------------------------------------- permute, transpose */

typedef struct {
    int perm[SL_MAX_DIMS];
} permute_saved;

/* y = x with dims reordered (y dim i is x dim perm[i]): the same reordering of gx is shaped
 * like y, and g accumulates through it. */
static bool permute_backward(sl_node *n)
{
    const permute_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    sl_tensor v = *gx;
    permute_view(&v, s->perm);
    sl__accumulate(&v, n->grad);
    return true;
}

static sl_tensor *permute_as(const char *op, sl_tensor *a, const int *perm)
{
    sl_tensor *y = sl__alias(op, a);
    if (!y) return NULL;
    permute_view(y, perm);
    permute_saved s;
    memcpy(s.perm, perm, sizeof(int) * (size_t)a->ndim);
    return record1(op, y, a, permute_backward, &s, sizeof s);
}

sl_tensor *sl_permute(sl_tensor *a, const int *perm)
{
    SL_CHECK_TENSOR("sl_permute", a);
    if (!perm && a->ndim > 0) return SL_FAIL(SL_ERR_ARG, "sl_permute: perm is NULL");
    int p[SL_MAX_DIMS];
    int64_t given[SL_MAX_DIMS];
    bool seen[SL_MAX_DIMS] = {false}, ok = true;
    for (int i = 0; i < a->ndim; i++) {
        given[i] = perm[i];
        p[i] = perm[i] < 0 ? perm[i] + a->ndim : perm[i];
        if (p[i] < 0 || p[i] >= a->ndim || seen[p[i]]) ok = false;
        else seen[p[i]] = true;
    }
    if (!ok)
        return SL_FAIL(SL_ERR_ARG, "sl_permute: %s is not a permutation of the dims of %s",
                       sl__dims_str(a->ndim, given), sl_shape_str(a));
    return permute_as("sl_permute", a, p);
}

sl_tensor *sl_transpose(sl_tensor *a, int dim0, int dim1)
{
    SL_CHECK_TENSOR("sl_transpose", a);
    int d0, d1;
    if (!sl__axis("sl_transpose", a, dim0, &d0) || !sl__axis("sl_transpose", a, dim1, &d1))
        return NULL;
    int p[SL_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) p[i] = i;
    p[d0] = d1;
    p[d1] = d0;
    return permute_as("sl_transpose", a, p);
}

/* ---------------------------------------------------------------- slice, narrow */

typedef struct {
    int dim;
    int64_t start, step;
} slice_saved;

/* y = x[start : start + len * step : step] along dim: g accumulates into the same slice of
 * gx; the rest of gx gets nothing. */
static bool slice_backward(sl_node *n)
{
    const slice_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    sl_tensor v = *gx;
    slice_view(&v, s->dim, s->start, n->out->shape[s->dim], s->step);
    sl__accumulate(&v, n->grad);
    return true;
}

static sl_tensor *slice_as(const char *op, sl_tensor *a, int dim, int64_t start, int64_t len,
                           int64_t step)
{
    sl_tensor *y = sl__alias(op, a);
    if (!y) return NULL;
    slice_view(y, dim, start, len, step);
    slice_saved s = {dim, start, step};
    return record1(op, y, a, slice_backward, &s, sizeof s);
}

/* Python's clamping of a slice bound into [0, n]. */
static int64_t clamp_bound(int64_t i, int64_t n)
{
    if (i < 0) i = i < -n ? 0 : i + n;
    return i > n ? n : i;
}

sl_tensor *sl_slice(sl_tensor *a, int dim, int64_t start, int64_t stop, int64_t step)
{
    SL_CHECK_TENSOR("sl_slice", a);
    int d;
    if (!sl__axis("sl_slice", a, dim, &d)) return NULL;
    if (step < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_slice: step %lld must be >= 1", (long long)step);
    int64_t n = a->shape[d];
    int64_t b = clamp_bound(start, n), e = clamp_bound(stop, n);
    int64_t len = e > b ? (e - b - 1) / step + 1 : 0;
    return slice_as("sl_slice", a, d, b, len, step);
}

sl_tensor *sl_narrow(sl_tensor *a, int dim, int64_t start, int64_t length)
{
    SL_CHECK_TENSOR("sl_narrow", a);
    int d;
    if (!sl__axis("sl_narrow", a, dim, &d)) return NULL;
    int64_t n = a->shape[d], b = start < 0 ? start + n : start;
    if (b < 0 || b > n || length < 0 || length > n - b)
        return SL_FAIL(SL_ERR_ARG, "sl_narrow: start %lld, length %lld out of range for dim %d of %s",
                       (long long)start, (long long)length, dim, sl_shape_str(a));
    return slice_as("sl_narrow", a, d, b, length, 1);
}

/* ---------------------------------------------------------------- expand */

/* y = x broadcast: each element of x appears in y once per repeat, so dL/dx sums g over the
 * broadcast dims. */
static bool expand_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    sl__accumulate_reduced(gx, n->grad);
    return true;
}

sl_tensor *sl_expand(sl_tensor *a, int ndim, const int64_t *shape)
{
    SL_CHECK_TENSOR("sl_expand", a);
    if (ndim < 0 || ndim > SL_MAX_DIMS)
        return SL_FAIL(SL_ERR_ARG, "sl_expand: ndim %d outside [0, %d]", ndim, SL_MAX_DIMS);
    if (ndim > 0 && !shape) return SL_FAIL(SL_ERR_ARG, "sl_expand: shape is NULL");
    int64_t strides[SL_MAX_DIMS];
    if (!expand_strides(a, ndim, shape, strides))
        return SL_FAIL(SL_ERR_SHAPE, "sl_expand: cannot expand %s to %s", sl_shape_str(a),
                       sl__dims_str(ndim, shape));
    if (!sl__check_shape("sl_expand", ndim, shape)) return NULL; /* numel must fit */
    sl_tensor *y = sl__alias("sl_expand", a);
    if (!y) return NULL;
    set_layout(y, ndim, shape, strides);
    return record1("sl_expand", y, a, expand_backward, NULL, 0);
}

/* ---------------------------------------------------------------- concat */

/* y = [x_0, x_1, ...] along dim: x_i's gradient is its slice of g, at the sum of the earlier
 * sizes. */
static bool concat_backward(sl_node *n)
{
    int dim = *(const int *)n->saved;
    int64_t at = 0;
    for (int i = 0; i < n->n_in; i++) {
        int64_t len = n->in[i]->shape[dim];
        if (n->in[i]->requires_grad) {
            sl_tensor *gx = sl_input_grad(n, i);
            if (!gx) return false;
            sl_tensor v = *n->grad;
            slice_view(&v, dim, at, len, 1);
            sl__accumulate(gx, &v);
        }
        at += len;
    }
    return true;
}

sl_tensor *sl_concat(int n, sl_tensor *const *tensors, int dim)
{
    if (n < 1 || !tensors) return SL_FAIL(SL_ERR_ARG, "sl_concat: no tensors");
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) {
            sl__null_arg("sl_concat", "tensors[i]");
            return NULL;
        }
        if (!sl__check_live("sl_concat", tensors[i], "tensors[i]")) return NULL;
    }
    const sl_tensor *a = tensors[0];
    int d;
    if (!sl__axis("sl_concat", a, dim, &d)) return NULL;
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const sl_tensor *t = tensors[i];
        if (!sl__check_same_dtype("sl_concat", a, t)) return NULL;
        bool fits = t->ndim == a->ndim;
        for (int k = 0; fits && k < a->ndim; k++) fits = k == d || t->shape[k] == a->shape[k];
        if (!fits)
            return SL_FAIL(SL_ERR_SHAPE, "sl_concat: shapes differ outside dim %d: %s vs %s", dim,
                           sl_shape_str(a), sl_shape_str(t));
        shape[d] += t->shape[d];
    }
    sl_tensor *y = sl__new("sl_concat", a->dtype, a->ndim, shape);
    if (!y) return NULL;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        sl_tensor v = *y;
        slice_view(&v, d, at, tensors[i]->shape[d], 1);
        sl_copy_into(&v, tensors[i]);
        at += tensors[i]->shape[d];
    }
    sl_node *node;
    if (!sl_record(&node, "sl_concat", y, n, tensors, concat_backward, sizeof(int))) return NULL;
    if (node) *(int *)node->saved = d;
    return y;
}

/* ---------------------------------------------------------------- contiguous */

/* y = a copy of x: g accumulates into gx as it is. */
static bool copy_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    sl__accumulate(gx, n->grad);
    return true;
}

sl_tensor *sl_contiguous(sl_tensor *a)
{
    SL_CHECK_TENSOR("sl_contiguous", a);
    if (sl_is_contiguous(a)) return a;
    sl_tensor *y = sl__contig("sl_contiguous", a);
    if (!y) return NULL;
    return record1("sl_contiguous", y, a, copy_backward, NULL, 0);
}
