/* Positional ops: Vaswani's sinusoids against the formula; rotary embedding against a naive
 * rotation and PyTorch (GPT-NeoX's half-split form), norms, the relative property, gradchecks
 * (views included), f32 against f64; T5's buckets against T5's rule written here and against
 * Hugging Face's code, the T5 bias against a naive lookup and PyTorch, its KV-cache alignment and
 * its gradient into the bucket table; the errors of each. */
#include "testutil.h"

#include "fixtures/posenc_reference.h" /* made by fixtures/make_posenc_fixture.py */

/* ---------------------------------------------------------------- sinusoidal */

START_TEST(sinusoidal_values)
{
    enum { T = 7, C = 10 };
    sl_tensor *pe = sl_sinusoidal(SL_F64, 3, T, C);
    ck_assert_ptr_nonnull(pe);
    ck_assert_int_eq(pe->ndim, 2);
    ck_assert_int_eq(pe->shape[0], T);
    ck_assert_int_eq(pe->shape[1], C);
    ck_assert(!pe->requires_grad);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C / 2; i++) {
            double a = (3 + t) / pow(10000.0, 2.0 * i / C); /* pos / 10000^(2i/d_model) */
            ck_assert_close(sl_get(pe, t * C + 2 * i), sin(a), 1e-14, 1e-15);
            ck_assert_close(sl_get(pe, t * C + 2 * i + 1), cos(a), 1e-14, 1e-15);
        }
    /* Literal values: position 1, C = 4: sin 1, cos 1, sin 0.01, cos 0.01. */
    sl_tensor *one = sl_sinusoidal(SL_F64, 1, 1, 4);
    ck_assert_double_eq_tol(sl_get(one, 0), 0.8414709848078965, 1e-16);
    ck_assert_double_eq_tol(sl_get(one, 1), 0.5403023058681398, 1e-16);
    ck_assert_double_eq_tol(sl_get(one, 2), 0.009999833334166664, 1e-17);
    ck_assert_double_eq_tol(sl_get(one, 3), 0.9999500004166653, 1e-16);
    /* Far past any training length: position 10^6 is as exact as position 0. */
    sl_tensor *far = sl_sinusoidal(SL_F32, 1000000, 2, 6);
    ck_assert_int_eq(far->dtype, SL_F32);
    ck_assert_close(sl_get(far, 0), sin(1e6), 0, 1e-7);
    ck_assert_close(sl_get(far, 6 + 3), cos(1000001.0 / pow(10000.0, 2.0 / 6)), 0, 1e-7);
    /* Odd C: the last feature is a sine. */
    sl_tensor *odd = sl_sinusoidal(SL_F64, 5, 1, 3);
    ck_assert_close(sl_get(odd, 2), sin(5 / pow(10000.0, 2.0 / 3)), 1e-14, 0);
}
END_TEST

START_TEST(sinusoidal_errors)
{
    ck_assert_ptr_null(sl_sinusoidal(SL_I32, 0, 2, 2));
    ck_assert_str_eq(sl_error_message(), "sl_sinusoidal: dtype must be f32 or f64, not i32");
    sl_error_clear();
    ck_assert_ptr_null(sl_sinusoidal(SL_F32, 0, 0, 2));
    ck_assert_str_eq(sl_error_message(), "sl_sinusoidal: T 0 and C 2 must be >= 1");
    sl_error_clear();
    ck_assert_ptr_null(sl_sinusoidal(SL_F32, -1, 2, 2));
    ck_assert_str_eq(sl_error_message(), "sl_sinusoidal: pos0 -1 outside [0, 2^52]");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- rotary */

/* RoPE on a contiguous (B, H, T, D) double array, written as a 2 x 2 rotation matrix applied to
 * each pair (x_i, x_(i + D/2)) with theta_i = base^(-2i/D). */
static void naive_rotary(const double *x, double *y, int B, int H, int T, int D, int64_t pos0,
                         double base)
{
    for (int r = 0; r < B * H * T; r++) {
        int64_t p = pos0 + r % T;
        for (int i = 0; i < D / 2; i++) {
            double theta = p * pow(base, -2.0 * i / D);
            double R[2][2] = {{cos(theta), -sin(theta)}, {sin(theta), cos(theta)}};
            double v[2] = {x[r * D + i], x[r * D + i + D / 2]};
            y[r * D + i] = R[0][0] * v[0] + R[0][1] * v[1];
            y[r * D + i + D / 2] = R[1][0] * v[0] + R[1][1] * v[1];
        }
    }
}

static double *values(const sl_tensor *t)
{
    double *b = sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)sl_numel(t), 64);
    ck_assert_ptr_nonnull(b);
    for (int64_t i = 0; i < sl_numel(t); i++) b[i] = sl_get(t, i);
    return b;
}

