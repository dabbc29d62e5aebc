/* Reductions: values against naive loops over every axis subset, keepdim shapes, negative
 * axes, max and min ties, errors, views, float64 gradchecks and f32 vs f64; argmax and argmin
 * (ties, NaN, no gradient, threads). */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

typedef enum { OP_SUM, OP_MEAN, OP_VAR, OP_MAX, OP_MIN } op_kind;

typedef struct {
    op_kind op;
    int n_axes;
    int axes[SL_MAX_DIMS];
    bool keepdim;
    int correction;
} spec;

static sl_tensor *run(const spec *s, sl_tensor *x)
{
    switch (s->op) {
    case OP_SUM: return sl_sum(x, s->n_axes, s->axes, s->keepdim);
    case OP_MEAN: return sl_mean(x, s->n_axes, s->axes, s->keepdim);
    case OP_VAR: return sl_var(x, s->n_axes, s->axes, s->keepdim, s->correction);
    case OP_MAX: return sl_max(x, s->n_axes, s->axes, s->keepdim);
    case OP_MIN: return sl_min(x, s->n_axes, s->axes, s->keepdim);
    }
    return NULL;
}

static sl_tensor *call_spec(sl_tensor *const *in, int n, void *user) { return run(user, in[0]); }

/* Which dims of an ndim tensor the spec reduces. */
static void spec_mask(const spec *s, int ndim, bool *red)
{
    for (int d = 0; d < ndim; d++) red[d] = s->n_axes == 0;
    for (int k = 0; k < s->n_axes; k++) red[(s->axes[k] + ndim) % ndim] = true;
}

/* The reference, with loops over the input in row-major order: out[o] for each output element
 * (row-major over the kept dims), and for max (min) the input flat index of the first maximum
 * (minimum). */
static void naive(const sl_tensor *x, const spec *s, double *out, int64_t *arg)
{
    bool red[SL_MAX_DIMS];
    spec_mask(s, x->ndim, red);
    int64_t n = sl_numel(x), n_out = 1, group = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (red[d]) group *= x->shape[d];
        else n_out *= x->shape[d];
    }
    double *sum = calloc((size_t)n_out, sizeof(double));
    int64_t *oi = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        int64_t rest = i, o = 0, scale = 1;
        for (int d = x->ndim - 1; d >= 0; d--) {
            int64_t idx = rest % x->shape[d];
            rest /= x->shape[d];
            if (!red[d]) {
                o += idx * scale;
                scale *= x->shape[d];
            }
        }
        oi[i] = o;
    }
    for (int64_t o = 0; o < n_out; o++) arg[o] = -1;
    for (int64_t i = 0; i < n; i++) {
        double v = sl_get(x, i);
        sum[oi[i]] += v;
        double best = arg[oi[i]] < 0 ? NAN : sl_get(x, arg[oi[i]]);
        if (arg[oi[i]] < 0 || (s->op == OP_MIN ? v < best : v > best)) arg[oi[i]] = i;
    }
    for (int64_t o = 0; o < n_out; o++) {
        switch (s->op) {
        case OP_SUM: out[o] = sum[o]; break;
        case OP_MEAN: out[o] = sum[o] / (double)group; break;
        case OP_MAX:
        case OP_MIN: out[o] = sl_get(x, arg[o]); break;
        case OP_VAR: {
            double m = sum[o] / (double)group, sq = 0;
            for (int64_t i = 0; i < n; i++)
                if (oi[i] == o) sq += (sl_get(x, i) - m) * (sl_get(x, i) - m);
            out[o] = sq / (double)(group - s->correction);
            break;
        }
        }
    }
    free(sum);
    free(oi);
}

/* Checks run(s, x) against the naive loops: shape and values. */
static void check_against_naive(const spec *s, sl_tensor *x)
{
    sl_tensor *y = run(s, x);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    bool red[SL_MAX_DIMS];
    spec_mask(s, x->ndim, red);
    int nd = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (red[d] && !s->keepdim) continue;
        ck_assert_int_lt(nd, y->ndim);
        ck_assert_int_eq(y->shape[nd], red[d] ? 1 : x->shape[d]);
        nd++;
    }
    ck_assert_int_eq(y->ndim, nd);
    double want[64];
    int64_t arg[64];
    ck_assert_int_le(sl_numel(y), 64);
    naive(x, s, want, arg);
    for (int64_t o = 0; o < sl_numel(y); o++)
        ck_assert_close(sl_get(y, o), want[o], 1e-13, 1e-14);
}

