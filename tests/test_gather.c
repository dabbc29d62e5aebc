/* sl_gather and sl_index_select (ops/gather.c): values against naive loops on every dim, dtype
 * and layout; the scatter-add backward with repeated indices; float64 gradchecks; errors with
 * the value and position of a bad index; an index written before the backward; the thread
 * count. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define ck_assert_error(call, code, msg)                                                           \
    do {                                                                                           \
        sl_error_clear();                                                                          \
        ck_assert_ptr_null(call);                                                                  \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)

/* Random indices in [0, n) of the given shape: small n gives repeats. */
static sl_tensor *random_index(sl_rng *r, int64_t n, int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_zeros(SL_I32, ndim, shape);
    for (int64_t i = 0; i < sl_numel(t); i++) sl_set(t, i, (double)sl_rng_below(r, (uint64_t)n));
    return t;
}

/* Row-major flat index of the coordinates c in shape (nd dims). */
static int64_t flat(int nd, const int64_t *shape, const int64_t *c)
{
    int64_t f = 0;
    for (int d = 0; d < nd; d++) f = f * shape[d] + c[d];
    return f;
}

/* Coordinates of row-major flat index f in shape. */
static void unflat(int nd, const int64_t *shape, int64_t f, int64_t *c)
{
    for (int d = nd - 1; d >= 0; d--) {
        c[d] = f % shape[d];
        f /= shape[d];
    }
}

/* For each output element of sl_gather (select = false) or sl_index_select, the flat index into
 * a it reads: the naive definition. */
static void naive_sources(const sl_tensor *a, int dim, const sl_tensor *index, bool select,
                          int64_t *src, int64_t *n_out)
{
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, select ? a->shape : index->shape, sizeof shape);
    if (select) shape[dim] = index->shape[0];
    int64_t n = 1;
    for (int d = 0; d < a->ndim; d++) n *= shape[d];
    for (int64_t o = 0; o < n; o++) {
        int64_t c[SL_MAX_DIMS];
        unflat(a->ndim, shape, o, c);
        int64_t k = (int64_t)sl_get(index, select ? c[dim] : o);
        c[dim] = k;
        src[o] = flat(a->ndim, a->shape, c);
    }
    *n_out = n;
}

/* Checks the op's values and, for a float a that requires grad, its gradient for random output
 * weights, against the naive loops. */
static void check_op(bool select, sl_tensor *a, int axis, sl_tensor *index, sl_rng *r)
{
    sl_tensor *y = select ? sl_index_select(a, axis, index) : sl_gather(a, axis, index);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    ck_assert_int_eq(y->dtype, a->dtype);
    int dim = axis < 0 ? axis + a->ndim : axis;
    static int64_t src[4096];
    int64_t n;
    naive_sources(a, dim, index, select, src, &n);
    ck_assert_int_eq(sl_numel(y), n);
    for (int d = 0; d < a->ndim; d++)
        ck_assert_int_eq(y->shape[d],
                         select ? (d == dim ? index->shape[0] : a->shape[d]) : index->shape[d]);
    for (int64_t o = 0; o < n; o++) ck_assert_double_eq(sl_get(y, o), sl_get(a, src[o]));
    if (!a->requires_grad) return;
    sl_zero_grad(a);
    sl_tensor *w = sl_rand_normal(r, a->dtype, y->ndim, y->shape, 0, 1);
    ck_assert_msg(sl_backward_ex(y, w, 0), "%s", sl_error_message());
    static double want[4096];
    memset(want, 0, sizeof(double) * (size_t)sl_numel(a));
    for (int64_t o = 0; o < n; o++) want[src[o]] += sl_get(w, o);
    double tol = a->dtype == SL_F32 ? 1e-6 : 1e-15;
    for (int64_t i = 0; i < sl_numel(a); i++)
        ck_assert_close(sl_get(a->grad, i), want[i], tol, tol);
}

/* ---------------------------------------------------------------- gather */

