/* Comparisons (ops/compare.c): sl_eq .. sl_ge and their scalar forms against naive loops on
 * every dtype, broadcast, strided and permuted inputs; NaN and infinities; the masks fed to
 * sl_where and sl_masked_fill; no gradient; errors; the thread count. */
#include "testutil.h"

#include <float.h>
#include <string.h>

typedef sl_tensor *(*cmp_fn)(sl_tensor *, sl_tensor *);
typedef sl_tensor *(*cmp_scalar_fn)(sl_tensor *, double);
static const cmp_fn ops[6] = {sl_eq, sl_ne, sl_lt, sl_le, sl_gt, sl_ge};
static const cmp_scalar_fn scalar_ops[6] = {sl_eq_scalar, sl_ne_scalar, sl_lt_scalar,
                                            sl_le_scalar, sl_gt_scalar, sl_ge_scalar};

static int naive_cmp(int op, double a, double b)
{
    switch (op) {
    case 0: return a == b;
    case 1: return a != b;
    case 2: return a < b;
    case 3: return a <= b;
    case 4: return a > b;
    default: return a >= b;
    }
}

/* The row-major index into t of output element o of shape (nd, shape), t broadcast to it. */
static int64_t bcast_index(const sl_tensor *t, int nd, const int64_t *shape, int64_t o)
{
    int64_t idx = 0, scale = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t i = o % shape[d];
        o /= shape[d];
        int dt = d - (nd - t->ndim);
        if (dt < 0) continue;
        idx += (t->shape[dt] == 1 ? 0 : i) * scale;
        scale *= t->shape[dt];
    }
    return idx;
}

/* Asserts every op on (a, b) against the naive loops, shape included. */
static void check_pair(sl_tensor *a, sl_tensor *b, int nd, const int64_t *shape)
{
    for (int op = 0; op < 6; op++) {
        sl_tensor *y = ops[op](a, b);
        ck_assert_msg(y != NULL, "%s", sl_error_message());
        ck_assert_int_eq(y->dtype, SL_I32);
        ck_assert_int_eq(y->ndim, nd);
        for (int d = 0; d < nd; d++) ck_assert_int_eq(y->shape[d], shape[d]);
        for (int64_t o = 0; o < sl_numel(y); o++) {
            double va = sl_get(a, bcast_index(a, nd, shape, o));
            double vb = sl_get(b, bcast_index(b, nd, shape, o));
            ck_assert_msg((int)sl_get(y, o) == naive_cmp(op, va, vb), "op %d at %lld: %g vs %g", op,
                          (long long)o, va, vb);
        }
    }
}

/* Small integers, so that equal pairs are common. */
static sl_tensor *small_ints(sl_rng *r, sl_dtype dtype, int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_empty(dtype, ndim, shape);
    for (int64_t i = 0; i < sl_numel(t); i++) sl_set(t, i, (double)sl_rng_below(r, 3) - 1);
    return t;
}

START_TEST(values_match_naive_loops)
{
    sl_rng r = sl_rng_seed(1);
    sl_dtype dtypes[] = {SL_F32, SL_F64, SL_I32};
    for (int k = 0; k < 3; k++) {
        sl_dtype dt = dtypes[k];
        /* Same shapes: contiguous, strided, permuted. */
        sl_tensor *a = small_ints(&r, dt, sl_shape(3, 4, 5)),
                  *b = small_ints(&r, dt, sl_shape(3, 4, 5));
        check_pair(a, b, sl_shape(3, 4, 5));
        check_pair(tu_noncontig(a), b, sl_shape(3, 4, 5));
        if (dt != SL_I32) check_pair(a, tu_permuted_leaf(b), sl_shape(3, 4, 5));
        /* Broadcasting both ways, and against a 0-d tensor. */
        sl_tensor *c = small_ints(&r, dt, sl_shape(2, 1, 4)),
                  *d = small_ints(&r, dt, sl_shape(3, 1));
        check_pair(c, d, sl_shape(2, 3, 4));
        check_pair(d, c, sl_shape(2, 3, 4));
        check_pair(c, tu_noncontig(d), sl_shape(2, 3, 4));
        sl_tensor *z = sl_full(dt, 0, NULL, 0);
        check_pair(a, z, sl_shape(3, 4, 5));
        check_pair(z, z, 0, NULL);
    }
    /* Empty tensors give empty masks. */
    sl_tensor *e = sl_zeros(SL_F64, sl_shape(2, 0));
    ck_assert_str_eq(sl_shape_str(sl_lt(e, sl_zeros(SL_F64, sl_shape(1)))), "[2,0]");
}
END_TEST