/* Every subset of the axes of a [2,3,4] input (negative spellings for some), both keepdims,
 * every op, on contiguous, strided and permuted inputs. */
START_TEST(values_match_naive_loops)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    spec ops[] = {{.op = OP_SUM},
                  {.op = OP_MEAN},
                  {.op = OP_VAR, .correction = 0},
                  {.op = OP_VAR, .correction = 1},
                  {.op = OP_MAX},
                  {.op = OP_MIN}};
    for (int v = 0; v < 3; v++)
        for (int k = 0; k < 6; k++)
            for (int mask = 0; mask < 8; mask++)
                for (int keep = 0; keep < 2; keep++) {
                    spec s = ops[k];
                    s.keepdim = keep;
                    for (int d = 0; d < 3; d++)
                        if (mask >> d & 1) s.axes[s.n_axes++] = (mask + d) % 2 ? d - 3 : d;
                    check_against_naive(&s, views[v]);
                }
}
END_TEST

START_TEST(keepdim_shapes_and_all_axes)
{
    sl_tensor *x = sl_ones(SL_F64, sl_shape(2, 3, 4));
    sl_tensor *a = sl_sum(x, 1, (int[]){1}, true), *b = sl_sum(x, 1, (int[]){1}, false);
    ck_assert_str_eq(sl_shape_str(a), "[2,1,4]");
    ck_assert_str_eq(sl_shape_str(b), "[2,4]");
    sl_tensor *c = sl_mean(x, 0, NULL, false), *d = sl_max(x, 0, NULL, true);
    ck_assert_int_eq(c->ndim, 0);
    ck_assert_str_eq(sl_shape_str(d), "[1,1,1]");
    sl_tensor *e = sl_sum(x, 3, (int[]){2, 0, 1}, false);
    ck_assert_int_eq(e->ndim, 0);
    ck_assert_close(sl_item(e), 24, 0, 0);
    ck_assert_close(sl_item(sl_sum_all(x)), 24, 0, 0);
    ck_assert_close(sl_item(sl_mean_all(x)), 1, 0, 0);
    ck_assert_int_eq(sl_sum_all(x)->ndim, 0);
    /* A 0-d input reduces to itself. */
    sl_tensor *s = sl_scalar(SL_F32, 2.5);
    ck_assert_close(sl_item(sl_sum_all(s)), 2.5, 0, 0);
    ck_assert_close(sl_item(sl_var(s, 0, NULL, false, 0)), 0, 0, 0);
}
END_TEST

START_TEST(negative_axes_and_order_do_not_matter)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4, 5));
    sl_tensor *a = sl_var(x, 2, (int[]){0, 2}, false, 1);
    sl_tensor *b = sl_var(x, 2, (int[]){-1, -3}, false, 1);
    sl_tensor *c = sl_var(x, 2, (int[]){2, 0}, false, 1);
    ck_assert_str_eq(sl_shape_str(a), "[4]");
    ck_assert_double_eq(tu_max_abs_diff(a, b), 0);
    ck_assert_double_eq(tu_max_abs_diff(a, c), 0);
}
END_TEST