START_TEST(rotary_matches_naive_rotation)
{
    sl_rng r = sl_rng_seed(1);
    const int64_t pos0s[] = {0, 7, 100000};
    for (int k = 0; k < 3; k++) {
        sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 5, 8));
        sl_tensor *y = sl_rotary(x, pos0s[k], SL_ROTARY_BASE);
        ck_assert_msg(y != NULL, "%s", sl_error_message());
        ck_assert(sl_is_contiguous(y) && y->requires_grad);
        double want[2 * 3 * 5 * 8];
        naive_rotary(values(x), want, 2, 3, 5, 8, pos0s[k], SL_ROTARY_BASE);
        for (int i = 0; i < 240; i++) ck_assert_close(sl_get(y, i), want[i], 1e-12, 1e-12);
    }
    /* Position 0 is the identity; another base changes the frequencies. */
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(1, 1, 1, 6));
    ck_assert(tu_max_abs_diff(sl_rotary(x, 0, SL_ROTARY_BASE), x) == 0);
    double want[6];
    naive_rotary(values(x), want, 1, 1, 1, 6, 3, 100.0);
    sl_tensor *y = sl_rotary(x, 3, 100.0);
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(y, i), want[i], 1e-13, 1e-14);
}
END_TEST

START_TEST(rotary_matches_pytorch)
{
    const int64_t shape[4] = {ROPE_B, ROPE_H, ROPE_T, ROPE_D};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, 4, shape, rope_x), true);
    sl_tensor *y = sl_rotary(x, ROPE_POS0, ROPE_BASE);
    ck_assert(y && sl_backward_ex(y, sl_from_data(SL_F64, 4, shape, rope_g), 0));
    for (int i = 0; i < ROPE_B * ROPE_H * ROPE_T * ROPE_D; i++) {
        ck_assert_close(sl_get(y, i), rope_y[i], 1e-12, 1e-12);
        ck_assert_close(sl_get(x->grad, i), rope_dx[i], 1e-12, 1e-12);
    }
}
END_TEST

START_TEST(rotary_preserves_norms_and_is_relative)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 2, 9, 16));
    sl_tensor *y = sl_rotary(x, 12345, SL_ROTARY_BASE);
    for (int row = 0; row < 2 * 2 * 9; row++) {
        double nx = 0, ny = 0;
        for (int d = 0; d < 16; d++) {
            nx += sl_get(x, row * 16 + d) * sl_get(x, row * 16 + d);
            ny += sl_get(y, row * 16 + d) * sl_get(y, row * 16 + d);
        }
        ck_assert_close(ny, nx, 1e-13, 0);
    }
    /* q at position m against k at position n: the score depends on m - n only. */
    sl_tensor *q = tu_randn(&r, SL_F64, sl_shape(1, 1, 1, 16));
    sl_tensor *k = tu_randn(&r, SL_F64, sl_shape(1, 1, 1, 16));
    const int64_t m[] = {5, 9, 300, 70000}, n[] = {2, 0, 300, 69990};
    for (int c = 0; c < 4; c++) {
        double base = 0;
        for (int64_t shift = 0; shift < 5000; shift += 1237) {
            sl_tensor *qm = sl_rotary(q, m[c] + shift, SL_ROTARY_BASE);
            sl_tensor *kn = sl_rotary(k, n[c] + shift, SL_ROTARY_BASE);
            double s = 0;
            for (int d = 0; d < 16; d++) s += sl_get(qm, d) * sl_get(kn, d);
            if (shift == 0) base = s;
            else ck_assert_close(s, base, 1e-10, 1e-10);
        }
        /* ... and it does depend on m - n: rotating k alone changes it. */
        sl_tensor *qm = sl_rotary(q, m[c], SL_ROTARY_BASE);
        sl_tensor *kn = sl_rotary(k, n[c] + 1, SL_ROTARY_BASE);
        double s = 0;
        for (int d = 0; d < 16; d++) s += sl_get(qm, d) * sl_get(kn, d);
        ck_assert(fabs(s - base) > 1e-3);
    }
}
END_TEST

static sl_tensor *call_rotary(sl_tensor *const *in, int n, void *user)
{
    return sl_rotary(in[0], *(const int64_t *)user, SL_ROTARY_BASE);
}

