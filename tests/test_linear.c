/* sl_linear: values against a naive loop and against the composition sl_matmul + sl_add +
 * sl_gelu, the f32 GELU kernel over its whole range (tails, overflow, NaN), layouts read in
 * place or copied, thread counts, errors, and float64 gradchecks. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* GELU's tanh form as GPT-2 writes it, 0.5 u (1 + tanh(z)), z = c (u + k u^3), and in the
 * equivalent form u / (1 + e^(-2z)) (1 + tanh(z) = 2 sigmoid(2z)), which keeps its accuracy in
 * the negative tail where 1 + tanh(z) cancels. The tests check the two agree where both are
 * accurate and use the second as the reference. */
static const double C_ = 0.7978845608028654, K_ = 0.044715;

static double gelu_tanh_form(double u)
{
    return 0.5 * u * (1 + tanh(C_ * (u + K_ * u * u * u)));
}

static double gelu_ref(double u)
{
    return u / (1 + exp(-2 * C_ * (u + K_ * u * u * u)));
}

static double gelu_ref_deriv(double u)
{
    double s = 1 / (1 + exp(-2 * C_ * (u + K_ * u * u * u)));
    return s + 2 * C_ * u * s * (1 - s) * (1 + 3 * K_ * u * u);
}

static double gelu_tanh_form_deriv(double u)
{
    double t = tanh(C_ * (u + K_ * u * u * u));
    return 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * C_ * (1 + 3 * K_ * u * u);
}

START_TEST(reference_forms_agree)
{
    for (double u = -5; u <= 5; u += 0.01) {
        ck_assert_close(gelu_ref(u), gelu_tanh_form(u), 1e-11, 1e-15);
        ck_assert_close(gelu_ref_deriv(u), gelu_tanh_form_deriv(u), 1e-11, 1e-15);
    }
}
END_TEST

/* act(x W^T + b) by the definition, in double, with x read through its strides. */
static sl_tensor *naive_linear(const sl_tensor *x, const sl_tensor *w, const sl_tensor *b,
                               bool gelu)
{
    int64_t in = w->shape[1], out = w->shape[0], rows = sl_numel(x) / in;
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    sl_tensor *y = sl_zeros(SL_F64, x->ndim, shape);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? sl_get(b, o) : 0;
            for (int64_t i = 0; i < in; i++) s += sl_get(x, r * in + i) * sl_get(w, o * in + i);
            sl_set(y, r * out + o, gelu ? gelu_ref(s) : s);
        }
    return y;
}

static void assert_error(sl_status code, const char *message)
{
    ck_assert_int_eq(sl_error(), code);
    ck_assert_str_eq(sl_error_message(), message);
    sl_error_clear();
}

START_TEST(values_against_naive_loop)
{
    sl_rng r = sl_rng_seed(1);
    const int64_t xs[][4] = {{3, 2, 3, 5}, {2, 7, 5}, {1, 5}, {3, 1, 1, 5}};
    for (int dt = 0; dt < 2; dt++) {
        sl_dtype d = dt ? SL_F32 : SL_F64;
        for (size_t c = 0; c < sizeof xs / sizeof *xs; c++)
            for (int mode = 0; mode < 4; mode++) {
                bool gelu = mode & 1, bias = mode & 2;
                sl_tensor *x = sl_rand_normal(&r, d, (int)xs[c][0], xs[c] + 1, 0, 1);
                sl_tensor *w = sl_rand_normal(&r, d, sl_shape(4, 5), 0, 1);
                sl_tensor *b = bias ? sl_rand_normal(&r, d, sl_shape(4), 0, 1) : NULL;
                sl_tensor *y =
                    sl_linear(x, w, b ? b : SL_NONE, gelu ? SL_ACT_GELU_TANH : SL_ACT_NONE);
                ck_assert_msg(y != NULL, "%s", sl_error_message());
                sl_tensor *want = naive_linear(x, w, b, gelu);
                ck_assert_str_eq(sl_shape_str(y), sl_shape_str(want));
                ck_assert_int_eq(y->dtype, d);
                double tol = d == SL_F64 ? 1e-13 : 2e-6;
                ck_assert_msg(tu_max_rel_diff(y, want) <= tol, "%s: %.3g from the naive loop",
                              sl_shape_str(x), tu_max_rel_diff(y, want));
            }
    }
}
END_TEST

/* The op is the composition, fused: matmul, add, gelu give the same values (f64: to rounding;
 * f32: to a few ulp, the GELU being evaluated another way). */