START_TEST(gather_values_and_backward)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    sl_tensor *as[] = {a, tu_noncontig(a), tu_permuted_leaf(a), tu_cast_leaf(a, SL_F32)};
    for (int axis = -3; axis < 3; axis++) {
        int dim = (axis + 3) % 3;
        /* The index is smaller than a off dim, and longer than a along it (repeats). */
        int64_t shape[3] = {2, 3, 4};
        shape[dim] = 7;
        sl_tensor *idx = random_index(&r, a->shape[dim], 3, shape);
        for (int v = 0; v < 4; v++) {
            check_op(false, as[v], axis, idx, &r);
            check_op(false, as[v], axis, tu_noncontig(idx), &r);
        }
        /* An i32 a gathers too (no gradient). */
        sl_tensor *ai = sl_empty(SL_I32, sl_shape(3, 4, 5));
        for (int64_t i = 0; i < 60; i++) sl_set(ai, i, (double)(i * 7 % 11));
        check_op(false, ai, axis, idx, &r);
        check_op(false, tu_noncontig(ai), axis, idx, &r);
    }
    /* The index may equal a's shape, and a 1-D a gathers a permutation with repeats. */
    check_op(false, a, 1, random_index(&r, 4, sl_shape(3, 4, 5)), &r);
    sl_tensor *v = tu_randn(&r, SL_F64, sl_shape(6));
    check_op(false, v, 0, sl_from_data(SL_I32, sl_shape(4), (int32_t[]){5, 0, 5, 5}), &r);
    /* An empty index gives an empty output and a zero gradient. */
    sl_tensor *e = sl_gather(a, 2, sl_zeros(SL_I32, sl_shape(3, 4, 0)));
    ck_assert_str_eq(sl_shape_str(e), "[3,4,0]");
    sl_zero_grad(a);
    ck_assert(sl_backward_ex(e, sl_zeros(SL_F64, sl_shape(3, 4, 0)), 0));
    for (int64_t i = 0; i < 60; i++) ck_assert_double_eq(sl_get(a->grad, i), 0);
}
END_TEST

/* The common use: the logit of each target, against a loop. */
START_TEST(gather_picks_target_logits)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *logits = tu_randn(&r, SL_F32, sl_shape(5, 7));
    int32_t t[5] = {6, 0, 3, 3, 1};
    sl_tensor *targets = sl_from_data(SL_I32, sl_shape(5, 1), t);
    sl_tensor *y = sl_gather(logits, -1, targets);
    ck_assert_str_eq(sl_shape_str(y), "[5,1]");
    for (int i = 0; i < 5; i++) ck_assert_double_eq(sl_get(y, i), sl_get(logits, i * 7 + t[i]));
    ck_assert(sl_backward(sl_sum_all(y)));
    for (int i = 0; i < 35; i++) ck_assert_double_eq(sl_get(logits->grad, i), i % 7 == t[i / 7]);
}
END_TEST

static sl_tensor *call_gather(sl_tensor *const *in, int n, void *u)
{
    return sl_gather(in[0], *(const int *)u, in[1]);
}

START_TEST(gradcheck_gather)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    for (int axis = -1; axis < 3; axis++) {
        int dim = (axis + 3) % 3;
        int64_t shape[3] = {3, 2, 4};
        shape[dim] = 6;
        sl_tensor *idx = random_index(&r, a->shape[dim], 3, shape);
        tu_gradcheck(call_gather, 2, (sl_tensor *[]){a, idx}, &axis);
        tu_gradcheck(call_gather, 2, (sl_tensor *[]){tu_permuted_leaf(a), tu_noncontig(idx)},
                     &axis);
        tu_f32_matches_f64(call_gather, 2, (sl_tensor *[]){a, idx}, &axis);
    }
}
END_TEST

/* ---------------------------------------------------------------- index_select */

START_TEST(index_select_values_and_backward)
{
    sl_rng r = sl_rng_seed(4);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    sl_tensor *as[] = {a, tu_noncontig(a), tu_permuted_leaf(a), tu_cast_leaf(a, SL_F32)};
    for (int axis = -3; axis < 3; axis++) {
        int dim = (axis + 3) % 3;
        sl_tensor *idx = random_index(&r, a->shape[dim], sl_shape(7)); /* repeats */
        for (int v = 0; v < 4; v++) {
            check_op(true, as[v], axis, idx, &r);
            check_op(true, as[v], axis, tu_noncontig(idx), &r);
        }
        check_op(true, tu_cast_leaf(a, SL_I32), axis, idx, &r);
    }
    /* Rows of a batch in a permutation's order; an empty index gives an empty dim. */
    sl_tensor *rows =
        sl_index_select(a, 0, sl_from_data(SL_I32, sl_shape(3), (int32_t[]){2, 0, 1}));
    for (int i = 0; i < 20; i++) {
        ck_assert_double_eq(sl_get(rows, i), sl_get(a, 40 + i));
        ck_assert_double_eq(sl_get(rows, 20 + i), sl_get(a, i));
    }
    ck_assert_str_eq(sl_shape_str(sl_index_select(a, 1, sl_zeros(SL_I32, sl_shape(0)))), "[3,0,5]");
}
END_TEST