/* The query layout of attention: (B, T, H, D) permuted to (B, H, T, D). */
static sl_tensor *call_rotary_permuted(sl_tensor *const *in, int n, void *user)
{
    return sl_rotary(sl_permute(in[0], (int[]){0, 2, 1, 3}), *(const int64_t *)user,
                     SL_ROTARY_BASE);
}

START_TEST(rotary_gradcheck_views_and_f32)
{
    sl_rng r = sl_rng_seed(3);
    int64_t pos0 = 0, far = 4097;
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4, 6));
    tu_gradcheck(call_rotary, 1, &x, &pos0);
    tu_gradcheck(call_rotary, 1, &x, &far);
    sl_tensor *nc = tu_noncontig(x); /* last dim strided */
    tu_gradcheck(call_rotary, 1, &nc, &far);
    ck_assert(tu_max_abs_diff(call_rotary(&nc, 1, &far), call_rotary(&x, 1, &far)) == 0);
    sl_tensor *bthd = tu_randn(&r, SL_F64, sl_shape(2, 4, 3, 6));
    tu_gradcheck(call_rotary_permuted, 1, &bthd, &far);
    tu_f32_matches_f64(call_rotary, 1, &x, &far);
    tu_f32_matches_f64(call_rotary_permuted, 1, &bthd, &far);
    /* Backward accumulates: two uses of x give twice the gradient. */
    sl_tensor *y = sl_add(sl_rotary(x, 3, SL_ROTARY_BASE), sl_rotary(x, 3, SL_ROTARY_BASE));
    ck_assert(sl_backward(sl_sum_all(y)));
    sl_tensor *g2 = sl_mul_scalar(sl_detach(x->grad), 0.5);
    sl_zero_grad(x);
    ck_assert(sl_backward(sl_sum_all(sl_rotary(x, 3, SL_ROTARY_BASE))));
    ck_assert_double_eq_tol(tu_max_abs_diff(g2, x->grad), 0, 1e-15);
}
END_TEST

START_TEST(rotary_errors)
{
    sl_tensor *x = sl_zeros(SL_F32, sl_shape(1, 2, 3, 4));
    ck_assert_ptr_null(sl_rotary(sl_zeros(SL_F32, sl_shape(2, 3, 4)), 0, 1e4));
    ck_assert_str_eq(sl_error_message(), "sl_rotary: x [2,3,4] is not (B, H, T, D)");
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(sl_zeros(SL_F32, sl_shape(1, 2, 3, 5)), 0, 1e4));
    ck_assert_str_eq(sl_error_message(),
                     "sl_rotary: x [1,2,3,5]: head dim 5 is odd (rotary rotates pairs)");
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(x, -1, 1e4));
    ck_assert_str_eq(sl_error_message(), "sl_rotary: pos0 -1 outside [0, 2^52]");
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(x, 0, 0));
    ck_assert_str_eq(sl_error_message(), "sl_rotary: base 0 must be finite and > 0");
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(x, 0, INFINITY));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(sl_zeros(SL_I32, sl_shape(1, 2, 3, 4)), 0, 1e4));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert_ptr_null(sl_rotary(NULL, 0, 1e4));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    /* A NULL from a failed call keeps that call's error. */
    ck_assert_ptr_null(sl_rotary(sl_reshape(x, sl_shape(7)), 0, 1e4));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "sl_reshape"));
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- T5 buckets */

/* T5's rule (mesh_tensorflow's _relative_position_bucket, bidirectional=False), written from
 * the paper's description: n = max(-relative_position, 0); half the buckets exact; the rest
 * log-spaced up to max_distance, then clamped to the last. */
static int t5_rule(int64_t relative_position, int num_buckets, int max_distance)
{
    int64_t n = -relative_position;
    if (n < 0) n = 0;
    int max_exact = num_buckets / 2;
    if (n < max_exact) return (int)n;
    int64_t large = max_exact + (int64_t)(log((double)n / max_exact) /
                                          log((double)max_distance / max_exact) *
                                          (num_buckets - max_exact));
    return (int)(large < num_buckets - 1 ? large : num_buckets - 1);
}

