/* Shape ops: views and their strides, copies, storage sharing, errors, float64 gradchecks. */
#include "testutil.h"

#include <stdint.h>

/* 0, 1, 2, ... in the given shape (f64, no grad). */
static sl_tensor *iota(int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_empty(SL_F64, ndim, shape);
    ck_assert_ptr_nonnull(t);
    for (int64_t i = 0; i < sl_numel(t); i++) sl_set(t, i, (double)i);
    return t;
}

/* Element (idx) of t read through its strides, independently of sl_get's flat indexing. */
static double at(const sl_tensor *t, const int64_t *idx)
{
    int64_t off = t->offset;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
    return t->dtype == SL_F64 ? ((const double *)t->data)[off] : ((const float *)t->data)[off];
}

static void assert_shape(const sl_tensor *t, int ndim, const int64_t *shape)
{
    ck_assert_msg(t != NULL, "%s", sl_error_message());
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    ck_assert_msg(same, "unexpected shape %s", sl_shape_str(t));
}
#define ASSERT_SHAPE(t, ...) assert_shape((t), sl_shape(__VA_ARGS__))

static void assert_error(sl_status code, const char *message)
{
    ck_assert_int_eq(sl_error(), code);
    ck_assert_str_eq(sl_error_message(), message);
    sl_error_clear();
}

/* y's elements, row-major, equal x's: what reshape promises. */
static void assert_same_order(const sl_tensor *y, const sl_tensor *x)
{
    ck_assert_int_eq(sl_numel(y), sl_numel(x));
    for (int64_t i = 0; i < sl_numel(x); i++) ck_assert(sl_get(y, i) == sl_get(x, i));
}

START_TEST(reshape_is_a_view_of_contiguous_input)
{
    sl_tensor *x = iota(sl_shape(2, 3, 4));
    sl_tensor *y = sl_reshape(x, sl_shape(4, -1));
    ASSERT_SHAPE(y, 4, 6);
    ck_assert_ptr_eq(y->data, x->data);
    ck_assert_int_eq(y->strides[0], 6);
    ck_assert_int_eq(y->strides[1], 1);
    assert_same_order(y, x);
    sl_set(x, 13, -7.0); /* writing through the base changes the view */
    ck_assert(at(y, (int64_t[]){2, 1}) == -7.0);
    ck_assert_ptr_null(sl_reshape(x, 0, NULL)); /* 24 elements do not fit a scalar; 1 does */
    assert_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape [2,3,4] into []");
    sl_tensor *one = sl_reshape(sl_scalar(SL_F64, 3), sl_shape(1, 1, 1));
    ASSERT_SHAPE(one, 1, 1, 1);
    ck_assert(sl_get(one, 0) == 3.0);
    ck_assert_int_eq(sl_reshape(one, 0, NULL)->ndim, 0);
}
END_TEST