START_TEST(known_values)
{
    double v[] = {1, 2, 3, 4, 5, 6}; /* [[1,2,3],[4,5,6]] */
    sl_tensor *x = sl_from_data(SL_F64, sl_shape(2, 3), v);
    sl_tensor *s0 = sl_sum(x, 1, (int[]){0}, false), *m1 = sl_mean(x, 1, (int[]){-1}, false);
    double want_s0[] = {5, 7, 9}, want_m1[] = {2, 5};
    for (int i = 0; i < 3; i++) ck_assert_close(sl_get(s0, i), want_s0[i], 0, 0);
    for (int i = 0; i < 2; i++) ck_assert_close(sl_get(m1, i), want_m1[i], 0, 0);
    /* var of 1..6: mean 3.5, sum of squares 17.5 */
    ck_assert_close(sl_item(sl_var(x, 0, NULL, false, 0)), 17.5 / 6, 1e-15, 0);
    ck_assert_close(sl_item(sl_var(x, 0, NULL, false, 1)), 17.5 / 5, 1e-15, 0);
    ck_assert_close(sl_get(sl_var(x, 1, (int[]){1}, false, 1), 1), 1.0, 1e-15, 0);
    ck_assert_close(sl_item(sl_max(x, 0, NULL, false)), 6, 0, 0);
    ck_assert_close(sl_item(sl_min(x, 0, NULL, false)), 1, 0, 0);
    double want_min0[] = {1, 2, 3};
    sl_tensor *mn0 = sl_min(x, 1, (int[]){0}, false);
    for (int i = 0; i < 3; i++) ck_assert_close(sl_get(mn0, i), want_min0[i], 0, 0);
    /* A NaN is the maximum and the minimum. */
    sl_tensor *n = sl_from_data(SL_F32, sl_shape(3), (float[]){1, NAN, 3});
    ck_assert(isnan(sl_item(sl_max(n, 0, NULL, false))));
    ck_assert(isnan(sl_item(sl_min(n, 0, NULL, false))));
}
END_TEST

START_TEST(f32_sums_accumulate_in_double)
{
    /* In float, 2^24 + 1 rounds back to 2^24 every time; in double the sum is 2^24 + 4. */
    float v[] = {16777216.0f, 1, 1, 1, 1};
    sl_tensor *x = sl_from_data(SL_F32, sl_shape(5), v);
    ck_assert_double_eq(sl_item(sl_sum_all(x)), 16777220.0);
    ck_assert_double_eq(sl_item(sl_mean_all(x)), (double)(float)(16777220.0 / 5));
    /* var of values far from 0: two passes in double keep it exact. */
    float w[] = {10000.5f, 10001.5f, 10002.5f};
    sl_tensor *z = sl_from_data(SL_F32, sl_shape(3), w);
    ck_assert_double_eq(sl_item(sl_var(z, 0, NULL, false, 1)), 1.0);
}
END_TEST

/* The gradient of max goes to the first position of the maximum in each group, in the
 * group's row-major order, whatever the input's strides. */
START_TEST(max_ties_send_gradient_to_the_first)
{
    double v[] = {1, 3, 3, 2, 2, 1}; /* [[1,3,3],[2,2,1]] */
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(2, 3), v), true);
    sl_tensor *y = sl_max(x, 1, (int[]){1}, false);
    ck_assert(sl_backward_ex(y, sl_ones(SL_F64, sl_shape(2)), 0));
    double want[] = {0, 1, 0, 1, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(x->grad, i), want[i], 0, 0);
    sl_zero_grad(x);
    /* Along axis 0: column 1 ties 3 vs 2, no; column 0: 1 vs 2 -> row 1. */
    ck_assert(sl_backward_ex(sl_max(x, 1, (int[]){0}, true), sl_ones(SL_F64, sl_shape(1, 3)), 0));
    double want0[] = {0, 1, 1, 1, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(x->grad, i), want0[i], 0, 0);
    sl_zero_grad(x);
    ck_assert(sl_backward(sl_max(x, 0, NULL, false)));
    double want_all[] = {0, 1, 0, 0, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(x->grad, i), want_all[i], 0, 0);

    /* [2,3,2] over axes {0, 2}: group k is (0,k,0), (0,k,1), (1,k,0), (1,k,1). Ties everywhere,
     * on a permuted input (dim 0 innermost in memory). */
    double t[12] = {5, 5, 0, 0, 1, 2, /**/ 5, 5, 0, 0, 2, 2};
    sl_tensor *c = sl_from_data(SL_F64, sl_shape(2, 3, 2), t);
    sl_tensor *p = tu_permuted_leaf(c);
    sl_tensor *m = sl_max(p, 2, (int[]){2, 0}, false);
    ck_assert_str_eq(sl_shape_str(m), "[3]");
    double wm[] = {5, 0, 2};
    for (int i = 0; i < 3; i++) ck_assert_close(sl_get(m, i), wm[i], 0, 0);
    sl_tensor *g = sl_from_data(SL_F64, sl_shape(3), (double[]){10, 20, 30});
    ck_assert(sl_backward_ex(m, g, 0));
    double wg[12] = {10, 0, 20, 0, 0, 30, /**/ 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 12; i++) ck_assert_close(sl_get(p->grad, i), wg[i], 0, 0);
}
END_TEST