START_TEST(matches_the_composition)
{
    sl_rng r = sl_rng_seed(2);
    for (int dt = 0; dt < 2; dt++) {
        sl_dtype d = dt ? SL_F32 : SL_F64;
        sl_tensor *x = sl_rand_normal(&r, d, sl_shape(3, 70, 33), 0, 2);
        sl_tensor *w = sl_rand_normal(&r, d, sl_shape(130, 33), 0, 0.5);
        sl_tensor *b = sl_rand_normal(&r, d, sl_shape(130), 0, 1);
        sl_tensor *u = sl_add(sl_matmul(x, sl_transpose(w, 0, 1)), b);
        sl_tensor *lin = sl_linear(x, w, b, SL_ACT_NONE);
        sl_tensor *act = sl_linear(x, w, b, SL_ACT_GELU_TANH);
        ck_assert_msg(lin && act, "%s", sl_error_message());
        ck_assert_double_le(tu_max_rel_diff(lin, u), d == SL_F64 ? 1e-14 : 1e-6);
        ck_assert_double_le(tu_max_rel_diff(act, sl_gelu(u, SL_GELU_TANH)),
                            d == SL_F64 ? 1e-14 : 1e-6);
    }
}
END_TEST

/* f32 GELU and its derivative against the f64 formula, from deep in the negative tail (where
 * 0.5 u (1 + tanh) would cancel) through overflow of u^3, and NaN. */
START_TEST(f32_gelu_over_its_range)
{
    enum { N = 4003 };
    static float us[N];
    int n = 0;
    for (int i = 0; i < 4000; i++) us[n++] = -20.0f + 40.0f * (float)i / 3999.0f;
    us[n++] = -1e30f;
    us[n++] = 1e30f;
    us[n++] = NAN;
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F32, sl_shape(N, 1), us), true);
    sl_tensor *one = sl_ones(SL_F32, sl_shape(1, 1)); /* weight: y = gelu(x) */
    sl_tensor *y = sl_linear(x, one, SL_NONE, SL_ACT_GELU_TANH);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    ck_assert(sl_backward_ex(y, sl_ones(SL_F32, sl_shape(N, 1)), 0));
    for (int i = 0; i < N; i++) {
        double u = us[i], got = sl_get(y, i), dgot = sl_get(x->grad, i);
        if (isnan(u)) {
            ck_assert(isnan(got) && isnan(dgot));
            continue;
        }
        double want = u < -1e20 ? 0 : u > 1e20 ? u : gelu_ref(u);
        double dwant = u < -1e20 ? 0 : u > 1e20 ? 1 : gelu_ref_deriv(u);
        /* a few float roundings, except that in the negative tail e^(-z) turns the rounding
         * of z = 2 c (u + k u^3) in f32 (a few ulp of |z|) into a relative error */
        double z = fabs(u) < 1e20 ? 2 * C_ * (u + K_ * u * u * u) : 0;
        double rel = 6e-8 * (8 + 3 * (z < 0 ? -z : 0));
        ck_assert_msg(fabs(got - want) <= rel * fabs(want) + 1e-37, "gelu(%.9g) = %.9g, want %.9g",
                      u, got, want);
        ck_assert_msg(fabs(dgot - dwant) <= 2 * rel * fabs(dwant) + 1e-7, "gelu'(%.9g) = %.9g, "
                      "want %.9g", u, dgot, dwant);
    }
    /* the negative tail is tiny but not flushed to zero while it is a normal float:
     * gelu(-9) = -1.46e-28, where 0.5 u (1 + tanh(z)) in f32 gives exactly 0 */
    ck_assert_double_eq_tol(us[1100], -9.0, 0.01);
    ck_assert_double_lt(sl_get(y, 1100), -1e-29);
    ck_assert_double_gt(sl_get(y, 1100), -1e-27);
}
END_TEST

/* Whether a forward allocated a copy of x: the bytes it takes from the arena besides y. */
static size_t extra_bytes(sl_tensor *x, sl_tensor *w)
{
    size_t before = sl_arena_used(sl_arena_current());
    sl_tensor *y = sl_linear(x, w, SL_NONE, SL_ACT_NONE);
    size_t used = sl_arena_used(sl_arena_current()) - before;
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    ck_assert_double_le(tu_max_rel_diff(y, naive_linear(x, w, NULL, false)), 1e-13);
    return used - (size_t)sl_numel(y) * 8;
}