START_TEST(reshape_of_strided_input_views_when_it_can)
{
    /* The first 3 of 6 columns of a [4,6]: strides [6,1]. Splitting dim 0 keeps a view;
     * merging the two dims cannot. */
    sl_tensor *base = iota(sl_shape(4, 6));
    sl_tensor *s = sl_slice(base, 1, 0, 3, 1);
    ASSERT_SHAPE(s, 4, 3);
    sl_tensor *v = sl_reshape(s, sl_shape(2, 2, 3));
    ck_assert_ptr_eq(v->data, base->data);
    ck_assert_int_eq(v->strides[0], 12);
    ck_assert_int_eq(v->strides[1], 6);
    ck_assert_int_eq(v->strides[2], 1);
    assert_same_order(v, s);
    sl_tensor *c = sl_reshape(s, sl_shape(12));
    ck_assert_ptr_ne(c->data, base->data);
    ck_assert(sl_is_contiguous(c));
    assert_same_order(c, s);
    sl_set(base, 1, 99.0); /* s[0,1]: the view sees it, the copy does not */
    ck_assert(sl_get(v, 1) == 99.0);
    ck_assert(sl_get(c, 1) == 1.0);
    /* Every other column, strides [6,2], is one uniform stride: flattening is a view. */
    sl_tensor *odd = sl_slice(base, 1, 1, 6, 2);
    sl_tensor *flat = sl_reshape(odd, sl_shape(12));
    ck_assert_ptr_eq(flat->data, base->data);
    ck_assert_int_eq(flat->strides[0], 2);
    ck_assert_int_eq(flat->offset, 1);
    assert_same_order(flat, odd);

    /* A permuted [2,3,4] -> [3,2,4]: splitting the last dim is a view, merging dims 1 and 2
     * (strides 12 and 1) is not. */
    sl_tensor *x = iota(sl_shape(2, 3, 4));
    sl_tensor *p = sl_permute(x, (int[]){1, 0, 2});
    sl_tensor *pv = sl_reshape(p, sl_shape(3, 2, 2, 2));
    ck_assert_ptr_eq(pv->data, x->data);
    int64_t want[] = {4, 12, 2, 1};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pv->strides[i], want[i]);
    assert_same_order(pv, p);
    sl_tensor *pc = sl_reshape(p, sl_shape(3, 8));
    ck_assert_ptr_ne(pc->data, x->data);
    assert_same_order(pc, p);

    /* Size-1 dims with arbitrary strides do not matter: a transposed [3,4] with a unit dim
     * in the middle reshapes to [4,3] and [4,3,1] as views. */
    sl_tensor *t = sl_unsqueeze(sl_transpose(iota(sl_shape(3, 4)), 0, 1), 1);
    ASSERT_SHAPE(t, 4, 1, 3);
    t->strides[1] = 1000; /* never read */
    sl_tensor *t2 = sl_reshape(t, sl_shape(4, 3, 1));
    ck_assert_ptr_eq(t2->data, t->data);
    ck_assert_int_eq(t2->strides[0], 1);
    ck_assert_int_eq(t2->strides[1], 4);
    assert_same_order(t2, t);
    sl_tensor *t3 = sl_reshape(t, sl_shape(12));
    ck_assert_ptr_ne(t3->data, t->data);
    assert_same_order(t3, t);

    /* An expanded tensor: splitting the broadcast dim keeps stride 0; flattening copies. */
    sl_tensor *e = sl_expand(iota(sl_shape(3, 1)), sl_shape(3, 4));
    sl_tensor *ev = sl_reshape(e, sl_shape(3, 2, 2));
    ck_assert_ptr_eq(ev->data, e->data);
    ck_assert_int_eq(ev->strides[1], 0);
    ck_assert_int_eq(ev->strides[2], 0);
    assert_same_order(ev, e);
    sl_tensor *ec = sl_reshape(e, sl_shape(12));
    ck_assert_ptr_ne(ec->data, e->data);
    assert_same_order(ec, e);

    /* Empty tensors reshape freely. */
    sl_tensor *z = sl_zeros(SL_F32, sl_shape(0, 3));
    ASSERT_SHAPE(sl_reshape(z, sl_shape(3, 0, 5)), 3, 0, 5);
    ASSERT_SHAPE(sl_reshape(z, sl_shape(-1)), 0);
}
END_TEST

START_TEST(reshape_errors)
{
    sl_tensor *x = sl_zeros(SL_F32, sl_shape(2, 3));
    ck_assert_ptr_null(sl_reshape(x, sl_shape(4, 2)));
    assert_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape [2,3] into [4,2]");
    ck_assert_ptr_null(sl_reshape(x, sl_shape(-1, 4)));
    assert_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape [2,3] into [-1,4]");
    ck_assert_ptr_null(sl_reshape(x, sl_shape(-1, 3, -1)));
    assert_error(SL_ERR_ARG, "sl_reshape: more than one -1 in [-1,3,-1]");
    ck_assert_ptr_null(sl_reshape(x, sl_shape(-2, -3)));
    assert_error(SL_ERR_ARG, "sl_reshape: bad dim -2 in [-2,-3]");
    ck_assert_ptr_null(sl_reshape(sl_zeros(SL_F32, sl_shape(0, 3)), sl_shape(0, -1)));
    assert_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape [0,3] into [0,-1]");
    ck_assert_ptr_null(sl_reshape(x, sl_shape(INT64_MAX, 4, 2, 1)));
    assert_error(SL_ERR_SHAPE, "sl_reshape: cannot reshape [2,3] into [9223372036854775807,4,2,1]");
    ck_assert_ptr_null(sl_reshape(x, 9, (int64_t[9]){1, 1, 1, 1, 1, 1, 1, 2, 3}));
    assert_error(SL_ERR_ARG, "sl_reshape: ndim 9 outside [0, 8]");
    ck_assert_ptr_null(sl_reshape(x, 2, NULL));
    assert_error(SL_ERR_ARG, "sl_reshape: shape is NULL");
    ck_assert_ptr_null(sl_reshape(NULL, sl_shape(6)));
    assert_error(SL_ERR_ARG, "sl_reshape: argument 'a' is NULL");
}
END_TEST