/* sl_min shares sl_max's path: the gradient goes to the first minimum of each group. */
START_TEST(min_ties_send_gradient_to_the_first)
{
    double v[] = {3, 1, 1, 2, 2, 5}; /* [[3,1,1],[2,2,5]] */
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(2, 3), v), true);
    sl_tensor *g = sl_from_data(SL_F64, sl_shape(2), (double[]){10, 20});
    ck_assert(sl_backward_ex(sl_min(x, 1, (int[]){-1}, false), g, 0));
    double want[] = {0, 10, 0, 20, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(x->grad, i), want[i], 0, 0);
    sl_zero_grad(x);
    /* Along axis 0 on a permuted view: column 1 is 1 vs 2, column 2 is 1 vs 5. */
    sl_tensor *p = tu_permuted_leaf(sl_from_data(SL_F64, sl_shape(2, 3), v));
    sl_tensor *m = sl_min(p, 1, (int[]){0}, true);
    ck_assert_str_eq(sl_shape_str(m), "[1,3]");
    ck_assert(sl_backward_ex(m, sl_ones(SL_F64, sl_shape(1, 3)), 0));
    double want0[] = {0, 1, 1, 1, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_close(sl_get(p->grad, i), want0[i], 0, 0);
    /* A NaN is the minimum: its gradient goes to the first NaN. */
    sl_tensor *n =
        sl_requires_grad(sl_from_data(SL_F64, sl_shape(4), (double[]){1, NAN, -5, NAN}), true);
    ck_assert(sl_backward(sl_min(n, 0, NULL, false)));
    double wn[] = {0, 1, 0, 0};
    for (int i = 0; i < 4; i++) ck_assert_close(sl_get(n->grad, i), wn[i], 0, 0);
}
END_TEST

START_TEST(backward_accumulates)
{
    /* loss = sum(x) + 3 * mean(x) + max(x): each op adds its share to the one gradient. */
    double v[] = {1, 4, 2, 3};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(4), v), true);
    sl_tensor *loss = sl_add(sl_add(sl_sum_all(x), sl_mul_scalar(sl_mean_all(x), 3)),
                             sl_max(x, 1, (int[]){0}, false));
    ck_assert(sl_backward(loss));
    double want[] = {1.75, 2.75, 1.75, 1.75};
    for (int i = 0; i < 4; i++) ck_assert_close(sl_get(x->grad, i), want[i], 1e-15, 0);
    /* var: d/dx_i = 2 (x_i - mean) / (N - 1) */
    sl_zero_grad(x);
    ck_assert(sl_backward(sl_var(x, 0, NULL, false, 1)));
    for (int i = 0; i < 4; i++) ck_assert_close(sl_get(x->grad, i), 2 * (v[i] - 2.5) / 3, 1e-15, 0);
}
END_TEST