START_TEST(t5_buckets_follow_t5)
{
    /* Literal values for T5's defaults (32 buckets, max distance 128). */
    const int64_t dist[] = {0, 1, 15, 16, 18, 19, 21, 32, 64, 100, 127, 128, 1000, 1 << 30};
    const int want[] = {0, 1, 15, 16, 16, 17, 18, 21, 26, 30, 31, 31, 31, 31};
    for (int i = 0; i < 14; i++)
        ck_assert_msg(sl_t5_bucket(dist[i], 32, 128) == want[i], "distance %lld: bucket %d, "
                      "expected %d", (long long)dist[i], sl_t5_bucket(dist[i], 32, 128), want[i]);
    ck_assert_int_eq(sl_t5_bucket(-5, 32, 128), 0); /* a key after the query */
    /* Against Hugging Face's code (float32 logarithms) for every distance below 600. */
    for (int n = 0; n < T5_N_DIST; n++) {
        ck_assert_int_eq(sl_t5_bucket(n, 32, 128), t5_buckets_32_128[n]);
        ck_assert_int_eq(sl_t5_bucket(n, T5_NB, T5_MAXD), t5_buckets_8_20[n]);
    }
    /* Against the rule above for other shapes: odd counts, distances near the exact range. */
    const int shapes[][2] = {{32, 128}, {2, 2}, {3, 5}, {8, 5}, {16, 1000}, {33, 64}, {64, 33}};
    for (int s = 0; s < 7; s++)
        for (int64_t n = 0; n < 3000; n += 1 + n / 50) {
            int nb = shapes[s][0], md = shapes[s][1];
            ck_assert_int_eq(sl_t5_bucket(n, nb, md), t5_rule(-n, nb, md));
        }
    /* Buckets never decrease with distance, and every bucket is used. */
    int prev = 0, seen = 0;
    for (int n = 0; n < 200; n++) {
        int b = sl_t5_bucket(n, 32, 128);
        ck_assert_int_ge(b, prev);
        seen |= b != prev;
        ck_assert_int_le(b, prev + 1);
        prev = b;
    }
    ck_assert(seen && prev == 31);
    /* Errors. */
    ck_assert_int_eq(sl_t5_bucket(3, 1, 128), -1);
    ck_assert_str_eq(sl_error_message(), "sl_t5_bucket: n_buckets 1 must be >= 2");
    sl_error_clear();
    ck_assert_int_eq(sl_t5_bucket(3, 32, 16), -1);
    ck_assert_str_eq(sl_error_message(),
                     "sl_t5_bucket: max_distance 16 must exceed the 16 exact buckets "
                     "(n_buckets 32 / 2)");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- T5 bias */

START_TEST(t5_bias_values_and_kv_alignment)
{
    sl_rng r = sl_rng_seed(4);
    enum { H = 3, NB = 6, MD = 9, TK = 14 };
    sl_tensor *table = tu_randn(&r, SL_F64, sl_shape(H, NB));
    for (int tq = 1; tq <= TK; tq += 4) {
        sl_tensor *b = sl_t5_bias(table, tq, TK, MD);
        ck_assert_msg(b != NULL, "%s", sl_error_message());
        ck_assert_int_eq(b->ndim, 3);
        ck_assert(b->shape[0] == H && b->shape[1] == tq && b->shape[2] == TK);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < tq; i++)
                for (int j = 0; j < TK; j++) {
                    int p = TK - tq + i; /* bottom-right aligned */
                    double want = sl_get(table, h * NB + t5_rule(j - p, NB, MD));
                    ck_assert(sl_get(b, (h * tq + i) * TK + j) == want);
                }
    }
    /* Decoding: the bias of the newest 3 queries is the last 3 rows of the full bias. */
    sl_tensor *full = sl_t5_bias(table, TK, TK, MD), *last = sl_t5_bias(table, 3, TK, MD);
    ck_assert(tu_max_abs_diff(last, sl_narrow(full, 1, TK - 3, 3)) == 0);
    /* More queries than keys: the first rows sit at negative positions (bucket 0 throughout). */
    sl_tensor *wide = sl_t5_bias(table, 4, 2, MD);
    for (int j = 0; j < 2; j++) ck_assert(sl_get(wide, j) == sl_get(table, 0));
}
END_TEST

START_TEST(t5_bias_matches_pytorch)
{
    sl_tensor *table = sl_requires_grad(sl_from_data(SL_F64, sl_shape(T5_H, T5_NB), t5_table),
                                        true);
    sl_tensor *b = sl_t5_bias(table, T5_TQ, T5_TK, T5_MAXD);
    ck_assert(b && sl_backward_ex(b, sl_from_data(SL_F64, sl_shape(T5_H, T5_TQ, T5_TK), t5_g), 0));
    for (int i = 0; i < T5_H * T5_TQ * T5_TK; i++) ck_assert(sl_get(b, i) == t5_bias[i]);
    for (int i = 0; i < T5_H * T5_NB; i++)
        ck_assert_close(sl_get(table->grad, i), t5_dtable[i], 1e-13, 1e-13);
}
END_TEST

