/* softmax and log_softmax: values against naive loops along every axis, large and -inf inputs,
 * errors, views, float64 gradchecks and f32 vs f64. */
#include "testutil.h"

typedef struct {
    bool log;
    int axis;
} spec;

static sl_tensor *call_spec(sl_tensor *const *in, int n, void *user)
{
    const spec *s = user;
    return s->log ? sl_log_softmax(in[0], s->axis) : sl_softmax(in[0], s->axis);
}

/* The textbook formula, exp(x_k) / sum_i exp(x_i), for inputs small enough not to overflow:
 * want[i] for each element of x (row-major), along `axis` (>= 0). */
static void naive(const sl_tensor *x, int axis, bool log_, double *want)
{
    int64_t n = sl_numel(x), L = x->shape[axis], inner = 1;
    for (int d = axis + 1; d < x->ndim; d++) inner *= x->shape[d];
    for (int64_t i = 0; i < n; i++) {
        int64_t k = i / inner % L, first = i - k * inner;
        double den = 0;
        for (int64_t j = 0; j < L; j++) den += exp(sl_get(x, first + j * inner));
        double p = exp(sl_get(x, i)) / den;
        want[i] = log_ ? log(p) : p;
    }
}

START_TEST(values_match_naive_loops_on_every_axis)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    double want[24];
    for (int v = 0; v < 3; v++)
        for (int axis = -3; axis < 3; axis++)
            for (int lg = 0; lg < 2; lg++) {
                spec s = {lg, axis};
                sl_tensor *y = call_spec(&views[v], 1, &s);
                ck_assert_msg(y != NULL, "%s", sl_error_message());
                ck_assert_str_eq(sl_shape_str(y), "[2,3,4]");
                naive(x, (axis + 3) % 3, lg, want);
                for (int i = 0; i < 24; i++) ck_assert_close(sl_get(y, i), want[i], 1e-14, 1e-15);
            }
}
END_TEST

/* exp(1000) overflows and exp(-1000) underflows: the shifted form stays exact. */
START_TEST(large_values_stay_finite_and_exact)
{
    double v[] = {1000, -1000, 0, 999};
    double e1 = exp(-1.0), z = 1 + e1; /* sum of exp(x - 1000) over the row, to double precision */
    double want_sm[] = {1 / z, 0, 0, e1 / z};
    double want_ls[] = {-log1p(e1), -2000 - log1p(e1), -1000 - log1p(e1), -1 - log1p(e1)};
    for (int dt = 0; dt < 2; dt++) {
        sl_dtype dtype = dt ? SL_F64 : SL_F32;
        double rtol = dt ? 1e-15 : 2.5e-7; /* f32: two roundings of 0.5 ulp each */
        sl_tensor *x = sl_empty(dtype, sl_shape(4));
        for (int i = 0; i < 4; i++) sl_set(x, i, v[i]);
        sl_tensor *sm = sl_softmax(x, 0), *ls = sl_log_softmax(x, -1);
        for (int i = 0; i < 4; i++) {
            ck_assert(isfinite(sl_get(sm, i)) && isfinite(sl_get(ls, i)));
            ck_assert_close(sl_get(sm, i), want_sm[i], rtol, 0);
            ck_assert_close(sl_get(ls, i), want_ls[i], rtol, 0);
        }
        /* The maximum last, far above the rest: softmax is exactly one-hot. */
        double v3[] = {0, -1000, 1000}, want_ls3[] = {-1000, -2000, 0};
        sl_tensor *x3 = sl_empty(dtype, sl_shape(3));
        for (int i = 0; i < 3; i++) sl_set(x3, i, v3[i]);
        sl_tensor *sm3 = sl_softmax(x3, 0), *ls3 = sl_log_softmax(x3, 0);
        for (int i = 0; i < 3; i++) {
            ck_assert_double_eq(sl_get(sm3, i), i == 2);
            ck_assert_double_eq(sl_get(ls3, i), want_ls3[i]);
        }
    }
    /* The same row along axis 0 of a [4,2] input (the strided path). */
    double w[] = {1000, 1, -1000, 2, 0, 3, 999, 4};
    sl_tensor *x2 = sl_from_data(SL_F64, sl_shape(4, 2), w);
    sl_tensor *sm2 = sl_softmax(x2, 0);
    for (int i = 0; i < 4; i++) ck_assert_close(sl_get(sm2, 2 * i), want_sm[i], 1e-15, 0);
}
END_TEST

