/* sl_abs, sl_clamp, sl_minimum, sl_maximum (ops/minmax.c): values against naive loops, the
 * gradient at the kinks (0 for abs, the bounds for clamp, ties for minimum / maximum) and at NaN,
 * float64 gradchecks on contiguous, strided, permuted and broadcast inputs, f32 against f64,
 * errors, in-place writes before the backward, and the thread count. */
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

/* The gradient of sum(w * y) for fixed w, written into x->grad (zeroed first). */
static void backward_weighted(sl_tensor *y, sl_tensor *const *leaves, int n, const sl_tensor *w)
{
    for (int i = 0; i < n; i++) sl_zero_grad(leaves[i]);
    ck_assert_msg(sl_backward_ex(y, w, 0), "%s", sl_error_message());
}

/* ---------------------------------------------------------------- abs */

static sl_tensor *call_abs(sl_tensor *const *in, int n, void *u) { return sl_abs(in[0]); }

START_TEST(abs_values_zero_and_nan)
{
    double v[] = {-2.5, -0.0, 0.0, 3, NAN, -INFINITY};
    for (int f = 0; f < 2; f++) {
        sl_tensor *x = tu_cast_leaf(sl_from_data(SL_F64, sl_shape(6), v), f ? SL_F32 : SL_F64);
        sl_requires_grad(x, true);
        sl_tensor *y = sl_abs(x);
        double want[] = {2.5, 0, 0, 3, NAN, INFINITY};
        for (int i = 0; i < 6; i++) {
            if (isnan(want[i])) ck_assert(isnan(sl_get(y, i)));
            else ck_assert_double_eq(sl_get(y, i), want[i]);
        }
        ck_assert(!signbit(sl_get(y, 1))); /* |-0| is +0 */
        /* The gradient is sign(x): 0 at both zeros and at the NaN. */
        sl_tensor *g = sl_full(x->dtype, sl_shape(6), 3);
        backward_weighted(y, &x, 1, g);
        double wg[] = {-3, 0, 0, 3, 0, -3};
        for (int i = 0; i < 6; i++) ck_assert_double_eq(sl_get(x->grad, i), wg[i]);
    }
}
END_TEST

START_TEST(gradcheck_abs)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    tu_gradcheck(call_abs, 1, &x, NULL);
    tu_gradcheck(call_abs, 1, (sl_tensor *[]){tu_noncontig(x)}, NULL);
    tu_gradcheck(call_abs, 1, (sl_tensor *[]){tu_permuted_leaf(x)}, NULL);
    tu_f32_matches_f64(call_abs, 1, &x, NULL);
}
END_TEST

/* ---------------------------------------------------------------- clamp */

typedef struct {
    double lo, hi;
} bounds;

static sl_tensor *call_clamp(sl_tensor *const *in, int n, void *u)
{
    const bounds *b = u;
    return sl_clamp(in[0], b->lo, b->hi);
}

START_TEST(clamp_values_and_bounds)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(4, 6));
    bounds bs[] = {
        {-0.5, 0.7}, {-INFINITY, 0.3}, {-0.2, INFINITY}, {-INFINITY, INFINITY}, {0.25, 0.25}};
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    for (int b = 0; b < 5; b++)
        for (int v = 0; v < 3; v++) {
            sl_tensor *y = sl_clamp(views[v], bs[b].lo, bs[b].hi);
            ck_assert_msg(y != NULL, "%s", sl_error_message());
            sl_tensor *w = sl_rand_normal(&r, SL_F64, sl_shape(4, 6), 0, 1);
            backward_weighted(y, &views[v], 1, w);
            for (int64_t i = 0; i < 24; i++) {
                double xi = sl_get(x, i), lo = bs[b].lo, hi = bs[b].hi;
                ck_assert_double_eq(sl_get(y, i), xi < lo ? lo : xi > hi ? hi : xi);
                ck_assert_double_eq(sl_get(views[v]->grad, i),
                                    xi >= lo && xi <= hi ? sl_get(w, i) : 0);
            }
        }
}
END_TEST

/* On a bound the gradient passes (torch.clamp's rule); at a NaN it does not; infinite bounds
 * are no bound; an f32 tensor is clamped to the bounds rounded to f32. */