START_TEST(layouts_read_in_place_or_copied)
{
    sl_rng r = sl_rng_seed(3);
    bool prev = sl_set_grad_enabled(false);
    sl_tensor *x = sl_rand_normal(&r, SL_F64, sl_shape(4, 6, 32), 0, 1);
    sl_tensor *w = sl_rand_normal(&r, SL_F64, sl_shape(16, 32), 0, 1);
    sl_tensor *wt = sl_rand_normal(&r, SL_F64, sl_shape(32, 16), 0, 1);
    size_t small = 512; /* headers */
    /* contiguous x, a weight and a transposed one: nothing copied */
    ck_assert_uint_le(extra_bytes(x, w), small);
    ck_assert_uint_le(extra_bytes(x, sl_transpose(wt, 0, 1)), small);
    /* x's rows evenly strided (a narrow of the middle dim of a wider tensor): in place */
    sl_tensor *wide = sl_rand_normal(&r, SL_F64, sl_shape(4, 6, 40), 0, 1);
    ck_assert_uint_le(extra_bytes(sl_narrow(wide, 2, 3, 32), w), small);
    /* rows not evenly strided, or the last dim not contiguous: copied once */
    ck_assert_uint_ge(extra_bytes(sl_narrow(x, 1, 1, 4), w), 4 * 4 * 32 * 8);
    ck_assert_uint_ge(extra_bytes(tu_noncontig(x), w), 4 * 6 * 32 * 8);
    ck_assert_uint_ge(extra_bytes(x, tu_noncontig(w)), 16 * 32 * 8);
    sl_set_grad_enabled(prev);
}
END_TEST

/* Several row chunks and db blocks on 1 and 2 threads: bitwise the same outputs and
 * gradients. */
START_TEST(one_thread_matches_two)
{
    sl_rng r = sl_rng_seed(4);
    sl_tensor *x = tu_randn(&r, SL_F32, sl_shape(333, 256));
    sl_tensor *w = tu_randn(&r, SL_F32, sl_shape(300, 256));
    sl_tensor *b = tu_randn(&r, SL_F32, sl_shape(300));
    sl_tensor *g = sl_rand_normal(&r, SL_F32, sl_shape(333, 300), 0, 1);
    float *res[2][4];
    int prev = sl_get_num_threads();
    for (int k = 0; k < 2; k++) {
        sl_set_num_threads(k + 1);
        sl_zero_grad(x), sl_zero_grad(w), sl_zero_grad(b);
        sl_tensor *y = sl_linear(x, w, b, SL_ACT_GELU_TANH);
        ck_assert_msg(y && sl_backward_ex(y, g, 0), "%s", sl_error_message());
        sl_tensor *t[4] = {y, x->grad, w->grad, b->grad};
        for (int i = 0; i < 4; i++) {
            res[k][i] = malloc(sizeof(float) * (size_t)sl_numel(t[i]));
            ck_assert(sl_copy_out(t[i], res[k][i]));
        }
    }
    sl_set_num_threads(prev);
    const int64_t n[4] = {333 * 300, 333 * 256, 300 * 256, 300};
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(!memcmp(res[0][i], res[1][i], sizeof(float) * (size_t)n[i]),
                      "result %d differs", i);
        free(res[0][i]);
        free(res[1][i]);
    }
}
END_TEST

/* Over 2 slabs of x's rows (dW summed in parts) and several row chunks: the gradients equal
 * those of the composition sl_matmul + sl_add + sl_gelu, in f64. */
START_TEST(long_inner_dim_gradients)
{
    sl_rng r = sl_rng_seed(8);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(5, 417, 6)); /* 2085 rows */
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(7, 6)), *b = tu_randn(&r, SL_F64, sl_shape(7));
    sl_tensor *g = sl_rand_normal(&r, SL_F64, sl_shape(5, 417, 7), 0, 1);
    sl_tensor *got[3], *want[3];
    for (int k = 0; k < 2; k++) {
        sl_zero_grad(x), sl_zero_grad(w), sl_zero_grad(b);
        sl_tensor *y = k ? sl_gelu(sl_add(sl_matmul(x, sl_transpose(w, 0, 1)), b), SL_GELU_TANH)
                         : sl_linear(x, w, b, SL_ACT_GELU_TANH);
        ck_assert_msg(y && sl_backward_ex(y, g, 0), "%s", sl_error_message());
        sl_tensor **dst = k ? want : got;
        dst[0] = sl_detach(x->grad), dst[1] = sl_detach(w->grad), dst[2] = sl_detach(b->grad);
        if (!k) { /* detach shares storage: keep copies of ours */
            for (int i = 0; i < 3; i++) {
                sl_tensor *c = sl_empty(SL_F64, got[i]->ndim, got[i]->shape);
                ck_assert(sl_copy_into(c, got[i]));
                got[i] = c;
            }
        }
    }
    for (int i = 0; i < 3; i++)
        ck_assert_msg(tu_max_rel_diff(got[i], want[i]) <= 1e-12, "gradient %d: %.3g", i,
                      tu_max_rel_diff(got[i], want[i]));
}
END_TEST