START_TEST(permute_and_transpose_values)
{
    sl_tensor *x = iota(sl_shape(2, 3, 4));
    sl_tensor *p = sl_permute(x, (int[]){2, 0, -2}); /* [4,2,3], p[i,j,k] = x[j,k,i] */
    ASSERT_SHAPE(p, 4, 2, 3);
    ck_assert_ptr_eq(p->data, x->data);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                ck_assert(at(p, (int64_t[]){i, j, k}) == j * 12 + k * 4 + i);
    sl_tensor *t = sl_transpose(x, 0, -1); /* [4,3,2], t[i,j,k] = x[k,j,i] */
    ASSERT_SHAPE(t, 4, 3, 2);
    for (int64_t f = 0; f < 24; f++) {
        int64_t i = f / 6, j = f / 2 % 3, k = f % 2;
        ck_assert(sl_get(t, f) == k * 12 + j * 4 + i);
    }
    sl_set(x, 1, 50.0); /* x[0,0,1] = t[1,0,0] */
    ck_assert(sl_get(t, 6) == 50.0);
    ck_assert_int_eq(sl_transpose(x, 1, 1)->strides[1], 4);

    ck_assert_ptr_null(sl_permute(x, (int[]){0, 0, 1}));
    assert_error(SL_ERR_ARG, "sl_permute: [0,0,1] is not a permutation of the dims of [2,3,4]");
    ck_assert_ptr_null(sl_permute(x, (int[]){0, 1, 3}));
    assert_error(SL_ERR_ARG, "sl_permute: [0,1,3] is not a permutation of the dims of [2,3,4]");
    ck_assert_ptr_null(sl_permute(x, NULL));
    assert_error(SL_ERR_ARG, "sl_permute: perm is NULL");
    ck_assert_ptr_null(sl_transpose(x, 0, 3));
    assert_error(SL_ERR_ARG, "sl_transpose: axis 3 out of range for [2,3,4]");
}
END_TEST