START_TEST(nan_and_infinities)
{
    double av[] = {NAN, NAN, 1, INFINITY, -INFINITY, INFINITY, 0.0};
    double bv[] = {NAN, 1, NAN, INFINITY, INFINITY, 1e30, -0.0};
    /* eq ne lt le gt ge, per pair */
    int want[7][6] = {{0, 1, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0},
                      {1, 0, 0, 1, 0, 1}, {0, 1, 1, 1, 0, 0}, {0, 1, 0, 0, 1, 1},
                      {1, 0, 0, 1, 0, 1}};
    for (int f = 0; f < 2; f++) {
        sl_dtype dt = f ? SL_F32 : SL_F64;
        sl_tensor *a = tu_cast_leaf(sl_from_data(SL_F64, sl_shape(7), av), dt);
        sl_tensor *b = tu_cast_leaf(sl_from_data(SL_F64, sl_shape(7), bv), dt);
        for (int op = 0; op < 6; op++) {
            sl_tensor *y = ops[op](a, b);
            for (int i = 0; i < 7; i++) ck_assert_int_eq((int)sl_get(y, i), want[i][op]);
        }
        /* Against a NaN scalar only sl_ne_scalar holds. */
        for (int op = 0; op < 6; op++) {
            sl_tensor *y = scalar_ops[op](a, NAN);
            for (int i = 0; i < 7; i++) ck_assert_int_eq((int)sl_get(y, i), op == 1);
        }
    }
}
END_TEST

START_TEST(scalar_forms)
{
    sl_rng r = sl_rng_seed(2);
    sl_dtype dtypes[] = {SL_F32, SL_F64, SL_I32};
    double scalars[] = {0, -1, 0.5, 7};
    for (int k = 0; k < 3; k++) {
        sl_tensor *a = small_ints(&r, dtypes[k], sl_shape(4, 6));
        sl_tensor *views[] = {a, tu_noncontig(a)};
        for (int v = 0; v < 2; v++)
            for (int si = 0; si < 4; si++)
                for (int op = 0; op < 6; op++) {
                    sl_tensor *y = scalar_ops[op](views[v], scalars[si]);
                    ck_assert_msg(y != NULL, "%s", sl_error_message());
                    ck_assert_int_eq(y->dtype, SL_I32);
                    ck_assert_str_eq(sl_shape_str(y), "[4,6]");
                    for (int64_t i = 0; i < 24; i++)
                        ck_assert_int_eq((int)sl_get(y, i),
                                         naive_cmp(op, sl_get(a, i), scalars[si]));
                }
    }
    /* f32 compares with the scalar rounded to f32: 0.1f equals 0.1, though (double)0.1f does
     * not; f64 and i32 compare exactly. */
    sl_tensor *f = sl_from_data(SL_F32, sl_shape(1), (float[]){0.1f});
    ck_assert_int_eq((int)sl_item(sl_eq_scalar(f, 0.1)), 1);
    ck_assert_int_eq((int)sl_item(sl_gt_scalar(f, 0.1)), 0);
    sl_tensor *d = tu_cast_leaf(f, SL_F64); /* holds (double)0.1f */
    ck_assert_int_eq((int)sl_item(sl_eq_scalar(d, 0.1)), 0);
    ck_assert_int_eq((int)sl_item(sl_gt_scalar(d, 0.1)), 1);
    sl_tensor *i = sl_from_data(SL_I32, sl_shape(3), (int32_t[]){2, 3, INT32_MAX});
    ck_assert_int_eq((int)sl_get(sl_lt_scalar(i, 2.5), 0), 1);
    ck_assert_int_eq((int)sl_get(sl_lt_scalar(i, 2.5), 1), 0);
    ck_assert_int_eq((int)sl_get(sl_ne_scalar(i, 2.5), 0), 1);
    ck_assert_int_eq((int)sl_get(sl_eq_scalar(i, 2147483647.0), 2), 1);
    ck_assert_int_eq((int)sl_get(sl_lt_scalar(i, 2147483647.5), 2), 1);
    /* A scalar beyond f32's range is an infinity to an f32 tensor. */
    sl_tensor *big = sl_from_data(SL_F32, sl_shape(1), (float[]){FLT_MAX});
    ck_assert_int_eq((int)sl_item(sl_lt_scalar(big, 1e300)), 1);
}
END_TEST

/* The masks are what sl_where and sl_masked_fill take, gradients included. */
START_TEST(masks_drive_where_and_masked_fill)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4)), *b = tu_randn(&r, SL_F64, sl_shape(4));
    /* where(a > b, a, b) is the elementwise maximum, broadcast. */
    sl_tensor *m = sl_where(sl_gt(a, b), a, b);
    ck_assert_msg(m != NULL, "%s", sl_error_message());
    for (int64_t i = 0; i < 12; i++)
        ck_assert_double_eq(sl_get(m, i), fmax(sl_get(a, i), sl_get(b, i % 4)));
    ck_assert(sl_backward(sl_sum_all(m)));
    for (int64_t i = 0; i < 12; i++)
        ck_assert_double_eq(sl_get(a->grad, i), sl_get(a, i) > sl_get(b, i % 4));
    for (int64_t j = 0; j < 4; j++) {
        double want = 0;
        for (int i = 0; i < 3; i++) want += sl_get(a, i * 4 + j) <= sl_get(b, j);
        ck_assert_double_eq(sl_get(b->grad, j), want);
    }
    /* masked_fill(x, x < 0, 0) is relu; a mask of another shape broadcasts. */
    sl_tensor *x = tu_randn(&r, SL_F32, sl_shape(2, 5));
    sl_tensor *relu = sl_masked_fill(x, sl_lt_scalar(x, 0), 0);
    ck_assert_double_eq(tu_max_abs_diff(relu, sl_relu(x)), 0);
    sl_tensor *row = sl_from_data(SL_F32, sl_shape(5), (float[]){0, 1, 2, 3, 4});
    sl_tensor *keep = sl_masked_fill(x, sl_ge_scalar(row, 3), -1);
    for (int64_t i = 0; i < 10; i++)
        ck_assert_double_eq(sl_get(keep, i), i % 5 >= 3 ? -1 : sl_get(x, i));
    /* ...and sl_to_dtype counts them. */
    sl_tensor *count = sl_sum_all(sl_to_dtype(sl_ge_scalar(row, 1), SL_F64));
    ck_assert_double_eq(sl_item(count), 4);
}
END_TEST