/* A masked position (-inf, as causal attention uses) gets probability 0 and no gradient. */
START_TEST(minus_infinity_is_masked)
{
    double v[] = {0, -INFINITY, 1};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), v), true);
    sl_tensor *y = sl_softmax(x, 0);
    double e = exp(1.0);
    ck_assert_close(sl_get(y, 0), 1 / (1 + e), 1e-15, 0);
    ck_assert_double_eq(sl_get(y, 1), 0);
    ck_assert_close(sl_get(y, 2), e / (1 + e), 1e-15, 0);
    sl_tensor *g = sl_from_data(SL_F64, sl_shape(3), (double[]){1, 5, -2});
    ck_assert(sl_backward_ex(y, g, 0));
    /* dx_k = y_k (g_k - sum_i g_i y_i) */
    double p0 = 1 / (1 + e), p2 = e / (1 + e), dot = p0 - 2 * p2;
    ck_assert_close(sl_get(x->grad, 0), p0 * (1 - dot), 1e-15, 0);
    ck_assert_double_eq(sl_get(x->grad, 1), 0);
    ck_assert_close(sl_get(x->grad, 2), p2 * (-2 - dot), 1e-15, 0);
    ck_assert_double_eq(sl_get(sl_log_softmax(x, 0), 1), -INFINITY);
}
END_TEST

/* Rows sum to 1 and log_softmax is log(softmax) for a wide random row. */
START_TEST(rows_sum_to_one_and_log_matches)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = sl_rand_normal(&r, SL_F64, sl_shape(5, 301), 0, 10);
    sl_tensor *y = sl_softmax(x, 1), *ly = sl_log_softmax(x, 1);
    for (int i = 0; i < 5; i++) {
        double s = 0;
        for (int j = 0; j < 301; j++) {
            s += sl_get(y, i * 301 + j);
            double p = sl_get(y, i * 301 + j);
            if (p > 1e-300) ck_assert_close(sl_get(ly, i * 301 + j), log(p), 1e-13, 1e-13);
        }
        ck_assert_close(s, 1, 1e-14, 0);
    }
}
END_TEST