/* x = 0..9; x[start:stop:step] against Python's answers. */
START_TEST(slice_follows_python)
{
    sl_tensor *x = iota(sl_shape(10));
    struct {
        int64_t start, stop, step;
        int n;
        double want[5];
    } cases[] = {
        {2, 8, 3, 2, {2, 5}},          {-3, INT64_MAX, 1, 3, {7, 8, 9}},
        {-100, 3, 1, 3, {0, 1, 2}},    {5, 2, 1, 0, {0}},
        {8, 100, 1, 2, {8, 9}},        {-4, -1, 2, 2, {6, 8}},
        {0, 10, 4, 3, {0, 4, 8}},      {10, INT64_MAX, 1, 0, {0}},
        {3, -100, 1, 0, {0}},          {INT64_MIN, INT64_MAX, 3, 4, {0, 3, 6, 9}},
        {1, 2, 5, 1, {1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        sl_tensor *s = sl_slice(x, 0, cases[c].start, cases[c].stop, cases[c].step);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_eq(s->shape[0], cases[c].n);
        for (int i = 0; i < cases[c].n; i++) ck_assert(sl_get(s, i) == cases[c].want[i]);
    }
    /* Along the last dim of a [3,5], as a view. */
    sl_tensor *m = iota(sl_shape(3, 5));
    sl_tensor *s = sl_slice(m, -1, 1, -1, 2); /* columns 1, 3 */
    ASSERT_SHAPE(s, 3, 2);
    ck_assert_ptr_eq(s->data, m->data);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ck_assert(at(s, (int64_t[]){i, j}) == i * 5 + 1 + 2 * j);
    sl_set(m, 8, -1.0); /* m[1,3] = s[1,1] */
    ck_assert(sl_get(s, 3) == -1.0);

    ck_assert_ptr_null(sl_slice(m, 0, 0, 2, 0));
    assert_error(SL_ERR_ARG, "sl_slice: step 0 must be >= 1");
    ck_assert_ptr_null(sl_slice(m, 2, 0, 2, 1));
    assert_error(SL_ERR_ARG, "sl_slice: axis 2 out of range for [3,5]");
}
END_TEST

START_TEST(narrow_values_and_errors)
{
    sl_tensor *m = iota(sl_shape(3, 5));
    sl_tensor *n = sl_narrow(m, 1, -3, 2); /* columns 2, 3 */
    ASSERT_SHAPE(n, 3, 2);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) ck_assert(at(n, (int64_t[]){i, j}) == i * 5 + 2 + j);
    ASSERT_SHAPE(sl_narrow(m, 0, 3, 0), 0, 5);
    ck_assert_ptr_null(sl_narrow(m, 1, 4, 2));
    assert_error(SL_ERR_ARG, "sl_narrow: start 4, length 2 out of range for dim 1 of [3,5]");
    ck_assert_ptr_null(sl_narrow(m, 0, -4, 1));
    assert_error(SL_ERR_ARG, "sl_narrow: start -4, length 1 out of range for dim 0 of [3,5]");
    ck_assert_ptr_null(sl_narrow(m, 0, 0, -1));
    assert_error(SL_ERR_ARG, "sl_narrow: start 0, length -1 out of range for dim 0 of [3,5]");
}
END_TEST

START_TEST(expand_values_and_errors)
{
    sl_tensor *x = iota(sl_shape(3, 1));
    sl_tensor *e = sl_expand(x, sl_shape(2, 3, 4));
    ASSERT_SHAPE(e, 2, 3, 4);
    ck_assert_ptr_eq(e->data, x->data);
    ck_assert_int_eq(e->strides[0], 0);
    ck_assert_int_eq(e->strides[2], 0);
    for (int64_t f = 0; f < 24; f++) ck_assert(sl_get(e, f) == f / 4 % 3);
    sl_set(x, 2, 7.0);
    ck_assert(sl_get(e, 23) == 7.0);
    ASSERT_SHAPE(sl_expand(x, sl_shape(3, 0)), 3, 0);

    sl_tensor *y = sl_zeros(SL_F32, sl_shape(2, 3));
    ck_assert_ptr_null(sl_expand(y, sl_shape(4, 3)));
    assert_error(SL_ERR_SHAPE, "sl_expand: cannot expand [2,3] to [4,3]");
    ck_assert_ptr_null(sl_expand(y, sl_shape(3)));
    assert_error(SL_ERR_SHAPE, "sl_expand: cannot expand [2,3] to [3]");
    ck_assert_ptr_null(sl_expand(x, sl_shape(-1, 3, 2)));
    assert_error(SL_ERR_SHAPE, "sl_expand: cannot expand [3,1] to [-1,3,2]");
}
END_TEST

START_TEST(squeeze_unsqueeze)
{
    sl_tensor *x = iota(sl_shape(2, 1, 3));
    sl_tensor *s = sl_squeeze(x, -2);
    ASSERT_SHAPE(s, 2, 3);
    ck_assert_ptr_eq(s->data, x->data);
    assert_same_order(s, x);
    ASSERT_SHAPE(sl_unsqueeze(s, 0), 1, 2, 3);
    ASSERT_SHAPE(sl_unsqueeze(s, 2), 2, 3, 1);
    sl_tensor *u = sl_unsqueeze(s, -1);
    ASSERT_SHAPE(u, 2, 3, 1);
    assert_same_order(u, x);
    ASSERT_SHAPE(sl_unsqueeze(s, -3), 1, 2, 3);
    ASSERT_SHAPE(sl_unsqueeze(sl_scalar(SL_F32, 1), 0), 1);

    ck_assert_ptr_null(sl_squeeze(x, 0));
    assert_error(SL_ERR_SHAPE, "sl_squeeze: dim 0 of [2,1,3] has size 2, not 1");
    ck_assert_ptr_null(sl_squeeze(x, 3));
    assert_error(SL_ERR_ARG, "sl_squeeze: axis 3 out of range for [2,1,3]");
    ck_assert_ptr_null(sl_unsqueeze(s, 3));
    assert_error(SL_ERR_ARG, "sl_unsqueeze: axis 3 out of range for [2,3]");
    ck_assert_ptr_null(sl_unsqueeze(s, -4));
    assert_error(SL_ERR_ARG, "sl_unsqueeze: axis -4 out of range for [2,3]");
    sl_tensor *full = sl_zeros(SL_F32, sl_shape(1, 1, 1, 1, 1, 1, 1, 1));
    ck_assert_ptr_null(sl_unsqueeze(full, 0));
    assert_error(SL_ERR_SHAPE, "sl_unsqueeze: [1,1,1,1,1,1,1,1] already has 8 dims");
}
END_TEST

START_TEST(concat_values_and_errors)
{
    sl_tensor *a = iota(sl_shape(2, 3));
    sl_tensor *b = sl_full(SL_F64, sl_shape(2, 1), -1);
    sl_tensor *c = sl_transpose(iota(sl_shape(2, 2)), 0, 1); /* [[0,2],[1,3]], a view */
    sl_tensor *y = sl_concat(3, (sl_tensor *[]){a, b, c}, -1);
    ASSERT_SHAPE(y, 2, 6);
    double want[] = {0, 1, 2, -1, 0, 2, 3, 4, 5, -1, 1, 3};
    for (int i = 0; i < 12; i++) ck_assert(sl_get(y, i) == want[i]);
    ck_assert_ptr_ne(y->data, a->data);
    sl_tensor *y0 = sl_concat(2, (sl_tensor *[]){a, a}, 0);
    ASSERT_SHAPE(y0, 4, 3);
    for (int i = 0; i < 12; i++) ck_assert(sl_get(y0, i) == i % 6);
    sl_tensor *i32 = sl_concat(2, (sl_tensor *[]){sl_arange(SL_I32, 0, 2, 1),
                                                   sl_arange(SL_I32, 5, 8, 1)}, 0);
    ck_assert_int_eq(i32->dtype, SL_I32);
    ck_assert(sl_get(i32, 4) == 7.0);

    ck_assert_ptr_null(sl_concat(2, (sl_tensor *[]){a, iota(sl_shape(3, 3))}, 1));
    assert_error(SL_ERR_SHAPE, "sl_concat: shapes differ outside dim 1: [2,3] vs [3,3]");
    ck_assert_ptr_null(sl_concat(2, (sl_tensor *[]){a, iota(sl_shape(2, 3, 1))}, 0));
    assert_error(SL_ERR_SHAPE, "sl_concat: shapes differ outside dim 0: [2,3] vs [2,3,1]");
    ck_assert_ptr_null(sl_concat(2, (sl_tensor *[]){a, sl_zeros(SL_F32, sl_shape(2, 3))}, 0));
    assert_error(SL_ERR_DTYPE, "sl_concat: dtypes differ: f64 [2,3] vs f32 [2,3]");
    ck_assert_ptr_null(sl_concat(1, (sl_tensor *[]){a}, 2));
    assert_error(SL_ERR_ARG, "sl_concat: axis 2 out of range for [2,3]");
    ck_assert_ptr_null(sl_concat(0, NULL, 0));
    assert_error(SL_ERR_ARG, "sl_concat: no tensors");
    ck_assert_ptr_null(sl_concat(2, (sl_tensor *[]){a, NULL}, 0));
    assert_error(SL_ERR_ARG, "sl_concat: argument 'tensors[i]' is NULL");
}
END_TEST

START_TEST(contiguous_copies_only_when_needed)
{
    sl_tensor *x = iota(sl_shape(3, 4));
    ck_assert_ptr_eq(sl_contiguous(x), x);
    sl_tensor *t = sl_transpose(x, 0, 1);
    sl_tensor *c = sl_contiguous(t);
    ck_assert(sl_is_contiguous(c));
    ck_assert_ptr_ne(c->data, x->data);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) ck_assert(((double *)c->data)[i * 3 + j] == j * 4 + i);
    ck_assert_ptr_null(sl_contiguous(NULL));
    assert_error(SL_ERR_ARG, "sl_contiguous: argument 'a' is NULL");
}
END_TEST

