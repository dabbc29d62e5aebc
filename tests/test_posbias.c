/* The biases of the methods after ALiBi (ops/kerple.c, sandwich.c, fire.c): values against
 * naive loops of the papers' formulas, f64 gradchecks of every parameter, f32 against f64,
 * the same results with any thread count, and the errors. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- KERPLE */

static sl_tensor *call_kerple(sl_tensor *const *in, int n, void *user)
{
    const int64_t *t = user;
    return sl_kerple_bias(in[0], in[1], t[0], t[1]);
}

/* A (H) leaf of values in [lo, hi). */
static sl_tensor *uniform_leaf(sl_rng *r, sl_dtype dt, int64_t n, double lo, double hi)
{
    sl_tensor *t = sl_empty(dt, sl_shape(n));
    for (int64_t i = 0; i < n; i++) sl_set(t, i, lo + (hi - lo) * sl_rng_uniform(r));
    sl_requires_grad(t, true);
    return t;
}

START_TEST(kerple_values_follow_the_formula)
{
    const int64_t sizes[][2] = {{5, 5}, {1, 9}, {3, 7}, {7, 3}};
    sl_rng r = sl_rng_seed(1);
    for (int s = 0; s < 4; s++) {
        int64_t tq = sizes[s][0], tk = sizes[s][1], H = 3;
        sl_tensor *r1 = uniform_leaf(&r, SL_F64, H, 0.01, 2),
                  *r2 = uniform_leaf(&r, SL_F64, H, 0.01, 1);
        sl_tensor *b = sl_kerple_bias(r1, r2, tq, tk);
        ck_assert_msg(b != NULL, "%s", sl_error_message());
        ck_assert(b->ndim == 3 && b->shape[0] == H && b->shape[1] == tq && b->shape[2] == tk);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t j = 0; j < tk; j++) {
                    double d = fabs((double)(tk - tq + i - j));
                    double want = -sl_get(r1, h) * log(1 + sl_get(r2, h) * d);
                    ck_assert_close(sl_get(b, (h * tq + i) * tk + j), want, 1e-15, 1e-15);
                }
        /* f32: the same to float precision */
        sl_tensor *b32 = sl_kerple_bias(sl_to_dtype(r1, SL_F32), sl_to_dtype(r2, SL_F32), tq, tk);
        ck_assert_double_le(tu_max_rel_diff(b32, b), 1e-6);
    }
    /* r2 = 0 gives no bias; distance 0 never has one */
    sl_tensor *z =
        sl_kerple_bias(sl_full(SL_F64, sl_shape(2), 1.5), sl_zeros(SL_F64, sl_shape(2)), 4, 4);
    ck_assert_double_eq(tu_max_abs_diff(z, sl_zeros(SL_F64, sl_shape(2, 4, 4))), 0);
}
END_TEST

START_TEST(kerple_gradcheck)
{
    const int64_t sizes[][2] = {{6, 6}, {2, 8}, {1, 5}};
    for (int s = 0; s < 3; s++) {
        sl_rng r = sl_rng_seed(10 + s);
        sl_tensor *in[2] = {uniform_leaf(&r, SL_F64, 4, 0.1, 2),
                            uniform_leaf(&r, SL_F64, 4, 0.1, 1)};
        int64_t t[2] = {sizes[s][0], sizes[s][1]};
        tu_gradcheck(call_kerple, 2, in, t);
        tu_f32_matches_f64(call_kerple, 2, in, t);
    }
}
END_TEST