START_TEST(clamp_gradient_at_the_bounds)
{
    double v[] = {-1, -0.5, 0, 0.5, 1, NAN, INFINITY, -INFINITY};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(8), v), true);
    sl_tensor *y = sl_clamp(x, -0.5, 0.5);
    double wy[] = {-0.5, -0.5, 0, 0.5, 0.5, NAN, 0.5, -0.5};
    for (int i = 0; i < 8; i++) {
        if (isnan(wy[i])) ck_assert(isnan(sl_get(y, i)));
        else ck_assert_double_eq(sl_get(y, i), wy[i]);
    }
    backward_weighted(y, &x, 1, sl_ones(SL_F64, sl_shape(8)));
    double wg[] = {0, 1, 1, 1, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) ck_assert_double_eq(sl_get(x->grad, i), wg[i]);
    /* lo == hi: everything on it, and only the values equal to it pass the gradient. */
    backward_weighted(sl_clamp(x, 0, 0), &x, 1, sl_ones(SL_F64, sl_shape(8)));
    double wz[] = {0, 0, 1, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) ck_assert_double_eq(sl_get(x->grad, i), wz[i]);
    /* Infinite bounds: the identity, gradient 1 (infinities included), 0 at the NaN. */
    sl_tensor *id = sl_clamp(x, -INFINITY, INFINITY);
    backward_weighted(id, &x, 1, sl_ones(SL_F64, sl_shape(8)));
    for (int i = 0; i < 8; i++) {
        if (isnan(v[i])) ck_assert(isnan(sl_get(id, i)));
        else ck_assert_double_eq(sl_get(id, i), v[i]);
        ck_assert_double_eq(sl_get(x->grad, i), isnan(v[i]) ? 0 : 1);
    }
    /* f32: the bound 0.1 is 0.1f, so 0.1f is on it (gradient 1) and stays 0.1f. */
    sl_tensor *f = sl_requires_grad(sl_from_data(SL_F32, sl_shape(2), (float[]){0.1f, 0.2f}), true);
    sl_tensor *yf = sl_clamp(f, 0.1, 0.15);
    ck_assert_float_eq(((float *)yf->data)[0], 0.1f);
    ck_assert_float_eq(((float *)yf->data)[1], 0.15f);
    backward_weighted(yf, &f, 1, sl_ones(SL_F32, sl_shape(2)));
    ck_assert_double_eq(sl_get(f->grad, 0), 1);
    ck_assert_double_eq(sl_get(f->grad, 1), 0);
}
END_TEST

START_TEST(gradcheck_clamp)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    bounds bs[] = {{-0.5, 0.7}, {-INFINITY, 0.3}, {-0.2, INFINITY}, {-INFINITY, INFINITY}};
    for (int b = 0; b < 4; b++) {
        tu_gradcheck(call_clamp, 1, &x, &bs[b]);
        tu_gradcheck(call_clamp, 1, (sl_tensor *[]){tu_noncontig(x)}, &bs[b]);
        tu_gradcheck(call_clamp, 1, (sl_tensor *[]){tu_permuted_leaf(x)}, &bs[b]);
        tu_f32_matches_f64(call_clamp, 1, &x, &bs[b]);
    }
}
END_TEST

/* ---------------------------------------------------------------- minimum, maximum */

static sl_tensor *call_minimum(sl_tensor *const *in, int n, void *u)
{
    return sl_minimum(in[0], in[1]);
}
static sl_tensor *call_maximum(sl_tensor *const *in, int n, void *u)
{
    return sl_maximum(in[0], in[1]);
}

/* Values and gradients of min / max against naive loops over broadcast shapes, with ties (the
 * inputs are small integers): a tie sends g / 2 to each side. */
static void check_extreme(bool max, sl_tensor *a, sl_tensor *b, sl_rng *r)
{
    sl_tensor *y = max ? sl_maximum(a, b) : sl_minimum(a, b);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    ck_assert_str_eq(sl_shape_str(y), "[3,2,4]");
    sl_tensor *w = sl_rand_normal(r, a->dtype, sl_shape(3, 2, 4), 0, 1);
    backward_weighted(y, (sl_tensor *[]){a, b}, 2, w);
    double ga[8] = {0}, gb[3 * 2 * 4] = {0};
    /* a is [2,4] (or a view of it), b is [3,1,4] */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++) {
                double u = sl_get(a, j * 4 + k), v = sl_get(b, i * 4 + k);
                double want = max ? (u > v ? u : v) : (u < v ? u : v);
                int o = (i * 2 + j) * 4 + k;
                ck_assert_double_eq(sl_get(y, o), want);
                double g = sl_get(w, o);
                bool a_wins = max ? u > v : u < v;
                ga[j * 4 + k] += u == v ? g / 2 : a_wins ? g : 0;
                gb[i * 4 + k] += u == v ? g / 2 : a_wins ? 0 : g;
            }
    double tol = a->dtype == SL_F32 ? 1e-6 : 1e-15;
    for (int i = 0; i < 8; i++) ck_assert_close(sl_get(a->grad, i), ga[i], tol, tol);
    for (int i = 0; i < 12; i++) ck_assert_close(sl_get(b->grad, i), gb[i], tol, tol);
}