static sl_tensor *call_index_select(sl_tensor *const *in, int n, void *u)
{
    return sl_index_select(in[0], *(const int *)u, in[1]);
}

START_TEST(gradcheck_index_select)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    for (int axis = -1; axis < 3; axis++) {
        int dim = (axis + 3) % 3;
        sl_tensor *idx = random_index(&r, a->shape[dim], sl_shape(6));
        tu_gradcheck(call_index_select, 2, (sl_tensor *[]){a, idx}, &axis);
        tu_gradcheck(call_index_select, 2, (sl_tensor *[]){tu_noncontig(a), tu_noncontig(idx)},
                     &axis);
        tu_f32_matches_f64(call_index_select, 2, (sl_tensor *[]){a, idx}, &axis);
    }
}
END_TEST

/* ---------------------------------------------------------------- errors, in-place writes */

START_TEST(errors)
{
    sl_tensor *a = sl_zeros(SL_F64, sl_shape(2, 4));
    ck_assert_error(sl_gather(a, 1, sl_from_data(SL_I32, sl_shape(2, 2), (int32_t[]){0, 3, 4, 1})),
                    SL_ERR_INDEX,
                    "sl_gather: index 4 at [1,0] is out of range [0, 4) along dim 1 of a [2,4]");
    ck_assert_error(sl_gather(a, 0, sl_from_data(SL_I32, sl_shape(1, 3), (int32_t[]){1, 0, -1})),
                    SL_ERR_INDEX,
                    "sl_gather: index -1 at [0,2] is out of range [0, 2) along dim 0 of a [2,4]");
    ck_assert_error(sl_gather(a, 1, sl_zeros(SL_F32, sl_shape(2, 1))), SL_ERR_DTYPE,
                    "sl_gather: index must be i32, got f32 [2,1]");
    ck_assert_error(sl_gather(a, 1, sl_zeros(SL_I32, sl_shape(2))), SL_ERR_SHAPE,
                    "sl_gather: index [2] and a [2,4] differ in ndim");
    ck_assert_error(sl_gather(a, 1, sl_zeros(SL_I32, sl_shape(3, 1))), SL_ERR_SHAPE,
                    "sl_gather: index [3,1] is larger than a [2,4] in dim 0 (only the gather dim "
                    "1 may be)");
    ck_assert_error(sl_gather(a, 2, sl_zeros(SL_I32, sl_shape(2, 1))), SL_ERR_ARG,
                    "sl_gather: axis 2 out of range for [2,4]");
    ck_assert_error(sl_gather(a, 0, NULL), SL_ERR_ARG, "sl_gather: argument 'index' is NULL");

    sl_tensor *b = sl_zeros(SL_F64, sl_shape(3, 2));
    ck_assert_error(sl_index_select(b, 0, sl_from_data(SL_I32, sl_shape(2), (int32_t[]){0, 3})),
                    SL_ERR_INDEX,
                    "sl_index_select: index 3 at position 1 is out of range [0, 3) along dim 0 "
                    "of a [3,2]");
    ck_assert_error(
        sl_index_select(b, -1, sl_from_data(SL_I32, sl_shape(3), (int32_t[]){1, -2, 0})),
        SL_ERR_INDEX,
        "sl_index_select: index -2 at position 1 is out of range [0, 2) along dim 1 "
        "of a [3,2]");
    ck_assert_error(sl_index_select(b, 0, sl_zeros(SL_I32, sl_shape(2, 1))), SL_ERR_DTYPE,
                    "sl_index_select: index must be a 1-D i32 tensor, got i32 [2,1]");
    ck_assert_error(sl_index_select(b, 0, sl_zeros(SL_F64, sl_shape(2))), SL_ERR_DTYPE,
                    "sl_index_select: index must be a 1-D i32 tensor, got f64 [2]");
    ck_assert_error(sl_index_select(SL_NONE, 0, sl_zeros(SL_I32, sl_shape(2))), SL_ERR_ARG,
                    "sl_index_select: argument 'a' is SL_NONE; it is not optional");
}
END_TEST