START_TEST(views_record_nodes)
{
    sl_rng r = sl_rng_seed(9);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3));
    struct {
        sl_tensor *y;
        const char *op;
    } cases[] = {
        {sl_reshape(x, sl_shape(6)), "sl_reshape"},
        {sl_permute(x, (int[]){1, 0}), "sl_permute"},
        {sl_transpose(x, 0, 1), "sl_transpose"},
        {sl_slice(x, 1, 0, 2, 1), "sl_slice"},
        {sl_narrow(x, 0, 1, 1), "sl_narrow"},
        {sl_expand(x, sl_shape(4, 2, 3)), "sl_expand"},
        {sl_squeeze(sl_reshape(x, sl_shape(2, 1, 3)), 1), "sl_squeeze"},
        {sl_unsqueeze(x, 0), "sl_unsqueeze"},
        {sl_concat(2, (sl_tensor *[]){x, x}, 0), "sl_concat"},
        {sl_contiguous(sl_transpose(x, 0, 1)), "sl_contiguous"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        ck_assert_ptr_nonnull(cases[k].y);
        ck_assert(cases[k].y->requires_grad);
        ck_assert_ptr_nonnull(cases[k].y->node);
        ck_assert_str_eq(cases[k].y->node->op, cases[k].op);
    }
}
END_TEST