START_TEST(minimum_maximum_values_ties_broadcast)
{
    sl_rng r = sl_rng_seed(4);
    for (int f = 0; f < 2; f++) {
        sl_dtype dt = f ? SL_F32 : SL_F64;
        sl_tensor *a = sl_empty(dt, sl_shape(2, 4)), *b = sl_empty(dt, sl_shape(3, 1, 4));
        for (int i = 0; i < 8; i++) sl_set(a, i, (double)sl_rng_below(&r, 3));
        for (int i = 0; i < 12; i++) sl_set(b, i, (double)sl_rng_below(&r, 3));
        sl_requires_grad(a, true);
        sl_requires_grad(b, true);
        for (int max = 0; max < 2; max++) {
            check_extreme(max, a, b, &r);
            check_extreme(max, tu_noncontig(a), b, &r);
            check_extreme(max, tu_permuted_leaf(a), tu_noncontig(b), &r);
        }
    }
    /* Same shapes, contiguous (the parallel path): a tie splits, the rest goes to the winner. */
    sl_tensor *a = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), (double[]){1, 2, 3}), true);
    sl_tensor *b = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), (double[]){3, 2, 1}), true);
    sl_tensor *g = sl_from_data(SL_F64, sl_shape(3), (double[]){10, 20, 30});
    backward_weighted(sl_maximum(a, b), (sl_tensor *[]){a, b}, 2, g);
    double wa[] = {0, 10, 30}, wb[] = {10, 10, 0};
    for (int i = 0; i < 3; i++) {
        ck_assert_double_eq(sl_get(a->grad, i), wa[i]);
        ck_assert_double_eq(sl_get(b->grad, i), wb[i]);
    }
    backward_weighted(sl_minimum(a, b), (sl_tensor *[]){a, b}, 2, g);
    double ma[] = {10, 10, 0}, mb[] = {0, 10, 30};
    for (int i = 0; i < 3; i++) {
        ck_assert_double_eq(sl_get(a->grad, i), ma[i]);
        ck_assert_double_eq(sl_get(b->grad, i), mb[i]);
    }
    /* One tensor with itself: the halves add up to the identity's gradient. */
    backward_weighted(sl_maximum(a, a), &a, 1, g);
    for (int i = 0; i < 3; i++) ck_assert_double_eq(sl_get(a->grad, i), sl_get(g, i));
}
END_TEST

/* A NaN on either side gives NaN, and both sides get the whole gradient there. */
START_TEST(minimum_maximum_nan)
{
    for (int max = 0; max < 2; max++) {
        sl_tensor *a =
            sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), (double[]){NAN, 1, NAN}), true);
        sl_tensor *b =
            sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), (double[]){1, NAN, NAN}), true);
        sl_tensor *y = max ? sl_maximum(a, b) : sl_minimum(a, b);
        for (int i = 0; i < 3; i++) ck_assert(isnan(sl_get(y, i)));
        backward_weighted(y, (sl_tensor *[]){a, b}, 2, sl_full(SL_F64, sl_shape(3), 5));
        for (int i = 0; i < 3; i++) {
            ck_assert_double_eq(sl_get(a->grad, i), 5);
            ck_assert_double_eq(sl_get(b->grad, i), 5);
        }
    }
}
END_TEST