START_TEST(kerple_errors)
{
    sl_tensor *a = sl_ones(SL_F64, sl_shape(3)), *b = sl_ones(SL_F64, sl_shape(2));
    ck_assert_ptr_null(sl_kerple_bias(a, b, 2, 2));
    ck_assert_str_eq(sl_error_message(), "sl_kerple_bias: r1 [3] and r2 [2] must both be (H)");
    sl_error_clear();
    ck_assert_ptr_null(sl_kerple_bias(a, sl_ones(SL_F32, sl_shape(3)), 2, 2));
    sl_error_clear();
    ck_assert_ptr_null(sl_kerple_bias(a, a, 0, 2));
    ck_assert_str_eq(sl_error_message(), "sl_kerple_bias: tq 0 and tk 2 must be >= 1");
    sl_error_clear();
    sl_set(a, 1, -0.5);
    ck_assert_ptr_null(sl_kerple_bias(sl_ones(SL_F64, sl_shape(3)), a, 2, 2));
    ck_assert_str_eq(sl_error_message(),
                     "sl_kerple_bias: head 1 has r1 1, r2 -0.5; both must be "
                     "finite and r2 >= 0 (log(1 + r2 d) is not defined for every d otherwise)");
    sl_error_clear();
    ck_assert_ptr_null(sl_kerple_bias(NULL, a, 2, 2));
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- Sandwich */

START_TEST(sandwich_values_follow_the_formula)
{
    const int64_t dims[] = {2, 8, 32};
    for (int di = 0; di < 3; di++) {
        int64_t D = dims[di], tq = 6, tk = 40, H = 4;
        sl_tensor *b = sl_sandwich_bias(SL_F64, (int)H, D, tq, tk);
        ck_assert_msg(b != NULL, "%s", sl_error_message());
        ck_assert(b->shape[0] == H && b->shape[1] == tq && b->shape[2] == tk);
        ck_assert(!b->requires_grad && !b->node);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t j = 0; j < tk; j++) {
                    /* p_m . p_n of Vaswani's sinusoids at frequencies k = 1 .. D/2 */
                    double m = (double)(tk - tq + i), n = (double)j, dot = 0;
                    for (int64_t k = 1; k <= D / 2; k++) {
                        double w = pow(10000.0, -2.0 * k / D);
                        dot += sin(m * w) * sin(n * w) + cos(m * w) * cos(n * w);
                    }
                    double want = (dot - D / 2.0) / (8.0 * (h + 1) / H);
                    ck_assert_close(sl_get(b, (h * tq + i) * tk + j), want, 1e-12, 1e-12);
                }
        /* 0 at distance 0, below 0 elsewhere; f32 agrees */
        for (int64_t j = 0; j < tk; j++)
            if (j == tk - 1) ck_assert_double_eq(sl_get(b, (tq - 1) * tk + j), 0);
            else ck_assert_double_lt(sl_get(b, (tq - 1) * tk + j), 0);
        ck_assert_double_le(tu_max_rel_diff(sl_sandwich_bias(SL_F32, (int)H, D, tq, tk), b), 1e-6);
    }
    ck_assert_ptr_null(sl_sandwich_bias(SL_F64, 2, 7, 3, 3));
    ck_assert_str_eq(sl_error_message(),
                     "sl_sandwich_bias: n_heads 2 must be >= 1 and dim 7 even and >= 2");
    sl_error_clear();
    ck_assert_ptr_null(sl_sandwich_bias(SL_I32, 2, 8, 3, 3));
    ck_assert_str_eq(sl_error_message(), "sl_sandwich_bias: dtype must be f32 or f64, not i32");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- FIRE */

enum { FW = 6 }; /* hidden units in these tests */

typedef struct {
    double l_init;
    int64_t tq, tk;
} fire_args;

static sl_tensor *call_fire(sl_tensor *const *in, int n, void *user)
{
    const fire_args *a = user;
    sl_fire_weights w = {in[0], in[1], in[2], in[3], in[4], in[5]};
    return sl_fire_bias(&w, a->l_init, a->tq, a->tk);
}

/* Random FIRE weights for H heads (c and l_mult given; one unit with w1 = 0). */
static void fire_weights(sl_rng *r, sl_dtype dt, int64_t H, double c, double m, sl_tensor **in)
{
    const int64_t shapes[6][2] = {{FW, 1}, {FW, 0}, {H, FW}, {H, 0}, {1, 0}, {1, 0}};
    for (int i = 0; i < 6; i++) {
        int nd = shapes[i][1] ? 2 : 1;
        in[i] = tu_randn(r, dt, nd, shapes[i]);
    }
    sl_set(in[0], 2, 0); /* a constant unit */
    sl_set(in[1], 2, 0.7);
    sl_set(in[4], 0, c);
    sl_set(in[5], 0, m);
}

/* The MLP of the reference implementation, unit by unit. */
static double fire_naive(sl_tensor *const *in, double l_init, int64_t h, int64_t p, int64_t j)
{
    double c = fabs(sl_get(in[4], 0)), L = fabs(sl_get(in[5], 0) * l_init);
    double N = (double)p > L ? (double)p : L;
    double u = log(c * fabs((double)(p - j)) + 1) / (log(c * N + 1) + SL_FIRE_EPS);
    double f = sl_get(in[3], h);
    for (int64_t k = 0; k < FW; k++) {
        double a = sl_get(in[0], k) * u + sl_get(in[1], k);
        f += sl_get(in[2], h * FW + k) * (a > 0 ? a : 0);
    }
    return f;
}

START_TEST(fire_values_follow_the_reference)
{
    const fire_args cases[] = {{4.0, 9, 9}, {2.5, 1, 12}, {30.0, 5, 9}, {0.0, 6, 6}};
    for (int s = 0; s < 4; s++) {
        sl_rng r = sl_rng_seed(20 + s);
        int64_t H = 3, tq = cases[s].tq, tk = cases[s].tk;
        sl_tensor *in[6];
        fire_weights(&r, SL_F64, H, s == 2 ? -0.3 : 0.1, s == 1 ? -1.5 : 1.0, in);
        sl_tensor *b = call_fire(in, 6, (void *)&cases[s]);
        ck_assert_msg(b != NULL, "%s", sl_error_message());
        ck_assert(b->shape[0] == H && b->shape[1] == tq && b->shape[2] == tk);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t j = 0; j < tk; j++)
                    ck_assert_close(sl_get(b, (h * tq + i) * tk + j),
                                    fire_naive(in, cases[s].l_init, h, tk - tq + i, j), 1e-12,
                                    1e-12);
        sl_tensor *in32[6];
        for (int i = 0; i < 6; i++) in32[i] = sl_to_dtype(in[i], SL_F32);
        ck_assert_double_le(tu_max_rel_diff(call_fire(in32, 6, (void *)&cases[s]), b), 1e-5);
    }
}
END_TEST