START_TEST(no_gradient)
{
    sl_rng r = sl_rng_seed(4);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3)), *b = tu_randn(&r, SL_F64, sl_shape(3));
    for (int op = 0; op < 6; op++) {
        sl_tensor *y = ops[op](a, b), *z = scalar_ops[op](a, 0);
        ck_assert_ptr_null(y->node);
        ck_assert(!y->requires_grad);
        ck_assert_ptr_null(z->node);
        ck_assert(!z->requires_grad);
    }
}
END_TEST

#define ck_assert_error(call, code, msg)                                                           \
    do {                                                                                           \
        sl_error_clear();                                                                          \
        ck_assert_ptr_null(call);                                                                  \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)

START_TEST(errors)
{
    sl_tensor *f = sl_zeros(SL_F32, sl_shape(2)), *d = sl_zeros(SL_F64, sl_shape(2));
    ck_assert_error(sl_lt(f, d), SL_ERR_DTYPE, "sl_lt: dtypes differ: f32 [2] vs f64 [2]");
    ck_assert_error(sl_eq(sl_zeros(SL_I32, sl_shape(2)), d), SL_ERR_DTYPE,
                    "sl_eq: dtypes differ: i32 [2] vs f64 [2]");
    ck_assert_error(sl_ne(sl_zeros(SL_F64, sl_shape(2, 3)), sl_zeros(SL_F64, sl_shape(4))),
                    SL_ERR_SHAPE, "sl_ne: shapes do not broadcast: [2,3] vs [4]");
    ck_assert_error(sl_ge(d, NULL), SL_ERR_ARG, "sl_ge: argument 'b' is NULL");
    ck_assert_error(sl_gt_scalar(NULL, 0), SL_ERR_ARG, "sl_gt_scalar: argument 'a' is NULL");
    ck_assert_error(sl_le(SL_NONE, d), SL_ERR_ARG,
                    "sl_le: argument 'a' is SL_NONE; it is not optional");
    /* A NULL from a failed call passes through with its message. */
    sl_error_clear();
    ck_assert_ptr_null(sl_eq_scalar(sl_lt(f, d), 1));
    ck_assert_str_eq(sl_error_message(), "sl_lt: dtypes differ: f32 [2] vs f64 [2]");
    sl_error_clear();
}
END_TEST

/* Enough elements for several parallel chunks: the same masks on 1 and 2 threads, equal to the
 * naive ones; the broadcast path (serial) agrees with the flat one. */
START_TEST(threads)
{
    enum { N = 100000 };
    sl_rng r = sl_rng_seed(5);
    sl_tensor *a = small_ints(&r, SL_F32, sl_shape(N)), *b = small_ints(&r, SL_F32, sl_shape(N));
    int n0 = sl_get_num_threads();
    static int32_t got[2][2][N];
    for (int t = 0; t < 2; t++) {
        sl_set_num_threads(t + 1);
        sl_tensor *y = sl_le(a, b), *z = sl_gt_scalar(a, 0);
        memcpy(got[t][0], y->data, sizeof got[t][0]);
        memcpy(got[t][1], z->data, sizeof got[t][1]);
    }
    sl_set_num_threads(n0);
    ck_assert(!memcmp(got[0], got[1], sizeof got[0]));
    const float *pa = a->data, *pb = b->data;
    int bad = 0; /* (counted, then asserted once: an assertion per element would be slow) */
    for (int i = 0; i < N; i++)
        bad += got[0][0][i] != (pa[i] <= pb[i]) || got[0][1][i] != (pa[i] > 0);
    ck_assert_int_eq(bad, 0);
    sl_tensor *strided = sl_le(tu_noncontig(a), b);
    ck_assert(!memcmp(strided->data, got[0][0], sizeof got[0][0]));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("compare");
    TCase *tc = tcase_create("compare");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, values_match_naive_loops);
    tu_add_test(s, tc, nan_and_infinities);
    tu_add_test(s, tc, scalar_forms);
    tu_add_test(s, tc, masks_drive_where_and_masked_fill);
    tu_add_test(s, tc, no_gradient);
    tu_add_test(s, tc, errors);
    tu_add_test(s, tc, threads);
    return tu_run(s);
}