static void gradcheck_extreme(sl_gradcheck_fn fn)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 4)), *b = tu_randn(&r, SL_F64, sl_shape(3, 4));
    tu_gradcheck(fn, 2, (sl_tensor *[]){a, b}, NULL);
    tu_gradcheck(fn, 2, (sl_tensor *[]){tu_noncontig(a), tu_permuted_leaf(b)}, NULL);
    /* Broadcast both ways, and against a scalar. */
    sl_tensor *c = tu_randn(&r, SL_F64, sl_shape(2, 1, 4)),
              *d = tu_randn(&r, SL_F64, sl_shape(3, 1));
    tu_gradcheck(fn, 2, (sl_tensor *[]){c, d}, NULL);
    tu_gradcheck(fn, 2, (sl_tensor *[]){d, tu_noncontig(c)}, NULL);
    tu_gradcheck(fn, 2, (sl_tensor *[]){a, tu_randn(&r, SL_F64, 0, NULL)}, NULL);
    tu_f32_matches_f64(fn, 2, (sl_tensor *[]){a, b}, NULL);
    tu_f32_matches_f64(fn, 2, (sl_tensor *[]){c, d}, NULL);
}

START_TEST(gradcheck_minimum) { gradcheck_extreme(call_minimum); }
END_TEST
START_TEST(gradcheck_maximum) { gradcheck_extreme(call_maximum); }
END_TEST

/* ---------------------------------------------------------------- errors, in-place writes */

START_TEST(errors)
{
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(3));
    ck_assert_error(sl_clamp(x, 2, 1), SL_ERR_ARG, "sl_clamp: lo 2 > hi 1 for [3]");
    ck_assert_error(sl_clamp(x, NAN, 1), SL_ERR_ARG,
                    "sl_clamp: a bound is NaN (lo nan, hi 1) for [3]");
    ck_assert_error(sl_clamp(x, -INFINITY, NAN), SL_ERR_ARG,
                    "sl_clamp: a bound is NaN (lo -inf, hi nan) for [3]");
    ck_assert_error(sl_abs(sl_zeros(SL_I32, sl_shape(2))), SL_ERR_DTYPE,
                    "sl_abs: expected f32 or f64, got i32 [2]");
    ck_assert_error(sl_clamp(sl_zeros(SL_I32, sl_shape(2)), 0, 1), SL_ERR_DTYPE,
                    "sl_clamp: expected f32 or f64, got i32 [2]");
    ck_assert_error(sl_minimum(x, sl_zeros(SL_F32, sl_shape(3))), SL_ERR_DTYPE,
                    "sl_minimum: dtypes differ: f64 [3] vs f32 [3]");
    ck_assert_error(sl_maximum(sl_zeros(SL_F64, sl_shape(2, 3)), sl_zeros(SL_F64, sl_shape(2))),
                    SL_ERR_SHAPE, "sl_maximum: shapes do not broadcast: [2,3] vs [2]");
    ck_assert_error(sl_maximum(x, NULL), SL_ERR_ARG, "sl_maximum: argument 'b' is NULL");
    ck_assert_error(sl_abs(SL_NONE), SL_ERR_ARG,
                    "sl_abs: argument 'a' is SL_NONE; it is not optional");
}
END_TEST

/* Each op keeps the inputs its backward reads: writing one in place between forward and
 * backward makes the backward fail, naming the op, instead of a wrong gradient. A strided input
 * is read from the op's own contiguous copy, which no write reaches. */
START_TEST(inputs_written_before_backward)
{
    sl_rng r = sl_rng_seed(6);
    for (int k = 0; k < 4; k++) {
        sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(4)), *b = tu_randn(&r, SL_F64, sl_shape(4));
        sl_tensor *y = k == 0   ? sl_abs(a)
                       : k == 1 ? sl_clamp(a, -0.1, 0.1)
                       : k == 2 ? sl_minimum(b, a)
                                : sl_maximum(b, a);
        ck_assert(sl_fill(a, 0.05));
        sl_error_clear();
        ck_assert(!sl_backward(sl_sum_all(y)));
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        const char *names[] = {"sl_abs", "sl_clamp", "sl_minimum", "sl_maximum"};
        char want[128];
        snprintf(want, sizeof want,
                 "sl_backward: %s needs input %d f64 [4] as it was in the "
                 "forward, but it was written in place since",
                 names[k], k < 2 ? 0 : 1);
        ck_assert_msg(strncmp(sl_error_message(), want, strlen(want)) == 0, "%s",
                      sl_error_message());
        sl_error_clear();
    }
    /* A strided input: the op keeps its own copy, and the gradient is the forward's. */
    sl_tensor *x = tu_noncontig(sl_from_data(SL_F64, sl_shape(3), (double[]){-1, 2, -3}));
    sl_tensor *y = sl_abs(x);
    ck_assert(sl_fill(x, 1));
    ck_assert_msg(sl_backward(sl_sum_all(y)), "%s", sl_error_message());
    double want[] = {-1, 1, -1};
    for (int i = 0; i < 3; i++) ck_assert_double_eq(sl_get(x->grad, i), want[i]);
}
END_TEST