START_TEST(errors_name_op_axis_and_shape)
{
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(2, 3));
    ck_assert_ptr_null(sl_sum(x, 1, (int[]){2}, false));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_sum: axis 2 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_max(x, 1, (int[]){-3}, false));
    ck_assert_str_eq(sl_error_message(), "sl_max: axis -3 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_mean(x, 2, (int[]){1, -1}, true));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_mean: axis -1 repeated for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_var(x, 1, (int[]){0}, false, 2));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(),
                     "sl_var: N - correction = 2 - 2 <= 0: too few elements per group for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_var(sl_zeros(SL_F32, sl_shape(3, 1)), 1, (int[]){1}, true, 1));
    ck_assert_str_eq(sl_error_message(),
                     "sl_var: N - correction = 1 - 1 <= 0: too few elements per group for [3,1]");
    sl_error_clear();
    ck_assert_ptr_null(sl_sum(x, -1, (int[]){0}, false));
    ck_assert_str_eq(sl_error_message(), "sl_sum: n_axes -1 is negative for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_sum(x, 2, NULL, false));
    ck_assert_str_eq(sl_error_message(), "sl_sum: axes is NULL with n_axes 2 for [2,3]");
    sl_error_clear();
    sl_tensor *i = sl_zeros(SL_I32, sl_shape(2));
    ck_assert_ptr_null(sl_max(i, 0, NULL, false));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    ck_assert_str_eq(sl_error_message(), "sl_max: expected f32 or f64, got i32 [2]");
    /* A NULL from a failed call propagates without replacing the first message. */
    ck_assert_ptr_null(sl_sum_all(sl_max(i, 0, NULL, false)));
    ck_assert_str_eq(sl_error_message(), "sl_max: expected f32 or f64, got i32 [2]");
    sl_error_clear();
    ck_assert_ptr_null(sl_mean_all(NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_mean: argument 'a' is NULL");
    sl_error_clear();
    /* Empty groups: a sum is 0, a mean NaN, a max an error. */
    sl_tensor *e = sl_zeros(SL_F64, sl_shape(2, 0));
    sl_tensor *se = sl_sum(e, 1, (int[]){1}, false);
    ck_assert_str_eq(sl_shape_str(se), "[2]");
    ck_assert_double_eq(sl_get(se, 1), 0);
    ck_assert(isnan(sl_get(sl_mean(e, 1, (int[]){1}, false), 0)));
    ck_assert_ptr_null(sl_max(e, 1, (int[]){-1}, false));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_max: the reduced axes of [2,0] are empty");
    sl_error_clear();
    ck_assert_ptr_null(sl_min(e, 1, (int[]){1}, false));
    ck_assert_str_eq(sl_error_message(), "sl_min: the reduced axes of [2,0] are empty");
    sl_error_clear();
    /* ...but an empty output is fine. */
    sl_tensor *me = sl_max(e, 1, (int[]){0}, false);
    ck_assert_str_eq(sl_shape_str(me), "[0]");
}
END_TEST

/* ---------------------------------------------------------------- gradchecks, one per op */

/* f64 gradcheck of one op (with the given correction, for var) over several axis choices, on
 * contiguous, strided and permuted inputs, and f32 against f64. */
static void check_op(op_kind op, int correction)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    spec axes[] = {{.n_axes = 1, .axes = {0}},          {.n_axes = 1, .axes = {1}, .keepdim = 1},
                   {.n_axes = 1, .axes = {-1}},         {.n_axes = 2, .axes = {0, 2}},
                   {.n_axes = 2, .axes = {-1, 1}, .keepdim = 1}, {.n_axes = 0}};
    for (size_t a = 0; a < sizeof axes / sizeof *axes; a++) {
        spec s = axes[a];
        s.op = op;
        s.correction = correction;
        for (int v = 0; v < 3; v++) tu_gradcheck(call_spec, 1, &views[v], &s);
        tu_f32_matches_f64(call_spec, 1, &x, &s);
    }
}

START_TEST(gradcheck_sum) { check_op(OP_SUM, 0); }
END_TEST
START_TEST(gradcheck_mean) { check_op(OP_MEAN, 0); }
END_TEST
START_TEST(gradcheck_max) { check_op(OP_MAX, 0); }
END_TEST
START_TEST(gradcheck_min) { check_op(OP_MIN, 0); }
END_TEST

START_TEST(gradcheck_var)
{
    check_op(OP_VAR, 0);
    check_op(OP_VAR, 1);
}
END_TEST

/* The all-element shorthands, on the same inputs. */
static sl_tensor *call_sum_all(sl_tensor *const *in, int n, void *u) { return sl_sum_all(in[0]); }
static sl_tensor *call_mean_all(sl_tensor *const *in, int n, void *u) { return sl_mean_all(in[0]); }

static void check_all(sl_gradcheck_fn fn)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x)};
    for (int v = 0; v < 3; v++) tu_gradcheck(fn, 1, &views[v], NULL);
    tu_f32_matches_f64(fn, 1, &x, NULL);
}

START_TEST(gradcheck_sum_all) { check_all(call_sum_all); }
END_TEST
START_TEST(gradcheck_mean_all) { check_all(call_mean_all); }
END_TEST