/* Below the threshold every query reads the same function of distance; past it the normaliser
 * is the query's own position, so what a query sees at distance d depends on where it is, and
 * the farthest key (j = 0, u = 1) reads f(1) from every such query. */
START_TEST(fire_depends_on_the_query_position_past_the_threshold)
{
    sl_rng r = sl_rng_seed(30);
    sl_tensor *in[6];
    fire_weights(&r, SL_F64, 2, 0.5, 1.0, in);
    fire_args a = {8.0, 20, 20}; /* threshold 8 */
    sl_tensor *b = call_fire(in, 6, &a);
    /* rows 2 and 5 (positions below 8) agree at each distance; rows 12 and 15 do not */
    for (int64_t d = 0; d <= 2; d++) {
        ck_assert_double_eq(sl_get(b, 2 * 20 + 2 - d), sl_get(b, 5 * 20 + 5 - d));
        if (d) ck_assert_double_ne(sl_get(b, 12 * 20 + 12 - d), sl_get(b, 15 * 20 + 15 - d));
    }
    /* and u = 1 where j = 0 for every query past the threshold: f(1) in every such row */
    for (int64_t i = 9; i < 20; i++)
        ck_assert_close(sl_get(b, i * 20), sl_get(b, 19 * 20), 1e-5, 1e-9);
}
END_TEST

START_TEST(fire_gradcheck)
{
    const fire_args cases[] = {{3.5, 7, 7}, {2.5, 2, 9}, {20.5, 4, 6}};
    for (int s = 0; s < 3; s++) {
        sl_rng r = sl_rng_seed(40 + s);
        sl_tensor *in[6];
        fire_weights(&r, SL_F64, 2, s == 1 ? -0.4 : 0.3, s == 2 ? -0.8 : 1.2, in);
        tu_gradcheck(call_fire, 6, in, (void *)&cases[s]);
        tu_f32_matches_f64(call_fire, 6, in, (void *)&cases[s]);
    }
}
END_TEST