/* ---------------------------------------------------------------- threads */

/* Enough elements for several parallel chunks: forward and backward of every op give the same
 * bits on 1 and 2 threads, and match naive loops. */
START_TEST(threads)
{
    enum { N = 100000 };
    sl_rng r = sl_rng_seed(7);
    sl_tensor *a = tu_randn(&r, SL_F32, sl_shape(N)), *b = tu_randn(&r, SL_F32, sl_shape(N));
    sl_tensor *w = sl_rand_normal(&r, SL_F32, sl_shape(N), 0, 1);
    int n0 = sl_get_num_threads();
    float *out[2][4], *ga[2][4], *gb[2];
    for (int t = 0; t < 2; t++) {
        sl_set_num_threads(t + 1);
        for (int k = 0; k < 4; k++) {
            sl_zero_grad(a);
            sl_zero_grad(b);
            sl_tensor *y = k == 0   ? sl_abs(a)
                           : k == 1 ? sl_clamp(a, -0.5, 1)
                           : k == 2 ? sl_minimum(a, b)
                                    : sl_maximum(a, b);
            ck_assert(sl_backward_ex(y, w, 0));
            out[t][k] = malloc(sizeof(float) * N);
            ga[t][k] = malloc(sizeof(float) * N);
            memcpy(out[t][k], y->data, sizeof(float) * N);
            memcpy(ga[t][k], a->grad->data, sizeof(float) * N);
            if (k == 3) {
                gb[t] = malloc(sizeof(float) * N);
                memcpy(gb[t], b->grad->data, sizeof(float) * N);
            }
        }
    }
    sl_set_num_threads(n0);
    for (int k = 0; k < 4; k++) {
        ck_assert(!memcmp(out[0][k], out[1][k], sizeof(float) * N));
        ck_assert(!memcmp(ga[0][k], ga[1][k], sizeof(float) * N));
    }
    ck_assert(!memcmp(gb[0], gb[1], sizeof(float) * N));
    /* (Mismatches are counted and asserted once: an assertion per element would be slow.) */
    const float *pa = a->data, *pb = b->data, *pw = w->data;
    int bad[9] = {0};
    for (int i = 0; i < N; i++) {
        float u = pa[i], v = pb[i];
        bad[0] += out[0][0][i] != fabsf(u);
        bad[1] += ga[0][0][i] != (u > 0 ? pw[i] : -pw[i]);
        bad[2] += out[0][1][i] != (u < -0.5f ? -0.5f : u > 1 ? 1 : u);
        bad[3] += ga[0][1][i] != (u >= -0.5f && u <= 1 ? pw[i] : 0);
        bad[4] += out[0][2][i] != fminf(u, v);
        bad[5] += ga[0][2][i] != (u < v ? pw[i] : 0);
        bad[6] += out[0][3][i] != fmaxf(u, v);
        bad[7] += ga[0][3][i] != (u > v ? pw[i] : 0);
        bad[8] += gb[0][i] != (u > v ? 0 : pw[i]);
    }
    for (int k = 0; k < 9; k++) ck_assert_msg(bad[k] == 0, "check %d: %d mismatches", k, bad[k]);
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < 4; k++) {
            free(out[t][k]);
            free(ga[t][k]);
        }
        free(gb[t]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("minmax");
    TCase *tc = tcase_create("minmax");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, abs_values_zero_and_nan);
    tu_add_test(s, tc, gradcheck_abs);
    tu_add_test(s, tc, clamp_values_and_bounds);
    tu_add_test(s, tc, clamp_gradient_at_the_bounds);
    tu_add_test(s, tc, gradcheck_clamp);
    tu_add_test(s, tc, minimum_maximum_values_ties_broadcast);
    tu_add_test(s, tc, minimum_maximum_nan);
    tu_add_test(s, tc, gradcheck_minimum);
    tu_add_test(s, tc, gradcheck_maximum);
    tu_add_test(s, tc, errors);
    tu_add_test(s, tc, inputs_written_before_backward);
    tu_add_test(s, tc, threads);
    return tu_run(s);
}