/* ---------------------------------------------------------------- gradchecks */

/* Functions of one [4,6] input (g_squeeze_input: [4,1,6]; g_concat: three inputs). */
static sl_tensor *g_reshape(sl_tensor *const *in, int n, void *u)
{
    return sl_reshape(in[0], sl_shape(3, -1, 2));
}
static sl_tensor *g_reshape_copy(sl_tensor *const *in, int n, void *u)
{
    return sl_reshape(sl_transpose(in[0], 0, 1), sl_shape(-1)); /* not viewable: a copy */
}
static sl_tensor *g_permute(sl_tensor *const *in, int n, void *u)
{
    return sl_permute(in[0], (int[]){1, 0});
}
static sl_tensor *g_permute3(sl_tensor *const *in, int n, void *u)
{
    return sl_permute(sl_reshape(in[0], sl_shape(2, 2, 6)), (int[]){2, 0, 1});
}
static sl_tensor *g_transpose(sl_tensor *const *in, int n, void *u)
{
    return sl_transpose(in[0], -1, 0);
}
static sl_tensor *g_slice(sl_tensor *const *in, int n, void *u)
{
    return sl_slice(in[0], 1, -5, 100, 2);
}
static sl_tensor *g_narrow(sl_tensor *const *in, int n, void *u)
{
    return sl_narrow(in[0], 0, 1, 2);
}
static sl_tensor *g_expand(sl_tensor *const *in, int n, void *u)
{
    /* [4,6] -> [4,1,6] -> [3,4,5,6]: a new leading dim and a repeated middle one */
    return sl_expand(sl_unsqueeze(in[0], 1), sl_shape(3, 4, 5, 6));
}
static sl_tensor *g_expand_ones(sl_tensor *const *in, int n, void *u)
{
    return sl_expand(sl_narrow(in[0], 0, 0, 1), sl_shape(2, 3, 6));
}
static sl_tensor *g_squeeze(sl_tensor *const *in, int n, void *u)
{
    return sl_unsqueeze(sl_squeeze(sl_unsqueeze(in[0], 1), 1), -1);
}
static sl_tensor *g_squeeze_input(sl_tensor *const *in, int n, void *u)
{
    return sl_squeeze(in[0], -2); /* in[0]: [4,1,6] */
}
static sl_tensor *g_unsqueeze(sl_tensor *const *in, int n, void *u)
{
    return sl_unsqueeze(in[0], 1);
}
static sl_tensor *g_unsqueeze_last(sl_tensor *const *in, int n, void *u)
{
    return sl_unsqueeze(in[0], -1);
}
static sl_tensor *g_contiguous(sl_tensor *const *in, int n, void *u)
{
    return sl_contiguous(sl_transpose(in[0], 0, 1));
}
static sl_tensor *g_contiguous_self(sl_tensor *const *in, int n, void *u)
{
    return sl_contiguous(in[0]);
}
static sl_tensor *g_concat(sl_tensor *const *in, int n, void *u)
{
    /* in[0] twice (fan-in), one transposed input */
    return sl_concat(4, (sl_tensor *[]){in[0], in[1], in[0], sl_transpose(in[2], 0, 1)}, 1);
}
static sl_tensor *g_overlapping_slices(sl_tensor *const *in, int n, void *u)
{
    /* Two views of one input summed: their gradients add up in the shared buffer. */
    return sl_mul(sl_slice(in[0], 0, 0, 3, 1), sl_slice(in[0], 0, 1, 4, 1));
}
static sl_tensor *g_view_chain(sl_tensor *const *in, int n, void *u)
{
    sl_tensor *t = sl_transpose(in[0], 0, 1);              /* [6,4] */
    sl_tensor *s = sl_slice(t, 0, 1, 6, 2);                /* [3,4] */
    sl_tensor *e = sl_expand(sl_unsqueeze(s, 0), sl_shape(2, 3, 4));
    return sl_reshape(sl_mul(e, e), sl_shape(4, 6));
}