START_TEST(large_parallel_and_copy_paths)
{
    /* Enough rows for several parallel chunks; axis 1 reads in place, axis 0 permutes. */
    sl_rng r = sl_rng_seed(4);
    enum { R = 3000, C = 200 };
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(R, C), 0, 1);
    const float *px = x->data;
    sl_tensor *s1 = sl_sum(x, 1, (int[]){1}, false), *m1 = sl_max(x, 1, (int[]){1}, false);
    for (int i = 0; i < R; i++) {
        double s = 0, a = 0;
        float m = px[i * C];
        for (int j = 0; j < C; j++) {
            s += px[i * C + j];
            a += fabs(px[i * C + j]);
            if (px[i * C + j] > m) m = px[i * C + j];
        }
        ck_assert_close(((float *)s1->data)[i], s, 0, 1e-6 * (1 + a));
        ck_assert_float_eq(((float *)m1->data)[i], m);
    }
    sl_tensor *s0 = sl_mean(x, 1, (int[]){0}, false);
    for (int j = 0; j < C; j++) {
        double s = 0, a = 0;
        for (int i = 0; i < R; i++) {
            s += px[i * C + j];
            a += fabs(px[i * C + j]);
        }
        ck_assert_close(((float *)s0->data)[j], s / R, 0, 1e-6 * (1 + a / R));
    }
}
END_TEST

START_TEST(trailing_axis_reduction_does_not_copy)
{
    sl_set_grad_enabled(false);
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(512, 256)); /* 1 MiB */
    sl_arena *arena = sl_arena_current();
    size_t before = sl_arena_used(arena);
    sl_tensor *y = sl_sum(x, 1, (int[]){-1}, true);
    ck_assert_ptr_nonnull(y);
    ck_assert_uint_lt(sl_arena_used(arena) - before, 64 * 1024);
}
END_TEST

/* ---------------------------------------------------------------- argmax, argmin */

/* The first index along `axis` of the extreme of each row of x, naive: a NaN is the extreme. */
static void naive_arg(const sl_tensor *x, int axis, bool min, int32_t *out)
{
    int d = axis < 0 ? axis + x->ndim : axis;
    int64_t n = x->shape[d], inner = 1, outer = 1;
    for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
    for (int k = 0; k < d; k++) outer *= x->shape[k];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t q = 0; q < inner; q++) {
            int32_t best = 0;
            double bv = sl_get(x, o * n * inner + q);
            for (int64_t i = 1; i < n && !isnan(bv); i++) {
                double v = sl_get(x, (o * n + i) * inner + q);
                if (isnan(v) || (min ? v < bv : v > bv)) {
                    best = (int32_t)i;
                    bv = v;
                }
            }
            out[o * inner + q] = best;
        }
}

/* Every axis (negative spellings too), keepdim or not, f64 and f32, on contiguous, strided and
 * permuted inputs; values drawn from a few integers so that rows have ties. */
START_TEST(argmax_argmin_match_naive_loops)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *x = sl_empty(SL_F64, sl_shape(3, 4, 5));
    for (int64_t i = 0; i < 60; i++) sl_set(x, i, (double)sl_rng_below(&r, 4) - 1.5);
    sl_tensor *views[] = {x, tu_noncontig(x), tu_permuted_leaf(x), tu_cast_leaf(x, SL_F32)};
    for (int v = 0; v < 4; v++)
        for (int axis = -3; axis < 3; axis++)
            for (int keep = 0; keep < 2; keep++)
                for (int min = 0; min < 2; min++) {
                    sl_tensor *y =
                        min ? sl_argmin(views[v], axis, keep) : sl_argmax(views[v], axis, keep);
                    ck_assert_msg(y != NULL, "%s", sl_error_message());
                    ck_assert_int_eq(y->dtype, SL_I32);
                    int d = (axis + 3) % 3, nd = 0;
                    for (int k = 0; k < 3; k++) {
                        if (k == d && !keep) continue;
                        ck_assert_int_eq(y->shape[nd++], k == d ? 1 : x->shape[k]);
                    }
                    ck_assert_int_eq(y->ndim, nd);
                    int32_t want[20];
                    naive_arg(x, axis, min, want);
                    for (int64_t o = 0; o < sl_numel(y); o++)
                        ck_assert_int_eq((int32_t)sl_get(y, o), want[o]);
                }
    /* A 1-D input gives a 0-d index. */
    sl_tensor *a = sl_from_data(SL_F64, sl_shape(4), (double[]){2, -1, 7, 7});
    ck_assert_int_eq(sl_argmax(a, 0, false)->ndim, 0);
    ck_assert_int_eq((int)sl_item(sl_argmax(a, 0, false)), 2);
    ck_assert_int_eq((int)sl_item(sl_argmin(a, -1, true)), 1);
    /* The classic use: accuracy from logits and labels. */
    sl_tensor *logits = sl_from_data(SL_F32, sl_shape(3, 2), (float[]){0.1f, 0.9f, 2, 1, 3, 3});
    sl_tensor *labels = sl_from_data(SL_I32, sl_shape(3), (int32_t[]){1, 1, 0});
    sl_tensor *hit = sl_eq(sl_argmax(logits, -1, false), labels);
    ck_assert_int_eq((int)sl_get(hit, 0) + (int)sl_get(hit, 1) + (int)sl_get(hit, 2), 2);
}
END_TEST