START_TEST(fire_errors)
{
    sl_rng r = sl_rng_seed(50);
    sl_tensor *in[6];
    fire_weights(&r, SL_F64, 2, 0.1, 1, in);
    fire_args a = {4, 5, 3};
    ck_assert_ptr_null(call_fire(in, 6, &a));
    ck_assert_str_eq(sl_error_message(), "sl_fire_bias: tq 5 and tk 3 must satisfy 1 <= tq <= tk "
                                         "(query positions tk - tq + i are >= 0)");
    sl_error_clear();
    a = (fire_args){-1, 3, 3};
    ck_assert_ptr_null(call_fire(in, 6, &a));
    ck_assert_str_eq(sl_error_message(), "sl_fire_bias: l_init -1 must be finite and >= 0");
    sl_error_clear();
    a.l_init = 4;
    sl_tensor *keep = in[2];
    in[2] = sl_ones(SL_F64, sl_shape(2, FW + 1));
    ck_assert_ptr_null(call_fire(in, 6, &a));
    ck_assert_str_eq(sl_error_message(),
                     "sl_fire_bias: weights fc1 [6,1] + [6], fc2 [2,7] + [2], "
                     "c [1], l_mult [1] do not fit (W, 1) + (W), (H, W) + (H), (1), (1)");
    sl_error_clear();
    in[2] = keep;
    in[4] = sl_full(SL_F64, sl_shape(1), NAN);
    ck_assert_ptr_null(call_fire(in, 6, &a));
    ck_assert_str_eq(sl_error_message(), "sl_fire_bias: c nan and l_mult 1 must be finite");
    sl_error_clear();
    in[4] = NULL;
    ck_assert_ptr_null(call_fire(in, 6, &a));
    ck_assert_str_eq(sl_error_message(), "sl_fire_bias: argument 'c' is NULL");
    sl_error_clear();
    in[4] = sl_full(SL_F32, sl_shape(1), 0.1);
    ck_assert_ptr_null(call_fire(in, 6, &a));
    sl_error_clear();
    ck_assert_ptr_null(sl_fire_bias(NULL, 1, 1, 1));
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- threads */

/* Forward and backward of each bias, bitwise the same with 1, 2 and 3 threads. */
START_TEST(results_do_not_depend_on_threads)
{
    int prev = sl_get_num_threads();
    sl_tensor *ref[3][7];
    for (int nt = 1; nt <= 3; nt++) {
        sl_set_num_threads(nt);
        sl_rng r = sl_rng_seed(60);
        sl_tensor *kin[2] = {uniform_leaf(&r, SL_F32, 4, 0.1, 2),
                             uniform_leaf(&r, SL_F32, 4, 0.1, 1)};
        sl_tensor *fin[6];
        fire_weights(&r, SL_F32, 4, 0.2, 1, fin);
        sl_tensor *kb = sl_kerple_bias(kin[0], kin[1], 70, 300);
        sl_fire_weights w = {fin[0], fin[1], fin[2], fin[3], fin[4], fin[5]};
        sl_tensor *fb = sl_fire_bias(&w, 50, 70, 300);
        sl_tensor *sb = sl_sandwich_bias(SL_F32, 4, 16, 70, 300);
        sl_tensor *gk = tu_randn(&r, SL_F32, 3, kb->shape),
                  *gf = tu_randn(&r, SL_F32, 3, fb->shape);
        ck_assert(sl_backward(sl_add(sl_sum_all(sl_mul(kb, gk)), sl_sum_all(sl_mul(fb, gf)))));
        sl_tensor *got[7] = {kb, fb, sb, kin[0]->grad, kin[1]->grad, fin[2]->grad, fin[4]->grad};
        for (int e = 0; e < 7; e++) {
            ck_assert_ptr_nonnull(got[e]);
            if (nt == 1) ref[0][e] = got[e];
            else
                ck_assert_msg(tu_max_abs_diff(got[e], ref[0][e]) == 0, "threads %d, output %d", nt,
                              e);
        }
    }
    sl_set_num_threads(prev);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("posbias");
    TCase *tc = tcase_create("posbias");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, kerple_values_follow_the_formula);
    tu_add_test(s, tc, kerple_gradcheck);
    tu_add_test(s, tc, kerple_errors);
    tu_add_test(s, tc, sandwich_values_follow_the_formula);
    tu_add_test(s, tc, fire_values_follow_the_reference);
    tu_add_test(s, tc, fire_depends_on_the_query_position_past_the_threshold);
    tu_add_test(s, tc, fire_gradcheck);
    tu_add_test(s, tc, fire_errors);
    tu_add_test(s, tc, results_do_not_depend_on_threads);
    return tu_run(s);
}