/* f64 gradcheck of each one-input fn of the NULL-terminated list, at a normal(0, 1) input of
 * the given shape and at a non-contiguous view of it; f32 against f64. */
static void check_fns(uint64_t seed, int ndim, const int64_t *shape, const sl_gradcheck_fn *fns)
{
    sl_rng r = sl_rng_seed(seed);
    for (; *fns; fns++) {
        sl_tensor *x = tu_randn(&r, SL_F64, ndim, shape);
        tu_gradcheck(*fns, 1, &x, NULL);
        sl_tensor *v = tu_noncontig(x);
        tu_gradcheck(*fns, 1, &v, NULL);
        tu_f32_matches_f64(*fns, 1, &x, NULL);
    }
}
#define FNS(...) ((const sl_gradcheck_fn[]){__VA_ARGS__, NULL})

START_TEST(gradcheck_reshape) { check_fns(51, sl_shape(4, 6), FNS(g_reshape, g_reshape_copy)); }
END_TEST
START_TEST(gradcheck_permute) { check_fns(52, sl_shape(4, 6), FNS(g_permute, g_permute3)); }
END_TEST
START_TEST(gradcheck_transpose) { check_fns(53, sl_shape(4, 6), FNS(g_transpose)); }
END_TEST
START_TEST(gradcheck_slice) { check_fns(54, sl_shape(4, 6), FNS(g_slice, g_overlapping_slices)); }
END_TEST
START_TEST(gradcheck_narrow) { check_fns(55, sl_shape(4, 6), FNS(g_narrow)); }
END_TEST
START_TEST(gradcheck_expand) { check_fns(56, sl_shape(4, 6), FNS(g_expand, g_expand_ones)); }
END_TEST
START_TEST(gradcheck_unsqueeze)
{
    check_fns(57, sl_shape(4, 6), FNS(g_unsqueeze, g_unsqueeze_last));
}
END_TEST
START_TEST(gradcheck_contiguous)
{
    check_fns(58, sl_shape(4, 6), FNS(g_contiguous, g_contiguous_self));
}
END_TEST
/* Several views of one input in a row. */
START_TEST(gradcheck_view_chain) { check_fns(59, sl_shape(4, 6), FNS(g_view_chain)); }
END_TEST