/* Under SL_RETAIN_GRAPH a second backward reads what the first one saved: with GELU and a
 * gradient other than ones, two retained backwards give twice one backward's gradients (the
 * saved derivative is not overwritten by dL/du when the graph is kept). */
START_TEST(retained_graph_backward_twice)
{
    for (int f = 0; f < 2; f++) {
        sl_dtype dt = f ? SL_F64 : SL_F32;
        sl_rng r = sl_rng_seed(11);
        sl_tensor *x = tu_randn(&r, dt, sl_shape(33, 20)), *w = tu_randn(&r, dt, sl_shape(24, 20));
        sl_tensor *b = tu_randn(&r, dt, sl_shape(24));
        sl_tensor *g = sl_rand_normal(&r, dt, sl_shape(33, 24), 0, 1);
        sl_tensor *once[3];
        for (int pass = 0; pass < 2; pass++) {
            sl_zero_grad(x), sl_zero_grad(w), sl_zero_grad(b);
            sl_tensor *y = sl_linear(x, w, b, SL_ACT_GELU_TANH);
            ck_assert_msg(y && sl_backward_ex(y, g, pass ? SL_RETAIN_GRAPH : 0), "%s",
                          sl_error_message());
            if (!pass) {
                sl_tensor *t[3] = {x->grad, w->grad, b->grad};
                for (int i = 0; i < 3; i++) {
                    once[i] = sl_empty(dt, t[i]->ndim, t[i]->shape);
                    ck_assert(sl_copy_into(once[i], t[i]));
                }
                continue;
            }
            ck_assert_msg(sl_backward_ex(y, g, 0), "%s", sl_error_message());
            sl_tensor *t[3] = {x->grad, w->grad, b->grad};
            for (int i = 0; i < 3; i++) {
                sl_tensor *want = sl_mul_scalar(once[i], 2);
                double d = tu_max_rel_diff(t[i], want);
                ck_assert_msg(d <= (f ? 1e-14 : 1e-6), "%s gradient %d: %.3g from twice once",
                              sl_dtype_name(dt), i, d);
            }
        }
    }
}
END_TEST

/* Empty products (in = 0: y = b; out = 0: y is empty), forward and backward, with and without
 * bias and GELU: y = act(b) row by row, db = act'(b) * the column sums of g, dx = 0 (out = 0)
 * and dW, dx empty where they are. */
START_TEST(empty_products_have_gradients)
{
    for (int f = 0; f < 2; f++) {
        sl_dtype dt = f ? SL_F64 : SL_F32;
        sl_rng r = sl_rng_seed(12);
        for (int gelu = 0; gelu < 2; gelu++) { /* in = 0 */
            sl_tensor *x = sl_requires_grad(sl_zeros(dt, sl_shape(3, 0)), true);
            sl_tensor *w = sl_requires_grad(sl_zeros(dt, sl_shape(4, 0)), true);
            sl_tensor *b = sl_requires_grad(tu_randn(&r, dt, sl_shape(4)), true);
            sl_tensor *g = sl_rand_normal(&r, dt, sl_shape(3, 4), 0, 1);
            sl_tensor *y = sl_linear(x, w, b, gelu ? SL_ACT_GELU_TANH : SL_ACT_NONE);
            ck_assert_msg(y && sl_backward_ex(y, g, 0), "%s", sl_error_message());
            sl_tensor *u = sl_add(sl_zeros(dt, sl_shape(3, 4)), b); /* the rows of y before act */
            sl_tensor *want = gelu ? sl_gelu(u, SL_GELU_TANH) : u;
            ck_assert_double_le(tu_max_rel_diff(y, want), f ? 1e-14 : 1e-6);
            for (int c = 0; c < 4; c++) {
                double s = 0, d = gelu ? gelu_ref_deriv(sl_get(b, c)) : 1;
                for (int i = 0; i < 3; i++) s += sl_get(g, i * 4 + c);
                double got = sl_get(b->grad, c), tol = (f ? 1e-12 : 1e-5) * (1 + fabs(d * s));
                ck_assert_msg(fabs(got - d * s) <= tol, "db[%d] = %.9g, want %.9g", c, got, d * s);
            }
            ck_assert(x->grad && sl_numel(x->grad) == 0 && w->grad && sl_numel(w->grad) == 0);
        }
        /* out = 0 */
        sl_tensor *x = sl_requires_grad(tu_randn(&r, dt, sl_shape(3, 2)), true);
        sl_tensor *w = sl_requires_grad(sl_zeros(dt, sl_shape(0, 2)), true);
        sl_tensor *b = sl_requires_grad(sl_zeros(dt, sl_shape(0)), true);
        sl_tensor *y = sl_linear(x, w, b, SL_ACT_GELU_TANH);
        ck_assert_msg(y && sl_numel(y) == 0, "%s", sl_error_message());
        ck_assert_msg(sl_backward_ex(y, sl_zeros(dt, sl_shape(3, 0)), 0), "%s", sl_error_message());
        ck_assert(x->grad && sl_numel(x->grad) == 6);
        for (int i = 0; i < 6; i++) ck_assert_double_eq(sl_get(x->grad, i), 0);
    }
}
END_TEST

