/* Elementwise ops: values, broadcasting, views, errors, and float64 gradchecks. */
#include "testutil.h"

typedef sl_tensor *(*unary_fn)(sl_tensor *);
typedef sl_tensor *(*binary_fn)(sl_tensor *, sl_tensor *);

static sl_tensor *call_unary(sl_tensor *const *in, int n, void *user)
{
    return ((unary_fn)user)(in[0]);
}
static sl_tensor *call_binary(sl_tensor *const *in, int n, void *user)
{
    return ((binary_fn)user)(in[0], in[1]);
}
static sl_tensor *call_gelu_erf(sl_tensor *const *in, int n, void *u) { return sl_gelu(in[0], SL_GELU_ERF); }
static sl_tensor *call_gelu_tanh(sl_tensor *const *in, int n, void *u) { return sl_gelu(in[0], SL_GELU_TANH); }
static sl_tensor *call_pow(sl_tensor *const *in, int n, void *u) { return sl_pow_scalar(in[0], 2.5); }
static sl_tensor *call_adds(sl_tensor *const *in, int n, void *u) { return sl_add_scalar(in[0], -1.5); }
static sl_tensor *call_muls(sl_tensor *const *in, int n, void *u) { return sl_mul_scalar(in[0], 3.0); }
static sl_tensor *call_to32(sl_tensor *const *in, int n, void *u)
{
    return sl_to_dtype(sl_mul(sl_to_dtype(in[0], SL_F32), sl_to_dtype(in[0], SL_F32)), SL_F64);
}

/* Positive inputs for log, sqrt, pow; away from relu's kink. */
static sl_tensor *positive(sl_rng *r, int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_rand_uniform(r, SL_F64, ndim, shape, 0.5, 2.0);
    return sl_requires_grad(t, true);
}

START_TEST(unary_values)
{
    double xs[] = {-2, -0.5, 0.25, 1.5};
    sl_tensor *x = sl_from_data(SL_F64, sl_shape(4), xs);
    sl_tensor *e = sl_exp(x), *t = sl_tanh(x), *s = sl_sigmoid(x), *r = sl_relu(x);
    sl_tensor *ge = sl_gelu(x, SL_GELU_ERF), *gt = sl_gelu(x, SL_GELU_TANH);
    for (int i = 0; i < 4; i++) {
        double v = xs[i];
        ck_assert_close(sl_get(e, i), exp(v), 1e-15, 0);
        ck_assert_close(sl_get(t, i), tanh(v), 1e-15, 0);
        ck_assert_close(sl_get(s, i), 1 / (1 + exp(-v)), 1e-15, 0);
        ck_assert_close(sl_get(r, i), v > 0 ? v : 0, 0, 0);
        ck_assert_close(sl_get(ge, i), 0.5 * v * (1 + erf(v / sqrt(2))), 1e-15, 1e-300);
        ck_assert_close(sl_get(gt, i),
                        0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 1e-15,
                        1e-300);
    }
    /* Known values: gelu(1) = 0.8413447460685429 (erf form). */
    sl_tensor *one = sl_scalar(SL_F64, 1.0);
    ck_assert_close(sl_item(sl_gelu(one, SL_GELU_ERF)), 0.8413447460685429, 1e-15, 0);
}
END_TEST

START_TEST(binary_broadcast_values)
{
    /* [2,3] + [3] and [2,1] * [1,3] */
    double a[] = {1, 2, 3, 4, 5, 6}, b[] = {10, 20, 30}, c[] = {2, 3};
    sl_tensor *ta = sl_from_data(SL_F64, sl_shape(2, 3), a);
    sl_tensor *tb = sl_from_data(SL_F64, sl_shape(3), b);
    sl_tensor *tc = sl_from_data(SL_F64, sl_shape(2, 1), c);
    sl_tensor *s = sl_add(ta, tb);
    ck_assert_int_eq(s->ndim, 2);
    double want[] = {11, 22, 33, 14, 25, 36};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(s, i), want[i], 0, 0);
    sl_tensor *m = sl_mul(tc, sl_reshape(tb, sl_shape(1, 3)));
    double want2[] = {20, 40, 60, 30, 60, 90};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(m, i), want2[i], 0, 0);
    sl_tensor *d = sl_div(ta, tc);
    ck_assert_close(sl_get(d, 5), 2.0, 0, 0);
    sl_tensor *u = sl_sub(tb, ta);
    ck_assert_close(sl_get(u, 3), 6.0, 0, 0);
}
END_TEST