START_TEST(gradcheck_squeeze)
{
    check_fns(60, sl_shape(4, 6), FNS(g_squeeze));
    check_fns(61, sl_shape(4, 1, 6), FNS(g_squeeze_input));
}
END_TEST

START_TEST(gradcheck_concat)
{
    sl_rng r = sl_rng_seed(62);
    sl_tensor *in[] = {tu_randn(&r, SL_F64, sl_shape(4, 6)), tu_randn(&r, SL_F64, sl_shape(4, 2)),
                       tu_randn(&r, SL_F64, sl_shape(3, 4))};
    tu_gradcheck(g_concat, 3, in, NULL);
    sl_tensor *vin[] = {tu_noncontig(in[0]), in[1], tu_noncontig(in[2])};
    tu_gradcheck(g_concat, 3, vin, NULL);
    tu_f32_matches_f64(g_concat, 3, in, NULL);
    /* An input that does not require grad gets nothing and breaks nothing. */
    sl_requires_grad(in[1], false);
    tu_gradcheck(g_concat, 3, in, NULL);
}
END_TEST

/* The gradient of a slice lands exactly in the sliced positions. */
START_TEST(slice_gradient_values)
{
    sl_tensor *x = sl_requires_grad(sl_zeros(SL_F64, sl_shape(2, 5)), true);
    sl_tensor *s = sl_slice(x, 1, 1, 5, 2); /* columns 1, 3 */
    sl_tensor *g = sl_from_data(SL_F64, sl_shape(2, 2), (double[]){1, 2, 3, 4});
    ck_assert(sl_backward_ex(s, g, 0));
    double want[] = {0, 1, 0, 2, 0, 0, 3, 0, 4, 0};
    for (int i = 0; i < 10; i++) ck_assert(sl_get(x->grad, i) == want[i]);
    /* expand sums over the repeats: [2,1] -> [3,2,4], gradient i + 1 at flat index i */
    sl_tensor *y = sl_requires_grad(sl_zeros(SL_F64, sl_shape(2, 1)), true);
    sl_tensor *ge = iota(sl_shape(3, 2, 4));
    for (int i = 0; i < 24; i++) sl_set(ge, i, i + 1);
    ck_assert(sl_backward_ex(sl_expand(y, sl_shape(3, 2, 4)), ge, 0));
    double s0 = 0, s1 = 0;
    for (int i = 0; i < 24; i++) *(i / 4 % 2 ? &s1 : &s0) += i + 1;
    ck_assert(sl_get(y->grad, 0) == s0 && sl_get(y->grad, 1) == s1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shape");
    TCase *tc = tcase_create("shape");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, reshape_is_a_view_of_contiguous_input);
    tu_add_test(s, tc, reshape_of_strided_input_views_when_it_can);
    tu_add_test(s, tc, reshape_errors);
    tu_add_test(s, tc, permute_and_transpose_values);
    tu_add_test(s, tc, slice_follows_python);
    tu_add_test(s, tc, narrow_values_and_errors);
    tu_add_test(s, tc, expand_values_and_errors);
    tu_add_test(s, tc, squeeze_unsqueeze);
    tu_add_test(s, tc, concat_values_and_errors);
    tu_add_test(s, tc, contiguous_copies_only_when_needed);
    tu_add_test(s, tc, views_record_nodes);
    tu_add_test(s, tc, gradcheck_reshape);
    tu_add_test(s, tc, gradcheck_permute);
    tu_add_test(s, tc, gradcheck_transpose);
    tu_add_test(s, tc, gradcheck_slice);
    tu_add_test(s, tc, gradcheck_narrow);
    tu_add_test(s, tc, gradcheck_expand);
    tu_add_test(s, tc, gradcheck_squeeze);
    tu_add_test(s, tc, gradcheck_unsqueeze);
    tu_add_test(s, tc, gradcheck_concat);
    tu_add_test(s, tc, gradcheck_contiguous);
    tu_add_test(s, tc, gradcheck_view_chain);
    tu_add_test(s, tc, slice_gradient_values);
    return tu_run(s);
}