START_TEST(errors_name_the_shapes)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(2, 3, 4), 0, 1);
    sl_tensor *w = sl_rand_normal(&r, SL_F32, sl_shape(5, 4), 0, 1);
    sl_tensor *b = sl_rand_normal(&r, SL_F32, sl_shape(5), 0, 1);
    ck_assert_ptr_null(sl_linear(x, sl_rand_normal(&r, SL_F32, sl_shape(5, 3), 0, 1), b,
                                SL_ACT_NONE));
    assert_error(SL_ERR_SHAPE,
                 "sl_linear: input [2,3,4] does not end in 3 features (weight [5,3])");
    ck_assert_ptr_null(sl_linear(x, b, SL_NONE, SL_ACT_NONE));
    assert_error(SL_ERR_SHAPE, "sl_linear: weight must be 2-D (out, in), got [5]");
    ck_assert_ptr_null(sl_linear(x, w, sl_rand_normal(&r, SL_F32, sl_shape(4), 0, 1), SL_ACT_NONE));
    assert_error(SL_ERR_SHAPE, "sl_linear: bias [4] does not match weight [5,4] (expected [5])");
    ck_assert_ptr_null(sl_linear(x, w, b, (sl_activation)7));
    assert_error(SL_ERR_ARG, "sl_linear: unknown activation 7");
    ck_assert_ptr_null(sl_linear(x, sl_rand_normal(&r, SL_F64, sl_shape(5, 4), 0, 1), b,
                                SL_ACT_NONE));
    assert_error(SL_ERR_DTYPE, "sl_linear: dtypes differ: f32 [2,3,4] vs f64 [5,4]");
    ck_assert_ptr_null(sl_linear(sl_zeros(SL_I32, sl_shape(2, 4)), w, b, SL_ACT_NONE));
    assert_error(SL_ERR_DTYPE, "sl_linear: expected f32 or f64, got i32 [2,4]");
    ck_assert_ptr_null(sl_linear(NULL, w, b, SL_ACT_NONE));
    assert_error(SL_ERR_ARG, "sl_linear: argument 'x' is NULL");
    /* a NULL from a failed call propagates, its message kept, in any argument, the optional
     * bias included; SL_NONE is no bias whatever error is pending */
    sl_tensor *bad = sl_matmul(x, x);
    ck_assert_ptr_null(sl_linear(bad, w, b, SL_ACT_NONE));
    ck_assert_ptr_null(sl_linear(x, w, bad, SL_ACT_NONE));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [2,3,4] @ [2,3,4]");
    ck_assert_ptr_nonnull(sl_linear(x, w, SL_NONE, SL_ACT_NONE)); /* the error still pending */
    assert_error(SL_ERR_SHAPE, "sl_matmul: inner dims differ: [2,3,4] @ [2,3,4]");
    /* with no error pending, a NULL bias is a mistake, reported as one; SL_NONE is not a
     * weight */
    ck_assert_ptr_null(sl_linear(x, w, NULL, SL_ACT_NONE));
    assert_error(SL_ERR_ARG, "sl_linear: argument 'bias' is NULL");
    ck_assert_ptr_null(sl_linear(x, SL_NONE, b, SL_ACT_NONE));
    assert_error(SL_ERR_ARG, "sl_linear: argument 'weight' is SL_NONE; it is not optional");
}
END_TEST

/* ---------------------------------------------------------------- sl_linear_residual */

static bool same_bits(const sl_tensor *a, const sl_tensor *b)
{
    size_t n = (size_t)sl_numel(a) * sl_dtype_size(a->dtype);
    char *p = malloc(n), *q = malloc(n);
    bool same = sl_numel(a) == sl_numel(b) && sl_copy_out(a, p) && sl_copy_out(b, q) &&
                !memcmp(p, q, n);
    free(p);
    free(q);
    return same;
}