START_TEST(binary_errors_name_op_and_shapes)
{
    sl_tensor *a = sl_zeros(SL_F32, sl_shape(2, 3));
    sl_tensor *b = sl_zeros(SL_F32, sl_shape(4));
    ck_assert_ptr_null(sl_add(a, b));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_add: shapes do not broadcast: [2,3] vs [4]");
    sl_error_clear();
    sl_tensor *c = sl_zeros(SL_F64, sl_shape(2, 3));
    ck_assert_ptr_null(sl_mul(a, c));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    ck_assert_str_eq(sl_error_message(), "sl_mul: dtypes differ: f32 [2,3] vs f64 [2,3]");
    sl_error_clear();
    sl_tensor *i = sl_zeros(SL_I32, sl_shape(2));
    ck_assert_ptr_null(sl_exp(i));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    /* A NULL from a failed call propagates without replacing the first message. */
    ck_assert_ptr_null(sl_exp(sl_add(a, b)));
    ck_assert_str_eq(sl_error_message(), "sl_add: shapes do not broadcast: [2,3] vs [4]");
    sl_error_clear();
    ck_assert_ptr_null(sl_neg(NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_ptr_null(sl_gelu(a, (sl_gelu_approx)7));
}
END_TEST

/* ---------------------------------------------------------------- gradchecks, one per op */

/* f64 gradcheck of a one-input fn at x and at a non-contiguous view of x; f32 against f64. */
static void check_unary(sl_gradcheck_fn fn, void *user, sl_tensor *x)
{
    tu_gradcheck(fn, 1, &x, user);
    sl_tensor *v = tu_noncontig(x);
    tu_gradcheck(fn, 1, &v, user);
    tu_f32_matches_f64(fn, 1, &x, user);
}

/* An op defined on every real, at normal(0, 1) inputs. */
static void check_unary_randn(unary_fn fn, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    check_unary(call_unary, (void *)fn, tu_randn(&r, SL_F64, sl_shape(3, 4)));
}

START_TEST(gradcheck_neg) { check_unary_randn(sl_neg, 11); }
END_TEST
START_TEST(gradcheck_exp) { check_unary_randn(sl_exp, 12); }
END_TEST
START_TEST(gradcheck_tanh) { check_unary_randn(sl_tanh, 13); }
END_TEST
START_TEST(gradcheck_sigmoid) { check_unary_randn(sl_sigmoid, 14); }
END_TEST

START_TEST(gradcheck_relu)
{
    sl_rng r = sl_rng_seed(15);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4));
    for (int i = 0; i < 12; i++) /* keep away from the kink at 0 */
        sl_set(x, i, sl_get(x, i) + (sl_get(x, i) > 0 ? 0.1 : -0.1));
    check_unary(call_unary, (void *)sl_relu, x);
}
END_TEST

/* log and sqrt at positive inputs. */
START_TEST(gradcheck_log)
{
    sl_rng r = sl_rng_seed(16);
    check_unary(call_unary, (void *)sl_log, positive(&r, sl_shape(2, 5)));
}
END_TEST

START_TEST(gradcheck_sqrt)
{
    sl_rng r = sl_rng_seed(17);
    check_unary(call_unary, (void *)sl_sqrt, positive(&r, sl_shape(2, 5)));
}
END_TEST

/* gelu at positive inputs, then on both signs. */
static void check_gelu(sl_gradcheck_fn fn, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    check_unary(fn, NULL, positive(&r, sl_shape(7)));
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(9));
    tu_gradcheck(fn, 1, &x, NULL);
}

START_TEST(gradcheck_gelu_erf) { check_gelu(call_gelu_erf, 18); }
END_TEST
START_TEST(gradcheck_gelu_tanh) { check_gelu(call_gelu_tanh, 19); }
END_TEST

/* pow_scalar (exponent 2.5) at positive inputs; the scalar shifts and scales there too. */
static void check_scalar_op(sl_gradcheck_fn fn, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    check_unary(fn, NULL, positive(&r, sl_shape(7)));
}

START_TEST(gradcheck_pow_scalar) { check_scalar_op(call_pow, 20); }
END_TEST
START_TEST(gradcheck_add_scalar) { check_scalar_op(call_adds, 21); }
END_TEST
START_TEST(gradcheck_mul_scalar) { check_scalar_op(call_muls, 22); }
END_TEST

/* A binary op: broadcasting [2,3,4] with [3,1] (over dims 0 and 2), f32 against f64, on
 * non-contiguous views, same shapes (the flat parallel path), and one tensor on both sides. */
static void check_binary(binary_fn fn, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *b = positive(&r, sl_shape(3, 1));
    sl_tensor *in[] = {a, b};
    tu_gradcheck(call_binary, 2, in, (void *)fn);
    tu_f32_matches_f64(call_binary, 2, in, (void *)fn);
    sl_tensor *vin[] = {tu_noncontig(a), tu_noncontig(b)};
    tu_gradcheck(call_binary, 2, vin, (void *)fn);
    sl_tensor *c = positive(&r, sl_shape(2, 3, 4));
    sl_tensor *in2[] = {a, c};
    tu_gradcheck(call_binary, 2, in2, (void *)fn);
    sl_tensor *in3[] = {c, c};
    tu_gradcheck(call_binary, 2, in3, (void *)fn);
}