typedef struct {
    int64_t tq, tk;
    int md;
} t5_args;

static sl_tensor *call_t5(sl_tensor *const *in, int n, void *user)
{
    const t5_args *a = user;
    return sl_t5_bias(in[0], a->tq, a->tk, a->md);
}

/* The bias through a softmax, as attention uses it: a gradient that is not a plain count. */
static sl_tensor *call_t5_softmax(sl_tensor *const *in, int n, void *user)
{
    const t5_args *a = user;
    return sl_softmax(sl_add(in[1], sl_t5_bias(in[0], a->tq, a->tk, a->md)), -1);
}

START_TEST(t5_bias_gradcheck_and_f32)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *table = tu_randn(&r, SL_F64, sl_shape(2, 8));
    t5_args a = {5, 30, 12}, dec = {1, 30, 12};
    tu_gradcheck(call_t5, 1, &table, &a);
    tu_gradcheck(call_t5, 1, &table, &dec);
    sl_tensor *nc = tu_noncontig(table);
    tu_gradcheck(call_t5, 1, &nc, &a);
    sl_tensor *in[2] = {table, tu_randn(&r, SL_F64, sl_shape(3, 2, 5, 30))};
    tu_gradcheck(call_t5_softmax, 2, in, &a);
    tu_f32_matches_f64(call_t5_softmax, 2, in, &a);
    /* Every bias element's gradient lands in exactly one bucket: a ones gradient gives the
     * bucket counts, which sum to tq tk per head. */
    sl_zero_grad(table);
    sl_tensor *b = sl_t5_bias(table, 5, 30, 12);
    ck_assert(sl_backward(sl_sum_all(b)));
    for (int h = 0; h < 2; h++) {
        double total = 0;
        for (int k = 0; k < 8; k++) total += sl_get(table->grad, h * 8 + k);
        ck_assert_double_eq(total, 5 * 30);
    }
    /* Bucket 0 holds distance 0 and every key after its query: 30 - p_i keys for query i at
     * p_i = 25 + i, 5 + 4 + 3 + 2 + 1 in all. Bucket 1 (distance 1): one key per query. */
    ck_assert_double_eq(sl_get(table->grad, 0), 15);
    ck_assert_double_eq(sl_get(table->grad, 1), 5);
}
END_TEST

START_TEST(t5_bias_errors)
{
    sl_tensor *t = sl_zeros(SL_F32, sl_shape(2, 8));
    ck_assert_ptr_null(sl_t5_bias(sl_zeros(SL_F32, sl_shape(16)), 2, 2, 16));
    ck_assert_str_eq(sl_error_message(), "sl_t5_bias: table [16] is not (H, n_buckets)");
    sl_error_clear();
    ck_assert_ptr_null(sl_t5_bias(t, 0, 2, 16));
    ck_assert_str_eq(sl_error_message(), "sl_t5_bias: tq 0 and tk 2 must be >= 1");
    sl_error_clear();
    ck_assert_ptr_null(sl_t5_bias(t, 2, 2, 4));
    ck_assert_str_eq(sl_error_message(), "sl_t5_bias: max_distance 4 must exceed the 4 exact "
                                         "buckets (n_buckets 8 / 2)");
    sl_error_clear();
    ck_assert_ptr_null(sl_t5_bias(sl_zeros(SL_F32, sl_shape(2, 1)), 2, 2, 4));
    ck_assert_str_eq(sl_error_message(), "sl_t5_bias: n_buckets 1 must be >= 2");
    sl_error_clear();
    ck_assert_ptr_null(sl_t5_bias(sl_zeros(SL_I32, sl_shape(2, 8)), 2, 2, 16));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert_ptr_null(sl_t5_bias(NULL, 2, 2, 16));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("posenc");
    TCase *tc = tcase_create("posenc");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, sinusoidal_values);
    tu_add_test(s, tc, sinusoidal_errors);
    tu_add_test(s, tc, rotary_matches_naive_rotation);
    tu_add_test(s, tc, rotary_matches_pytorch);
    tu_add_test(s, tc, rotary_preserves_norms_and_is_relative);
    tu_add_test(s, tc, rotary_gradcheck_views_and_f32);
    tu_add_test(s, tc, rotary_errors);
    tu_add_test(s, tc, t5_buckets_follow_t5);
    tu_add_test(s, tc, t5_bias_values_and_kv_alignment);
    tu_add_test(s, tc, t5_bias_matches_pytorch);
    tu_add_test(s, tc, t5_bias_gradcheck_and_f32);
    tu_add_test(s, tc, t5_bias_errors);
    return tu_run(s);
}