enum {
    R_LEAF, R_INTERMEDIATE, R_IS_X, R_VIEW, R_BROADCAST, R_NO_GRAD,
    R_ONLY,   /* only the residual takes a gradient (x, W, b do not) */
    R_COMMON, /* x and r both made from z: z's gradient sums three contributions, whose order
                 the backward's walk of the two subgraphs decides */
    N_RESIDUALS
};

/* y = act(x W^T + b) + r, fused or as sl_add(r, sl_linear(...)), with r of one of the kinds
 * above; the output is y + r (y when r is x), so that r's gradient sums two contributions. */
static sl_tensor *residual_graph(bool fused, int kind, sl_tensor *x, sl_tensor *w, sl_tensor *b,
                                 sl_tensor *z, sl_tensor *zrow, sl_activation act)
{
    if (kind == R_COMMON) x = sl_add(sl_mul_scalar(z, 1.5), sl_mul_scalar(z, -0.7));
    sl_tensor *r = kind == R_INTERMEDIATE ? sl_mul(z, z)
                   : kind == R_COMMON     ? sl_mul_scalar(z, 2.0)
                   : kind == R_IS_X       ? x
                   : kind == R_VIEW       ? sl_transpose(z, 0, 1) /* z is (T, B, out) */
                   : kind == R_BROADCAST  ? sl_expand(zrow, sl_shape(3, 200, 64))
                                          : z;
    sl_tensor *y = fused ? sl_linear_residual(x, w, b, act, r) : sl_add(r, sl_linear(x, w, b, act));
    return kind == R_IS_X ? y : sl_add(y, r);
}

/* To the bit: the output and every gradient, in f32 and f64, with and without GELU and bias,
 * over several row chunks, for a residual that is a leaf, an intermediate (its gradient handed
 * over), x itself, a transposed view (copied), a broadcast row (rows 0 apart), a leaf that
 * takes no gradient, the only input that takes one, and one made from x's own source. Each
 * graph runs its backward twice (SL_RETAIN_GRAPH, then not): the gradients are twice one's. */
START_TEST(residual_matches_add_to_the_bit)
{
    sl_rng rng = sl_rng_seed(11);
    for (int dt = 0; dt < 2; dt++)
        for (int kind = 0; kind < N_RESIDUALS; kind++)
            for (int v = 0; v < 3; v++) {
                sl_dtype d = dt ? SL_F32 : SL_F64;
                sl_activation act = v == 1 ? SL_ACT_GELU_TANH : SL_ACT_NONE;
                sl_tensor *x = tu_randn(&rng, d, sl_shape(3, 200, 64));
                sl_tensor *w = sl_rand_normal(&rng, d, sl_shape(64, 64), 0, 0.2);
                sl_tensor *b = v == 2 ? SL_NONE : tu_randn(&rng, d, sl_shape(64));
                sl_tensor *z = kind == R_VIEW ? tu_randn(&rng, d, sl_shape(200, 3, 64))
                                              : tu_randn(&rng, d, sl_shape(3, 200, 64));
                sl_tensor *zrow = tu_randn(&rng, d, sl_shape(64));
                sl_requires_grad(w, true);
                if (kind == R_NO_GRAD) sl_requires_grad(z, false);
                if (kind == R_ONLY) {
                    sl_requires_grad(x, false);
                    sl_requires_grad(w, false);
                    if (b != SL_NONE) sl_requires_grad(b, false);
                }
                sl_tensor *g = sl_rand_normal(&rng, d, sl_shape(3, 200, 64), 0, 1);
                sl_tensor *leaves[] = {x, w, b, z, zrow}, *got[2][6];
                for (int fused = 0; fused < 2; fused++) {
                    for (int i = 0; i < 5; i++)
                        if (leaves[i] != SL_NONE) sl_zero_grad(leaves[i]);
                    sl_tensor *y = residual_graph(fused, kind, x, w, b, z, zrow, act);
                    ck_assert_msg(y && sl_backward_ex(y, g, SL_RETAIN_GRAPH) &&
                                      sl_backward_ex(y, g, 0),
                                  "%s", sl_error_message());
                    /* copies (x * 1 keeps every bit): the next round zeroes the gradients */
                    got[fused][0] = sl_mul_scalar(y, 1.0);
                    for (int i = 0; i < 5; i++)
                        got[fused][i + 1] = leaves[i] != SL_NONE && leaves[i]->grad
                                                ? sl_mul_scalar(leaves[i]->grad, 1.0)
                                                : NULL;
                }
                for (int i = 0; i < 6; i++) {
                    ck_assert_msg(!got[0][i] == !got[1][i], "kind %d: gradient %d", kind, i);
                    if (got[0][i])
                        ck_assert_msg(same_bits(got[0][i], got[1][i]),
                                      "%s kind %d variant %d: result %d differs",
                                      sl_dtype_name(d), kind, v, i);
                }
            }
}
END_TEST