START_TEST(gradcheck_add) { check_binary(sl_add, 31); }
END_TEST
START_TEST(gradcheck_sub) { check_binary(sl_sub, 32); }
END_TEST
START_TEST(gradcheck_mul) { check_binary(sl_mul, 33); }
END_TEST
START_TEST(gradcheck_div) { check_binary(sl_div, 34); }
END_TEST

/* f64 -> f32 -> f64 round trip, so float32 tolerances; also from a non-contiguous view. */
START_TEST(gradcheck_to_dtype)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(5));
    sl_tensor *v = tu_noncontig(x);
    sl_gradcheck_opts o = {.eps = 1e-3, .atol = 1e-4, .rtol = 1e-3, .seed = 1};
    sl_gradcheck_result res;
    ck_assert_msg(sl_gradcheck(call_to32, 1, &x, NULL, &o, &res), "%s", res.message);
    ck_assert_msg(sl_gradcheck(call_to32, 1, &v, NULL, &o, &res), "%s", res.message);
}
END_TEST

START_TEST(large_parallel_matches_serial)
{
    /* Big enough for several parallel chunks: compare with a scalar loop. */
    sl_rng r = sl_rng_seed(4);
    sl_tensor *a = sl_rand_normal(&r, SL_F32, sl_shape(300000), 0, 1);
    sl_tensor *b = sl_rand_normal(&r, SL_F32, sl_shape(300000), 0, 1);
    sl_tensor *y = sl_mul(sl_tanh(a), b);
    const float *pa = a->data, *pb = b->data, *py = y->data;
    for (int64_t i = 0; i < 300000; i++) ck_assert_float_eq(py[i], tanhf(pa[i]) * pb[i]);
}
END_TEST

/* Long runs go through the kernels' vector loops (16 elements at a time, then a tail), short
 * runs and broadcast operands through their own loops: every element must get what a scalar
 * loop gives. Checked in both dtypes against loops here, exactly where the kernel's formula
 * has a single rounding per step (seeded output gradients, zero input gradients), within a few
 * ulp where a multiply-add may be fused (tanh', sigmoid'). */
static double at(const sl_tensor *t, int64_t i) { return sl_get(t, i); }

/* v rounded to dt. */
static double in_dtype(sl_dtype dt, double v) { return dt == SL_F32 ? (double)(float)v : v; }