START_TEST(errors_name_op_axis_and_shape)
{
    sl_tensor *x = sl_zeros(SL_F32, sl_shape(2, 3));
    ck_assert_ptr_null(sl_softmax(x, 2));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_softmax: axis 2 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_log_softmax(x, -3));
    ck_assert_str_eq(sl_error_message(), "sl_log_softmax: axis -3 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_softmax(sl_scalar(SL_F64, 1), 0));
    ck_assert_str_eq(sl_error_message(), "sl_softmax: axis 0 out of range for []");
    sl_error_clear();
    sl_tensor *i = sl_zeros(SL_I32, sl_shape(4));
    ck_assert_ptr_null(sl_log_softmax(i, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    ck_assert_str_eq(sl_error_message(), "sl_log_softmax: expected f32 or f64, got i32 [4]");
    /* A NULL from a failed call propagates without replacing the first message. */
    ck_assert_ptr_null(sl_softmax(sl_log_softmax(i, 0), 0));
    ck_assert_str_eq(sl_error_message(), "sl_log_softmax: expected f32 or f64, got i32 [4]");
    sl_error_clear();
    ck_assert_ptr_null(sl_softmax(NULL, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_softmax: argument 'a' is NULL");
    sl_error_clear();
    /* Empty tensors are fine. */
    sl_tensor *e = sl_softmax(sl_zeros(SL_F64, sl_shape(0, 3)), 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(sl_shape_str(e), "[0,3]");
}
END_TEST

/* ---------------------------------------------------------------- gradchecks, one per op */

/* f64 gradcheck of softmax (log_: log_softmax) along every axis, on contiguous, strided and
 * permuted inputs, and f32 against f64; then a 1-D input and a lane of length 1 (softmax is
 * constant 1 there, gradient 0). */
static void check_op(bool log_)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    for (int axis = -1; axis < 3; axis++) {
        spec s = {log_, axis};
        for (int v = 0; v < 3; v++) tu_gradcheck(call_spec, 1, &views[v], &s);
        tu_f32_matches_f64(call_spec, 1, &x, &s);
    }
    sl_tensor *v1 = tu_randn(&r, SL_F64, sl_shape(7));
    sl_tensor *c1 = tu_randn(&r, SL_F64, sl_shape(3, 1));
    spec s = {log_, 0}, t = {log_, 1};
    tu_gradcheck(call_spec, 1, &v1, &s);
    tu_gradcheck(call_spec, 1, &c1, &t);
}

START_TEST(gradcheck_softmax) { check_op(false); }
END_TEST
START_TEST(gradcheck_log_softmax) { check_op(true); }
END_TEST

START_TEST(backward_accumulates)
{
    /* loss = sum(w * softmax(x)) + sum(w * log_softmax(x)): both backwards add into x.grad. */
    sl_rng r = sl_rng_seed(5);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(4));
    sl_tensor *w = sl_from_data(SL_F64, sl_shape(4), (double[]){1, -2, 3, 0.5});
    sl_tensor *loss = sl_add(sl_sum_all(sl_mul(w, sl_softmax(x, 0))),
                             sl_sum_all(sl_mul(w, sl_log_softmax(x, 0))));
    ck_assert(sl_backward(loss));
    double p[4], den = 0, dot = 0, ws = 0;
    for (int i = 0; i < 4; i++) den += exp(sl_get(x, i));
    for (int i = 0; i < 4; i++) {
        p[i] = exp(sl_get(x, i)) / den;
        dot += sl_get(w, i) * p[i];
        ws += sl_get(w, i);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_close(sl_get(x->grad, i), p[i] * (sl_get(w, i) - dot) + sl_get(w, i) - p[i] * ws,
                        1e-14, 1e-15);
}
END_TEST

/* The worst |got - want| / (rtol |want| + atol) over many elements: one assertion, not one
 * per element (each Check assertion writes to a file). */
static double worst;
static void track(double got, double want, double rtol, double atol)
{
    double e = fabs(got - want) / (rtol * fabs(want) + atol);
    if (!(e <= worst)) worst = e; /* NaN sticks */
}

START_TEST(large_parallel_matches_naive)
{
    /* Enough rows for several parallel chunks, last axis (in place) and axis 0 (strided).
     * f32 tolerance: x - max rounds to 0.5 ulp of up to ~32, ~1e-6 relative in exp. */
    sl_rng r = sl_rng_seed(4);
    enum { R = 2000, C = 257 };
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(R, C), 0, 3);
    const float *px = x->data;
    const float *y1 = sl_softmax(x, 1)->data, *l1 = sl_log_softmax(x, -1)->data;
    worst = 0;
    for (int i = 0; i < R; i++) {
        double den = 0;
        for (int j = 0; j < C; j++) den += exp((double)px[i * C + j]);
        for (int j = 0; j < C; j++) {
            double p = exp((double)px[i * C + j]) / den;
            track(y1[i * C + j], p, 3e-6, 1e-12);
            track(l1[i * C + j], log(p), 1e-6, 3e-6);
        }
    }
    const float *y0 = sl_softmax(x, 0)->data;
    for (int j = 0; j < C; j += 16) {
        double den = 0;
        for (int i = 0; i < R; i++) den += exp((double)px[i * C + j]);
        for (int i = 0; i < R; i++)
            track(y0[i * C + j], exp((double)px[i * C + j]) / den, 3e-6, 1e-12);
    }
    ck_assert_msg(worst <= 1, "worst error %g times the tolerance", worst);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("softmax");
    TCase *tc = tcase_create("softmax");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, values_match_naive_loops_on_every_axis);
    tu_add_test(s, tc, large_values_stay_finite_and_exact);
    tu_add_test(s, tc, minus_infinity_is_masked);
    tu_add_test(s, tc, rows_sum_to_one_and_log_matches);
    tu_add_test(s, tc, errors_name_op_axis_and_shape);
    tu_add_test(s, tc, gradcheck_softmax);
    tu_add_test(s, tc, gradcheck_log_softmax);
    tu_add_test(s, tc, backward_accumulates);
    tu_add_test(s, tc, large_parallel_matches_naive);
    tu_every_isa();
    return tu_run(s);
}