/* The index is read in place by the backward: writing it in between fails the backward. */
START_TEST(index_written_before_backward)
{
    sl_rng r = sl_rng_seed(6);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(4, 3));
    for (int k = 0; k < 2; k++) {
        sl_tensor *idx = sl_from_data(SL_I32, sl_shape(2), (int32_t[]){1, 2});
        sl_tensor *y =
            k ? sl_index_select(a, 0, idx) : sl_gather(a, 0, sl_reshape(idx, sl_shape(2, 1)));
        ck_assert_ptr_nonnull(y);
        sl_set(idx, 0, 3);
        sl_error_clear();
        ck_assert(!sl_backward(sl_sum_all(y)));
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        ck_assert_msg(strstr(sl_error_message(), k ? "sl_index_select needs input 1 i32 [2]"
                                                   : "sl_gather needs input 1 i32 [2,1]"),
                      "%s", sl_error_message());
        sl_error_clear();
    }
}
END_TEST

/* ---------------------------------------------------------------- threads */

/* Large enough for many units on the pool, along the last dim (one unit per row) and the first
 * (units are blocks of columns): forward and backward give the same bits on 1 and 2 threads,
 * and match the naive loops (which check_op runs on a smaller case). */
START_TEST(threads)
{
    enum { R = 2000, C = 60, V = 50, D = 700, N = 3000 };
    sl_rng r = sl_rng_seed(7);
    sl_tensor *a = tu_randn(&r, SL_F32, sl_shape(R, C));
    sl_tensor *gi = random_index(&r, C, sl_shape(R, 40));
    sl_tensor *w = tu_randn(&r, SL_F32, sl_shape(V, D));
    sl_tensor *si = random_index(&r, V, sl_shape(N));
    sl_tensor *ga = sl_rand_normal(&r, SL_F32, sl_shape(R, 40), 0, 1);
    sl_tensor *gs = sl_rand_normal(&r, SL_F32, sl_shape(N, D), 0, 1);
    int n0 = sl_get_num_threads();
    float *out[2][4];
    int64_t sizes[4] = {R * 40, R * C, N * D, V * D};
    for (int t = 0; t < 2; t++) {
        sl_set_num_threads(t + 1);
        sl_zero_grad(a);
        sl_zero_grad(w);
        sl_tensor *y = sl_gather(a, 1, gi), *z = sl_index_select(w, 0, si);
        ck_assert(sl_backward_ex(y, ga, 0));
        ck_assert(sl_backward_ex(z, gs, 0));
        const sl_tensor *res[4] = {y, a->grad, z, w->grad};
        for (int k = 0; k < 4; k++) {
            out[t][k] = malloc(sizeof(float) * (size_t)sizes[k]);
            memcpy(out[t][k], res[k]->data, sizeof(float) * (size_t)sizes[k]);
        }
    }
    sl_set_num_threads(n0);
    for (int k = 0; k < 4; k++)
        ck_assert(!memcmp(out[0][k], out[1][k], sizeof(float) * (size_t)sizes[k]));
    /* Spot checks against loops: rows of the gather, columns of the scatter-add. */
    const int32_t *pi = gi->data, *ps = si->data;
    int bad = 0; /* (counted, then asserted once: an assertion per element would be slow) */
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 40; j++)
            bad += out[0][0][i * 40 + j] != ((float *)a->data)[i * C + pi[i * 40 + j]];
    ck_assert_int_eq(bad, 0);
    for (int v = 0; v < V; v += 7)
        for (int d = 0; d < D; d += 53) {
            double want = 0;
            for (int i = 0; i < N; i++)
                if (ps[i] == v) want += ((float *)gs->data)[(int64_t)i * D + d];
            ck_assert_close(out[0][3][v * D + d], want, 1e-5, 1e-5);
        }
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 4; k++) free(out[t][k]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gather");
    TCase *tc = tcase_create("gather");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, gather_values_and_backward);
    tu_add_test(s, tc, gather_picks_target_logits);
    tu_add_test(s, tc, gradcheck_gather);
    tu_add_test(s, tc, index_select_values_and_backward);
    tu_add_test(s, tc, gradcheck_index_select);
    tu_add_test(s, tc, errors);
    tu_add_test(s, tc, index_written_before_backward);
    tu_add_test(s, tc, threads);
    return tu_run(s);
}