START_TEST(long_runs_match_scalar_loops)
{
    enum { R = 5, C = 37, N = 1037 };
    for (int k = 0; k < 2; k++) {
        sl_dtype dt = k ? SL_F64 : SL_F32;
        sl_rng r = sl_rng_seed(40 + k);
        sl_tensor *a = tu_randn(&r, dt, sl_shape(R, C));
        sl_tensor *b = sl_requires_grad(sl_rand_uniform(&r, dt, sl_shape(R, C), 0.5, 2), true);
        sl_tensor *col = sl_requires_grad(sl_rand_uniform(&r, dt, sl_shape(R, 1), 0.5, 2), true);
        sl_tensor *g = sl_rand_normal(&r, dt, sl_shape(R, C), 0, 1);
        binary_fn fns[4] = {sl_add, sl_sub, sl_mul, sl_div};
        for (int op = 0; op < 4; op++) {
            /* flat: values, and both gradients through the flat backward */
            sl_zero_grad(a);
            sl_zero_grad(b);
            sl_tensor *y = fns[op](a, b);
            ck_assert_msg(y && sl_backward_ex(y, g, 0), "%s", sl_error_message());
            for (int64_t i = 0; i < R * C; i++) {
                double x = at(a, i), z = at(b, i), gi = at(g, i);
                double want = op == 0 ? x + z : op == 1 ? x - z : op == 2 ? x * z : x / z;
                double ga = op < 2 ? gi : op == 2 ? gi * z : gi / z;
                double gb = op == 0 ? gi : op == 1 ? -gi : op == 2 ? gi * x : -(gi * x / (z * z));
                if (dt == SL_F32) { /* the same steps in float */
                    float xf = (float)x, zf = (float)z, gf = (float)gi;
                    want = op == 0 ? xf + zf : op == 1 ? xf - zf : op == 2 ? xf * zf : xf / zf;
                    ga = op < 2 ? gf : op == 2 ? gf * zf : gf / zf;
                    gb = op == 0 ? gf : op == 1 ? -gf : op == 2 ? gf * xf : -(gf * xf / (zf * zf));
                }
                ck_assert_msg(at(y, i) == want && at(a->grad, i) == ga && at(b->grad, i) == gb,
                              "op %d %s element %lld", op, sl_dtype_name(dt), (long long)i);
            }
            /* a broadcast operand on either side: runs with stride 0 */
            sl_tensor *y1 = fns[op](a, col), *y2 = fns[op](col, a);
            ck_assert(y1 && y2);
            for (int64_t i = 0; i < R * C; i++) {
                double x = in_dtype(dt, at(a, i)), c = in_dtype(dt, at(col, i / C));
                double w1 = op == 0 ? x + c : op == 1 ? x - c : op == 2 ? x * c : x / c;
                double w2 = op == 0 ? c + x : op == 1 ? c - x : op == 2 ? c * x : c / x;
                ck_assert_msg(at(y1, i) == in_dtype(dt, w1) && at(y2, i) == in_dtype(dt, w2),
                              "op %d %s broadcast element %lld", op, sl_dtype_name(dt),
                              (long long)i);
            }
        }
        /* unary ops, forward and backward from a seeded gradient */
        sl_tensor *x = tu_randn(&r, dt, sl_shape(N));
        sl_tensor *gu = sl_rand_normal(&r, dt, sl_shape(N), 0, 1);
        sl_tensor *xp = sl_requires_grad(sl_rand_uniform(&r, dt, sl_shape(N), 0.5, 2), true);
        for (int u = 0; u < 8; u++) {
            sl_tensor *in = u == 5 ? xp : x; /* sqrt: positive */
            sl_zero_grad(in);
            sl_tensor *y = u == 0   ? sl_neg(x)
                           : u == 1 ? sl_add_scalar(x, 0.75)
                           : u == 2 ? sl_mul_scalar(x, -1.25)
                           : u == 3 ? sl_relu(x)
                           : u == 4 ? sl_exp(x)
                           : u == 5 ? sl_sqrt(xp)
                           : u == 6 ? sl_tanh(x)
                                    : sl_sigmoid(x);
            ck_assert_msg(y && sl_backward_ex(y, gu, 0), "%s", sl_error_message());
            for (int64_t i = 0; i < N; i++) {
                double v = at(in, i), gi = at(gu, i), yi = at(y, i), want = 0, gw = 0;
                switch (u) {
                case 0: want = -v, gw = -gi; break;
                case 1: want = in_dtype(dt, v + 0.75), gw = gi; break;
                case 2: want = in_dtype(dt, v * -1.25), gw = in_dtype(dt, gi * -1.25); break;
                case 3: want = v > 0 ? v : 0, gw = v > 0 ? gi : 0; break;
                case 4: want = yi, gw = in_dtype(dt, gi * yi); break;
                case 5: /* g * 0.5 is exact: one rounding, in the division */
                    want = in_dtype(dt, sqrt(v)), gw = in_dtype(dt, gi * 0.5 / yi);
                    break;
                case 6: want = yi, gw = gi * (1 - yi * yi); break;
                case 7: want = yi, gw = gi * yi * (1 - yi); break;
                }
                double tol = u >= 6 ? (dt == SL_F32 ? 1e-6 : 1e-15) * (1 + fabs(gi)) : 0;
                ck_assert_msg(yi == want && fabs(at(in->grad, i) - gw) <= tol,
                              "unary %d %s element %lld: %.17g, want %.17g", u, sl_dtype_name(dt),
                              (long long)i, at(in->grad, i), gw);
            }
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("elementwise");
    TCase *tc = tcase_create("elementwise");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, unary_values);
    tu_add_test(s, tc, binary_broadcast_values);
    tu_add_test(s, tc, binary_errors_name_op_and_shapes);
    tu_add_test(s, tc, gradcheck_neg);
    tu_add_test(s, tc, gradcheck_exp);
    tu_add_test(s, tc, gradcheck_tanh);
    tu_add_test(s, tc, gradcheck_sigmoid);
    tu_add_test(s, tc, gradcheck_relu);
    tu_add_test(s, tc, gradcheck_log);
    tu_add_test(s, tc, gradcheck_sqrt);
    tu_add_test(s, tc, gradcheck_gelu_erf);
    tu_add_test(s, tc, gradcheck_gelu_tanh);
    tu_add_test(s, tc, gradcheck_pow_scalar);
    tu_add_test(s, tc, gradcheck_add_scalar);
    tu_add_test(s, tc, gradcheck_mul_scalar);
    tu_add_test(s, tc, gradcheck_add);
    tu_add_test(s, tc, gradcheck_sub);
    tu_add_test(s, tc, gradcheck_mul);
    tu_add_test(s, tc, gradcheck_div);
    tu_add_test(s, tc, gradcheck_to_dtype);
    tu_add_test(s, tc, large_parallel_matches_serial);
    tu_add_test(s, tc, long_runs_match_scalar_loops);
    tu_every_isa();
    return tu_run(s);
}