START_TEST(residual_errors)
{
    sl_rng r = sl_rng_seed(12);
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(2, 3, 4), 0, 1);
    sl_tensor *w = sl_rand_normal(&r, SL_F32, sl_shape(5, 4), 0, 1);
    ck_assert_ptr_null(sl_linear_residual(x, w, SL_NONE, SL_ACT_NONE, x));
    assert_error(SL_ERR_SHAPE, "sl_linear_residual: residual [2,3,4] does not have the output's "
                               "shape (input [2,3,4] @ weight [5,4]: expected [2,3,5])");
    ck_assert_ptr_null(
        sl_linear_residual(x, w, SL_NONE, SL_ACT_NONE, sl_zeros(SL_F32, sl_shape(6, 5))));
    assert_error(SL_ERR_SHAPE, "sl_linear_residual: residual [6,5] does not have the output's "
                               "shape (input [2,3,4] @ weight [5,4]: expected [2,3,5])");
    ck_assert_ptr_null(
        sl_linear_residual(x, w, SL_NONE, SL_ACT_NONE, sl_zeros(SL_F64, sl_shape(2, 3, 5))));
    assert_error(SL_ERR_DTYPE, "sl_linear_residual: dtypes differ: f32 [2,3,4] vs f64 [2,3,5]");
    ck_assert_ptr_null(sl_linear_residual(x, w, SL_NONE, SL_ACT_NONE, NULL));
    assert_error(SL_ERR_ARG, "sl_linear_residual: argument 'residual' is NULL");
    ck_assert_ptr_null(sl_linear_residual(x, w, SL_NONE, SL_ACT_NONE, SL_NONE));
    assert_error(SL_ERR_ARG,
                 "sl_linear_residual: argument 'residual' is SL_NONE; it is not optional");
    ck_assert_ptr_null(
        sl_linear_residual(x, w, SL_NONE, (sl_activation)3, sl_zeros(SL_F32, sl_shape(2, 3, 5))));
    assert_error(SL_ERR_ARG, "sl_linear_residual: unknown activation 3");
}
END_TEST

/* ---------------------------------------------------------------- gradchecks */

static sl_tensor *g_lin(sl_tensor *const *in, int n, void *u)
{
    return sl_linear(in[0], in[1], n > 2 ? in[2] : SL_NONE, SL_ACT_NONE);
}
static sl_tensor *g_gelu(sl_tensor *const *in, int n, void *u)
{
    return sl_linear(in[0], in[1], n > 2 ? in[2] : SL_NONE, SL_ACT_GELU_TANH);
}
static sl_tensor *g_transposed_weight(sl_tensor *const *in, int n, void *u)
{
    return sl_linear(in[0], sl_transpose(in[1], 0, 1), in[2], SL_ACT_GELU_TANH);
}
static sl_tensor *g_fanin(sl_tensor *const *in, int n, void *u)
{
    /* x and W each used twice, W also as a matmul operand: gradients accumulate */
    sl_tensor *h = sl_linear(in[0], in[1], in[2], SL_ACT_GELU_TANH);
    sl_tensor *y = sl_linear(h, in[1], SL_NONE, SL_ACT_NONE);
    return sl_add(sl_add(y, sl_linear(in[0], in[1], SL_NONE, SL_ACT_NONE)),
                  sl_matmul(in[0], sl_transpose(in[1], 0, 1)));
}

static sl_tensor *g_aliased(sl_tensor *const *in, int n, void *u)
{
    /* one tensor as both x and bias (its gradient gets dx and db), a leaf and an intermediate,
     * with and without GELU; and x as the weight too */
    sl_tensor *h = sl_mul(in[0], in[0]);
    sl_tensor *w2 = sl_linear(in[1], in[1], in[0], SL_ACT_NONE); /* (4, 4): W as x and W */
    return sl_add(sl_add(sl_linear(in[0], in[1], in[0], SL_ACT_NONE),
                         sl_linear(h, in[1], h, SL_ACT_GELU_TANH)),
                  sl_sum_all(w2));
}

static sl_tensor *g_res(sl_tensor *const *in, int n, void *u)
{
    return sl_linear_residual(in[0], in[1], n > 3 ? in[3] : SL_NONE, SL_ACT_NONE, in[2]);
}
static sl_tensor *g_res_gelu(sl_tensor *const *in, int n, void *u)
{
    return sl_linear_residual(in[0], in[1], n > 3 ? in[3] : SL_NONE, SL_ACT_GELU_TANH, in[2]);
}
static sl_tensor *g_res_shared(sl_tensor *const *in, int n, void *u)
{
    /* the residual is x; then an intermediate that is used again after */
    sl_tensor *h = sl_mul(in[0], in[0]);
    sl_tensor *y = sl_linear_residual(in[0], in[1], in[2], SL_ACT_GELU_TANH, in[0]);
    return sl_mul(sl_linear_residual(y, in[1], SL_NONE, SL_ACT_NONE, h), h);
}