START_TEST(argmax_argmin_ties_and_nan)
{
    /* Ties: the first index. */
    sl_tensor *t = sl_from_data(SL_F64, sl_shape(2, 4), (double[]){1, 5, 5, 0, -2, -2, 3, -2});
    sl_tensor *mx = sl_argmax(t, 1, false), *mn = sl_argmin(t, 1, false);
    ck_assert_int_eq((int)sl_get(mx, 0), 1);
    ck_assert_int_eq((int)sl_get(mx, 1), 2);
    ck_assert_int_eq((int)sl_get(mn, 0), 3);
    ck_assert_int_eq((int)sl_get(mn, 1), 0);
    /* A NaN is both the maximum and the minimum: the index of the first NaN, wherever the
     * larger or smaller numbers are; a row of NaNs gives 0. Infinities are ordinary values. */
    for (int f = 0; f < 2; f++) {
        double v[] = {1,        NAN,       9,        NAN, /**/ -INFINITY, 4, INFINITY, NAN,
                      /**/ NAN, NAN,       NAN,      NAN,
                      /**/ 3,   -INFINITY, INFINITY, 0};
        sl_tensor *x = sl_from_data(SL_F64, sl_shape(4, 4), v);
        if (f) x = tu_cast_leaf(x, SL_F32);
        sl_tensor *a = sl_argmax(x, -1, false), *b = sl_argmin(x, -1, false);
        int want_max[] = {1, 3, 0, 2}, want_min[] = {1, 3, 0, 1};
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq((int)sl_get(a, i), want_max[i]);
            ck_assert_int_eq((int)sl_get(b, i), want_min[i]);
        }
        /* sl_max / sl_min agree: NaN where argmax / argmin found one. */
        ck_assert(isnan(sl_get(sl_max(x, 1, (int[]){1}, false), 0)));
        ck_assert(isnan(sl_get(sl_min(x, 1, (int[]){1}, false), 1)));
        ck_assert_double_eq(sl_get(sl_min(x, 1, (int[]){1}, false), 3), -INFINITY);
    }
}
END_TEST

/* Indices have no gradient: no node even from an input that requires grad, and the output
 * cannot be made to require one. */
START_TEST(argmax_argmin_record_no_gradient)
{
    sl_rng r = sl_rng_seed(6);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4));
    sl_tensor *a = sl_argmax(x, 0, false), *b = sl_argmin(x, 1, true);
    ck_assert_ptr_null(a->node);
    ck_assert(!a->requires_grad);
    ck_assert_ptr_null(b->node);
    ck_assert(!b->requires_grad);
    ck_assert_ptr_null(sl_requires_grad(a, true));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert(!sl_backward_ex(sl_to_dtype(a, SL_F64), sl_ones(SL_F64, sl_shape(4)), 0));
    sl_error_clear();
}
END_TEST

START_TEST(argmax_argmin_errors)
{
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(2, 3));
    ck_assert_ptr_null(sl_argmax(x, 2, false));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_argmax: axis 2 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_argmin(x, -3, true));
    ck_assert_str_eq(sl_error_message(), "sl_argmin: axis -3 out of range for [2,3]");
    sl_error_clear();
    ck_assert_ptr_null(sl_argmax(sl_zeros(SL_I32, sl_shape(2)), 0, false));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    ck_assert_str_eq(sl_error_message(), "sl_argmax: expected f32 or f64, got i32 [2]");
    sl_error_clear();
    sl_tensor *e = sl_zeros(SL_F32, sl_shape(2, 0));
    ck_assert_ptr_null(sl_argmin(e, -1, false));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_argmin: axis -1 of [2,0] is empty");
    sl_error_clear();
    ck_assert_str_eq(sl_shape_str(sl_argmax(e, 0, false)), "[0]"); /* an empty output is fine */
    ck_assert_ptr_null(sl_argmax(sl_scalar(SL_F64, 1), 0, false));
    ck_assert_str_eq(sl_error_message(), "sl_argmax: axis 0 out of range for []");
    sl_error_clear();
    ck_assert_ptr_null(sl_argmax(NULL, 0, false));
    ck_assert_str_eq(sl_error_message(), "sl_argmax: argument 'a' is NULL");
    sl_error_clear();
    ck_assert_ptr_null(sl_argmin(SL_NONE, 0, false));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
}
END_TEST

/* Enough rows for several parallel chunks, on both reduction layouts (the axis innermost, read
 * in place, and outermost, copied): the same indices on 1 and 2 threads, and the naive ones. */
START_TEST(argmax_argmin_threads)
{
    enum { R = 3000, C = 100 };
    sl_rng r = sl_rng_seed(7);
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(R, C), 0, 1);
    int n0 = sl_get_num_threads();
    static int32_t got[2][4][R], want[R];
    for (int t = 0; t < 2; t++) {
        sl_set_num_threads(t + 1);
        sl_tensor *y[4] = {sl_argmax(x, 1, false), sl_argmin(x, 1, false), sl_argmax(x, 0, false),
                           sl_argmin(x, 0, false)};
        for (int k = 0; k < 4; k++) {
            ck_assert_ptr_nonnull(y[k]);
            memcpy(got[t][k], y[k]->data, sizeof(int32_t) * (size_t)sl_numel(y[k]));
        }
    }
    sl_set_num_threads(n0);
    ck_assert(!memcmp(got[0], got[1], sizeof got[0]));
    for (int k = 0; k < 4; k++) {
        naive_arg(x, k < 2 ? 1 : 0, k % 2, want);
        int bad = 0; /* (counted, then asserted once: an assertion per element would be slow) */
        for (int i = 0; i < (k < 2 ? R : C); i++) bad += got[0][k][i] != want[i];
        ck_assert_int_eq(bad, 0);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("reduce");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, values_match_naive_loops);
    tu_add_test(s, tc, keepdim_shapes_and_all_axes);
    tu_add_test(s, tc, negative_axes_and_order_do_not_matter);
    tu_add_test(s, tc, known_values);
    tu_add_test(s, tc, f32_sums_accumulate_in_double);
    tu_add_test(s, tc, max_ties_send_gradient_to_the_first);
    tu_add_test(s, tc, min_ties_send_gradient_to_the_first);
    tu_add_test(s, tc, backward_accumulates);
    tu_add_test(s, tc, errors_name_op_axis_and_shape);
    tu_add_test(s, tc, gradcheck_sum);
    tu_add_test(s, tc, gradcheck_mean);
    tu_add_test(s, tc, gradcheck_var);
    tu_add_test(s, tc, gradcheck_max);
    tu_add_test(s, tc, gradcheck_min);
    tu_add_test(s, tc, gradcheck_sum_all);
    tu_add_test(s, tc, gradcheck_mean_all);
    tu_add_test(s, tc, large_parallel_and_copy_paths);
    tu_add_test(s, tc, trailing_axis_reduction_does_not_copy);
    tu_add_test(s, tc, argmax_argmin_match_naive_loops);
    tu_add_test(s, tc, argmax_argmin_ties_and_nan);
    tu_add_test(s, tc, argmax_argmin_record_no_gradient);
    tu_add_test(s, tc, argmax_argmin_errors);
    tu_add_test(s, tc, argmax_argmin_threads);
    tu_every_isa();
    return tu_run(s);
}