START_TEST(gradchecks)
{
    sl_rng r = sl_rng_seed(6);
    sl_tensor *in[] = {tu_randn(&r, SL_F64, sl_shape(2, 3, 4)),
                       tu_randn(&r, SL_F64, sl_shape(5, 4)), tu_randn(&r, SL_F64, sl_shape(5))};
    for (int n = 2; n <= 3; n++) {
        tu_gradcheck(g_lin, n, in, NULL);
        tu_gradcheck(g_gelu, n, in, NULL);
        tu_f32_matches_f64(g_lin, n, in, NULL);
        tu_f32_matches_f64(g_gelu, n, in, NULL);
    }
    sl_tensor *vin[] = {tu_noncontig(in[0]), tu_noncontig(in[1]), tu_noncontig(in[2])};
    tu_gradcheck(g_gelu, 3, vin, NULL);
    tu_gradcheck(g_lin, 3, vin, NULL);
    sl_tensor *t[] = {in[0], tu_randn(&r, SL_F64, sl_shape(4, 5)), in[2]};
    tu_gradcheck(g_transposed_weight, 3, t, NULL);
    tu_f32_matches_f64(g_transposed_weight, 3, t, NULL);
    sl_tensor *f[] = {tu_randn(&r, SL_F64, sl_shape(3, 4)), tu_randn(&r, SL_F64, sl_shape(4, 4)),
                      tu_randn(&r, SL_F64, sl_shape(4))};
    tu_gradcheck(g_fanin, 3, f, NULL);
    sl_tensor *al[] = {tu_randn(&r, SL_F64, sl_shape(4)), tu_randn(&r, SL_F64, sl_shape(4, 4))};
    tu_gradcheck(g_aliased, 2, al, NULL);
    /* a 1-D x, and only some inputs requiring grad */
    sl_tensor *v1[] = {tu_randn(&r, SL_F64, sl_shape(4)), in[1], in[2]};
    tu_gradcheck(g_gelu, 3, v1, NULL);
    sl_requires_grad(in[1], false);
    tu_gradcheck(g_gelu, 3, in, NULL);
    sl_requires_grad(in[1], true);
    sl_requires_grad(in[0], false);
    tu_gradcheck(g_gelu, 3, in, NULL);
    sl_requires_grad(in[0], true);
    /* sl_linear_residual: x, W, residual (, b) */
    sl_tensor *rs[] = {in[0], in[1], tu_randn(&r, SL_F64, sl_shape(2, 3, 5)), in[2]};
    for (int n = 3; n <= 4; n++) {
        tu_gradcheck(g_res, n, rs, NULL);
        tu_gradcheck(g_res_gelu, n, rs, NULL);
        tu_f32_matches_f64(g_res_gelu, n, rs, NULL);
    }
    sl_tensor *vrs[] = {tu_noncontig(rs[0]), tu_noncontig(rs[1]), tu_noncontig(rs[2]),
                        tu_noncontig(rs[3])};
    tu_gradcheck(g_res_gelu, 4, vrs, NULL);
    sl_tensor *sq[] = {tu_randn(&r, SL_F64, sl_shape(3, 4)), tu_randn(&r, SL_F64, sl_shape(4, 4)),
                       tu_randn(&r, SL_F64, sl_shape(4))};
    tu_gradcheck(g_res_shared, 3, sq, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("linear");
    TCase *tc = tcase_create("linear");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, reference_forms_agree);
    tu_add_test(s, tc, values_against_naive_loop);
    tu_add_test(s, tc, matches_the_composition);
    tu_add_test(s, tc, f32_gelu_over_its_range);
    tu_add_test(s, tc, layouts_read_in_place_or_copied);
    tu_add_test(s, tc, one_thread_matches_two);
    tu_add_test(s, tc, long_inner_dim_gradients);
    tu_add_test(s, tc, retained_graph_backward_twice);
    tu_add_test(s, tc, empty_products_have_gradients);
    tu_add_test(s, tc, errors_name_the_shapes);
    tu_add_test(s, tc, residual_matches_add_to_the_bit);
    tu_add_test(s, tc, residual_errors);
    tu_add_test(s, tc, gradchecks);
    tu_every_isa();
    return tu_run(s);
}
