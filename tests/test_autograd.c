/* The autograd engine: accumulation, fan-in, grad mode, detach, graph consumption, custom ops,
 * and gradcheck's own ability to catch a wrong or non-deterministic backward. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

START_TEST(chain_rule_and_fan_in)
{
    /* y = sum(a * b + a * a) over 3 elements: dy/da = b + 2a, dy/db = a. */
    double av[] = {1, -2, 3}, bv[] = {4, 5, -6};
    sl_tensor *a = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), av), true);
    sl_tensor *b = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), bv), true);
    sl_tensor *y = sl_add(sl_mul(a, b), sl_mul(a, a));
    ck_assert(y->requires_grad);
    ck_assert_ptr_nonnull(y->node);
    ck_assert_str_eq(y->node->op, "sl_add");
    sl_tensor *ones = sl_ones(SL_F64, sl_shape(3));
    ck_assert(sl_backward_ex(y, ones, 0));
    for (int i = 0; i < 3; i++) {
        ck_assert(sl_get(a->grad, i) == bv[i] + 2 * av[i]);
        ck_assert(sl_get(b->grad, i) == av[i]);
    }
    /* A second forward + backward accumulates; zero_grad clears. */
    sl_tensor *y2 = sl_mul(a, b);
    ck_assert(sl_backward_ex(y2, ones, 0));
    for (int i = 0; i < 3; i++) ck_assert(sl_get(a->grad, i) == 2 * bv[i] + 2 * av[i]);
    sl_zero_grad(a);
    for (int i = 0; i < 3; i++) ck_assert(sl_get(a->grad, i) == 0);
}
END_TEST

START_TEST(scalar_loss_backward)
{
    sl_tensor *x = sl_requires_grad(sl_scalar(SL_F64, 3.0), true);
    sl_tensor *y = sl_mul(sl_exp(x), x); /* x e^x -> (1 + x) e^x */
    ck_assert(sl_backward(y));
    ck_assert_close(sl_item(x->grad), 4 * exp(3.0), 1e-15, 0);
    /* A leaf as the loss itself. */
    sl_tensor *z = sl_requires_grad(sl_scalar(SL_F32, 1.0), true);
    ck_assert(sl_backward(z));
    ck_assert(sl_item(z->grad) == 1.0);
}
END_TEST

START_TEST(backward_errors)
{
    sl_tensor *x = sl_requires_grad(sl_ones(SL_F64, sl_shape(2)), true);
    sl_tensor *y = sl_exp(x);
    ck_assert(!sl_backward(y));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_backward: output [2] has more than one element; "
                                         "pass its gradient to sl_backward_ex");
    sl_error_clear();
    ck_assert(!sl_backward_ex(y, sl_ones(SL_F64, sl_shape(3)), 0));
    ck_assert_str_eq(sl_error_message(), "sl_backward: gradient f64 [3] does not match output f64 [2]");
    sl_error_clear();
    sl_tensor *c = sl_ones(SL_F64, sl_shape(1));
    ck_assert(!sl_backward(sl_exp(c)));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    sl_error_clear();
    ck_assert_ptr_null(sl_requires_grad(y, true));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(), "sl_requires_grad: f64 [2] was made by sl_exp; only "
                                         "leaves take the flag (sl_detach first)");
    sl_error_clear();
    ck_assert_ptr_null(sl_requires_grad(sl_zeros(SL_I32, sl_shape(2)), true));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
}
END_TEST

START_TEST(graph_is_consumed_unless_retained)
{
    sl_tensor *x = sl_requires_grad(sl_full(SL_F64, sl_shape(1), 2.0), true);
    sl_tensor *y = sl_mul(x, x);
    sl_tensor *g = sl_ones(SL_F64, sl_shape(1));
    ck_assert(sl_backward_ex(y, g, SL_RETAIN_GRAPH));
    ck_assert(sl_backward_ex(y, g, 0)); /* legal: the first one retained */
    ck_assert(sl_get(x->grad, 0) == 8.0);
    ck_assert(!sl_backward_ex(y, g, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(),
                     "sl_backward: the graph through sl_mul was already consumed by an earlier "
                     "backward; pass SL_RETAIN_GRAPH to the first one to run backward twice");
    ck_assert(sl_get(x->grad, 0) == 8.0); /* untouched by the failed call */
}
END_TEST

START_TEST(no_grad_records_nothing_and_holds_no_memory)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(64));
    sl_arena *a = sl_arena_current();
    size_t before = sl_arena_used(a);
    sl_tensor *y = sl_tanh(sl_exp(x));
    size_t with_grad = sl_arena_used(a) - before;
    ck_assert(y->requires_grad);

    ck_assert(sl_set_grad_enabled(false));
    ck_assert(!sl_grad_enabled());
    before = sl_arena_used(a);
    sl_tensor *z = sl_tanh(sl_exp(x));
    size_t without = sl_arena_used(a) - before;
    ck_assert(sl_set_grad_enabled(true) == false);
    ck_assert(!z->requires_grad);
    ck_assert_ptr_null(z->node);
    ck_assert_uint_lt(without, with_grad); /* no nodes, no saved state */
    ck_assert_int_eq(tu_max_abs_diff(y, z), 0);
}
END_TEST

START_TEST(detach_stops_gradient)
{
    sl_tensor *x = sl_requires_grad(sl_full(SL_F64, sl_shape(2), 3.0), true);
    sl_tensor *d = sl_detach(sl_mul(x, x));
    ck_assert(!d->requires_grad);
    ck_assert_ptr_null(d->node);
    ck_assert(sl_get(d, 1) == 9.0);
    sl_tensor *y = sl_mul(x, d); /* gradient only through the first factor */
    ck_assert(sl_backward_ex(y, sl_ones(SL_F64, sl_shape(2)), 0));
    ck_assert(sl_get(x->grad, 0) == 9.0);
}
END_TEST

/* ---------------------------------------------------------------- custom ops */

/* cube(x) = x^3, written against the public API only; `bug` scales the backward. */
typedef struct {
    double bug;
} cube_saved;

static int backward_calls;

static bool cube_backward(sl_node *n)
{
    /* y = x^3: dx += g * 3 x^2 (times the deliberate bug factor) */
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    const cube_saved *s = n->saved;
    backward_calls++;
    for (int64_t i = 0; i < sl_numel(gx); i++) {
        double x = sl_get(n->in[0], i), g = sl_get(n->grad, i);
        double drift = s->bug < 0 ? 1e-3 * backward_calls : 0; /* non-deterministic */
        sl_set(gx, i, sl_get(gx, i) + g * 3 * x * x * (s->bug > 0 ? s->bug : 1) + drift);
    }
    return true;
}

static sl_tensor *cube(sl_tensor *x, double bug)
{
    sl_tensor *y = sl_empty(x->dtype, x->ndim, x->shape);
    if (!y) return NULL;
    for (int64_t i = 0; i < sl_numel(x); i++) {
        double v = sl_get(x, i);
        sl_set(y, i, v * v * v);
    }
    sl_node *n;
    if (!sl_record(&n, "cube", y, 1, &x, cube_backward, sizeof(cube_saved))) return NULL;
    if (n) ((cube_saved *)n->saved)->bug = bug;
    return y;
}

static sl_tensor *cube_ok(sl_tensor *const *in, int n, void *u) { return cube(in[0], 0); }
static sl_tensor *cube_wrong(sl_tensor *const *in, int n, void *u) { return cube(in[0], 1.01); }
static sl_tensor *cube_drifting(sl_tensor *const *in, int n, void *u) { return cube(in[0], -1); }
static sl_tensor *cube_times(sl_tensor *const *in, int n, void *u)
{
    return sl_mul(cube(in[0], 0), in[1]);
}

START_TEST(custom_op_passes_gradcheck)
{
    sl_rng r = sl_rng_seed(5);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3));
    tu_gradcheck(cube_ok, 1, &x, NULL);
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(3));
    sl_tensor *in[] = {x, w};
    tu_gradcheck(cube_times, 2, in, NULL);
}
END_TEST

/* twice(x) = 2 x, whose backward stores rather than adds when its input's gradient starts
 * there (sl_input_grad_overwrite); `partial` makes it store only element 0 then (a bug). The
 * flags it was handed are logged. */
static bool overwrite_seen[8];
static int overwrite_calls;

static bool twice_backward(sl_node *n)
{
    bool fresh = true;
    sl_tensor *gx = sl_input_grad_overwrite(n, 0, &fresh);
    if (!gx) return false;
    if (overwrite_calls < 8) overwrite_seen[overwrite_calls] = fresh;
    overwrite_calls++;
    bool partial = *(const bool *)n->saved;
    for (int64_t i = 0; i < sl_numel(gx); i++) {
        if (fresh && partial && i > 0) break;
        double g = 2 * sl_get(n->grad, i);
        sl_set(gx, i, fresh ? g : sl_get(gx, i) + g);
    }
    return true;
}

static sl_tensor *twice(sl_tensor *x, bool partial)
{
    sl_tensor *y = sl_empty(x->dtype, x->ndim, x->shape);
    if (!y) return NULL;
    for (int64_t i = 0; i < sl_numel(x); i++) sl_set(y, i, 2 * sl_get(x, i));
    sl_node *n;
    if (!sl_record(&n, "twice", y, 1, &x, twice_backward, sizeof(bool))) return NULL;
    if (n) *(bool *)n->saved = partial;
    return y;
}

/* twice on a leaf, on an intermediate used twice, and as one of two consumers. */
static sl_tensor *twice_fan_in(sl_tensor *const *in, int n, void *u)
{
    sl_tensor *h = sl_mul(in[0], in[1]);
    return sl_mul(sl_add(twice(h, false), sl_mul(twice(h, false), h)), twice(in[0], false));
}

START_TEST(overwrite_buffer_is_new_once_then_accumulates)
{
    double xv[] = {1, -2, 3}, g[] = {0.5, 4, -1};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), xv), true);
    sl_tensor *gy = sl_from_data(SL_F64, sl_shape(3), g);
    overwrite_calls = 0;
    ck_assert(sl_backward_ex(twice(x, false), gy, 0)); /* a leaf without a gradient: new */
    ck_assert(sl_backward_ex(twice(x, false), gy, 0)); /* the second backward adds to it */
    ck_assert_int_eq(overwrite_calls, 2);
    ck_assert(overwrite_seen[0] && !overwrite_seen[1]);
    for (int i = 0; i < 3; i++) ck_assert(sl_get(x->grad, i) == 4 * g[i]);
    /* An intermediate read by two twice nodes: the first backward to reach it stores, the
     * second adds; x's gradient is 2 * 2 * 3 * g. */
    sl_zero_grad(x);
    overwrite_calls = 0;
    sl_tensor *h = sl_mul(x, sl_full(SL_F64, sl_shape(3), 3.0));
    ck_assert(sl_backward_ex(sl_add(twice(h, false), twice(h, false)), gy, 0));
    ck_assert_int_eq(overwrite_calls, 2);
    ck_assert(overwrite_seen[0] && !overwrite_seen[1]);
    for (int i = 0; i < 3; i++) ck_assert(sl_get(x->grad, i) == 12 * g[i]);
    /* and through gradcheck, in f64, with fan-in */
    sl_rng r = sl_rng_seed(11);
    sl_tensor *in[] = {tu_randn(&r, SL_F64, sl_shape(2, 3)), tu_randn(&r, SL_F64, sl_shape(2, 3))};
    tu_gradcheck(twice_fan_in, 2, in, NULL);
}
END_TEST

#ifndef NDEBUG
START_TEST(overwrite_buffer_is_nan_in_debug_builds)
{
    /* a backward that leaves elements of a new buffer unwritten yields NaN there, not zeros */
    sl_tensor *x = sl_requires_grad(sl_zeros(SL_F32, sl_shape(4)), true);
    ck_assert(sl_backward_ex(twice(x, true), sl_ones(SL_F32, sl_shape(4)), 0));
    ck_assert(sl_get(x->grad, 0) == 2);
    for (int i = 1; i < 4; i++) ck_assert(isnan(sl_get(x->grad, i)));
}
END_TEST
#endif

/* probe(x) = x, whose backward logs where its output's gradient lives and where it wrote. */
static const void *probe_grad_at[4], *probe_wrote_at[4];

static bool probe_backward(sl_node *n)
{
    int id = *(const int *)n->saved;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    probe_grad_at[id] = sl_ptr(n->grad);
    probe_wrote_at[id] = sl_ptr(gx);
    for (int64_t i = 0; i < sl_numel(gx); i++) sl_set(gx, i, sl_get(gx, i) + sl_get(n->grad, i));
    return true;
}

static sl_tensor *probe(sl_tensor *x, int id)
{
    sl_tensor *y = sl_empty(x->dtype, x->ndim, x->shape);
    if (!y || !sl_copy_into(y, x)) return NULL;
    sl_node *n;
    if (!sl_record(&n, "probe", y, 1, &x, probe_backward, sizeof(int))) return NULL;
    if (n) *(int *)n->saved = id;
    return y;
}

START_TEST(add_hands_its_gradient_to_an_input_uncopied)
{
    double xv[] = {1, -2, 3, 0.25}, g[] = {0.5, 4, -1, 2};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(4), xv), true);
    /* w = probe0(probe1(x) + probe2(x)): the add's output gradient is the buffer probe0 wrote;
     * probe1 (the add's first input) reads that very buffer, probe2 a copy of it */
    memset(probe_grad_at, 0, sizeof probe_grad_at);
    sl_tensor *w = probe(sl_add(probe(x, 1), probe(x, 2)), 0);
    ck_assert(sl_backward_ex(w, sl_from_data(SL_F64, sl_shape(4), g), 0));
    ck_assert_ptr_eq(probe_grad_at[1], probe_wrote_at[0]);
    ck_assert_ptr_ne(probe_grad_at[2], probe_wrote_at[0]);
    for (int i = 0; i < 4; i++) ck_assert(sl_get(x->grad, i) == 2 * g[i]);
    /* a - b hands a its gradient too; b gets -g */
    sl_zero_grad(x);
    w = probe(sl_sub(probe(x, 1), sl_mul(probe(x, 2), sl_full(SL_F64, sl_shape(4), 3.0))), 0);
    ck_assert(sl_backward_ex(w, sl_from_data(SL_F64, sl_shape(4), g), 0));
    ck_assert_ptr_eq(probe_grad_at[1], probe_wrote_at[0]);
    for (int i = 0; i < 4; i++) ck_assert(sl_get(x->grad, i) == -2 * g[i]);
    /* x + x: one buffer for both inputs would double-write; refused, the sum still 2 g */
    sl_zero_grad(x);
    sl_tensor *p = probe(x, 1);
    w = probe(sl_add(p, p), 0);
    ck_assert(sl_backward_ex(w, sl_from_data(SL_F64, sl_shape(4), g), 0));
    ck_assert_ptr_ne(probe_grad_at[1], probe_wrote_at[0]);
    for (int i = 0; i < 4; i++) ck_assert(sl_get(x->grad, i) == 2 * g[i]);
}
END_TEST

/* The patterns an addition's pass-through meets: a residual read again after the add, the
 * input read again before it, broadcasting, the same tensor twice, a - b, f32 rounding aside. */
static sl_tensor *residual_patterns(sl_tensor *const *in, int n, void *u)
{
    sl_tensor *x = in[0], *y = in[1], *b = in[2];
    sl_tensor *h = sl_mul(x, y);
    sl_tensor *r = sl_add(h, x);          /* h passed; x a leaf: its own buffer */
    sl_tensor *s = sl_add(sl_mul(r, h), r); /* r read by the mul (runs after the add) */
    sl_tensor *t = sl_sub(s, sl_add(r, b)); /* broadcast b (3); s passed */
    sl_tensor *v = sl_add(t, t);          /* the same tensor twice */
    return sl_mul(sl_add(sl_tanh(v), h), y);
}

START_TEST(add_pass_through_gradients_are_right)
{
    sl_rng r = sl_rng_seed(12);
    sl_tensor *in[] = {tu_randn(&r, SL_F64, sl_shape(2, 3)), tu_randn(&r, SL_F64, sl_shape(2, 3)),
                       tu_randn(&r, SL_F64, sl_shape(3))};
    tu_gradcheck(residual_patterns, 3, in, NULL);
}
END_TEST

START_TEST(gradcheck_catches_wrong_backward)
{
    sl_rng r = sl_rng_seed(6);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(4));
    for (int i = 0; i < 4; i++) sl_set(x, i, 1.0 + i); /* gradients well above atol */
    sl_gradcheck_opts o = {.quiet = true};
    sl_gradcheck_result res;
    ck_assert(!sl_gradcheck(cube_wrong, 1, &x, NULL, &o, &res));
    ck_assert(!res.ok);
    ck_assert_int_eq(res.input, 0);
    ck_assert_int_eq(res.index, 3); /* the largest gradient has the largest 1% error */
    ck_assert_close(res.analytic / res.numeric, 1.01, 1e-6, 0);
    ck_assert(strstr(res.message, "FAILED") != NULL);
    ck_assert(res.repeat_ok);

    ck_assert(!sl_gradcheck(cube_drifting, 1, &x, NULL, &o, &res));
    ck_assert(!res.repeat_ok);
    ck_assert(strstr(res.message, "second backward") != NULL);
}
END_TEST

START_TEST(gradcheck_leaves_caller_grads_alone)
{
    sl_rng r = sl_rng_seed(8);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3));
    sl_tensor *y = sl_mul(x, x);
    ck_assert(sl_backward_ex(y, sl_ones(SL_F64, sl_shape(3)), 0));
    double before[3];
    for (int i = 0; i < 3; i++) before[i] = sl_get(x->grad, i);
    tu_gradcheck(cube_ok, 1, &x, NULL);
    for (int i = 0; i < 3; i++) ck_assert(sl_get(x->grad, i) == before[i]);
}
END_TEST

/* An op whose backward fails the first time it runs (as on OOM). */
static int fail_once;
static bool flaky_backward(sl_node *n)
{
    if (fail_once-- > 0) return sl_set_error(SL_ERR_OOM, "flaky: simulated OOM");
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    for (int64_t i = 0; i < sl_numel(gx); i++) sl_set(gx, i, sl_get(gx, i) + sl_get(n->grad, i));
    return true;
}

START_TEST(failed_backward_can_be_retried)
{
    /* loss = flaky(x) + 3x: the retry after a failure gives exactly 1 + 3 = 4 per element. */
    sl_tensor *x = sl_requires_grad(sl_ones(SL_F64, sl_shape(2)), true);
    sl_tensor *f = sl_empty(SL_F64, sl_shape(2));
    sl_copy_into(f, x);
    sl_node *n;
    ck_assert(sl_record(&n, "flaky", f, 1, &x, flaky_backward, 0));
    /* 3x first: the sort then runs flaky before the scale, so the failure leaves the scale's
     * incoming gradient waiting (the case that must be cleaned up). */
    sl_tensor *loss = sl_sum_all(sl_add(sl_mul_scalar(x, 3), f));
    fail_once = 1;
    ck_assert(!sl_backward_ex(loss, NULL, SL_RETAIN_GRAPH));
    ck_assert_int_eq(sl_error(), SL_ERR_OOM);
    sl_error_clear();
    sl_zero_grad(x);
    ck_assert(sl_backward_ex(loss, NULL, SL_RETAIN_GRAPH));
    for (int i = 0; i < 2; i++) ck_assert(sl_get(x->grad, i) == 4.0);
}
END_TEST

START_TEST(error_message_may_quote_itself)
{
    sl_set_error(SL_ERR_SHAPE, "inner: [2,3]");
    sl_set_error(SL_ERR_SHAPE, "my_layer: %s", sl_error_message());
    ck_assert_str_eq(sl_error_message(), "my_layer: inner: [2,3]");
}
END_TEST

START_TEST(gradcheck_argument_errors)
{
    sl_tensor *f = sl_requires_grad(sl_ones(SL_F32, sl_shape(2)), true);
    sl_gradcheck_opts o = {.quiet = true};
    sl_gradcheck_result res;
    ck_assert(!sl_gradcheck(cube_ok, 1, &f, NULL, &o, &res));
    ck_assert_str_eq(res.message,
                     "sl_gradcheck: input 0 is f32 [2]; finite differences need f64 inputs");
    sl_error_clear();
    sl_tensor *x = sl_requires_grad(sl_ones(SL_F64, sl_shape(2)), true);
    sl_tensor *nl = sl_exp(x);
    ck_assert(!sl_gradcheck(cube_ok, 1, &nl, NULL, &o, &res));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
}
END_TEST

/* What the observers see: every recorded op in order, each backward node bracketed by begin and
 * end, and each leaf's gradient reported exactly once, at a moment when it already holds its
 * final value. */
typedef struct {
    char log[64][16];
    int n_log;
    int begins, ends, backward_runs, backward_ok;
    sl_tensor *ready[8];
    double ready_value[8]; /* grad[0] when reported */
    int n_ready;
} watch;

static void w_log(watch *w, const char *what)
{
    if (w->n_log < 64) snprintf(w->log[w->n_log++], sizeof w->log[0], "%s", what);
}
static void w_recorded(void *u, const sl_node *n) { w_log(u, n->op); }
static void w_backward_begin(void *u, const sl_tensor *out) { w_log(u, "begin"); }
static void w_node_begin(void *u, const sl_node *n) { ((watch *)u)->begins++; }
static void w_node_end(void *u, const sl_node *n) { ((watch *)u)->ends++; }
static void w_grad_ready(void *u, sl_tensor *leaf)
{
    watch *w = u;
    ck_assert_int_lt(w->n_ready, 8);
    w->ready[w->n_ready] = leaf;
    w->ready_value[w->n_ready++] = leaf->grad ? sl_get(leaf->grad, 0) : NAN;
}
static void w_backward_end(void *u, const sl_tensor *out, bool ok)
{
    watch *w = u;
    w->backward_runs++;
    w->backward_ok += ok;
    w_log(u, "end");
}

START_TEST(observers_see_records_nodes_and_final_grads)
{
    watch w = {0};
    sl_autograd_observer obs = {&w,           w_recorded,   w_backward_begin, w_node_begin,
                                w_node_end,   w_grad_ready, w_backward_end};
    ck_assert(sl_autograd_add_observer(&obs));
    ck_assert(!sl_autograd_add_observer(&obs)); /* twice */
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
    /* y = sum((a * b) + exp(a)) + sum(c): a is used twice (final only after both uses), c once,
     * early in the forward (so last in the backward's order), and d never reaches the loss. */
    double av[] = {0.5, -1}, bv[] = {2, 3};
    sl_tensor *a = sl_requires_grad(sl_from_data(SL_F64, sl_shape(2), av), true);
    sl_tensor *b = sl_requires_grad(sl_from_data(SL_F64, sl_shape(2), bv), true);
    sl_tensor *c = sl_requires_grad(sl_ones(SL_F64, sl_shape(2)), true);
    sl_tensor *d = sl_requires_grad(sl_ones(SL_F64, sl_shape(2)), true);
    sl_tensor *sc = sl_sum_all(c);
    (void)sl_mul(d, d); /* recorded, but not on the loss's tape */
    sl_tensor *ab = sl_mul(a, b), *ea = sl_exp(a); /* in this order */
    sl_tensor *y = sl_add(sl_sum_all(sl_add(ab, ea)), sc);
    const char *want[] = {"sl_sum", "sl_mul", "sl_mul", "sl_exp", "sl_add", "sl_sum", "sl_add"};
    ck_assert_int_eq(w.n_log, 7);
    for (int i = 0; i < 7; i++) ck_assert_str_eq(w.log[i], want[i]);
    ck_assert(sl_backward(y));
    ck_assert_str_eq(w.log[7], "begin");
    ck_assert_str_eq(w.log[8], "end");
    ck_assert_int_eq(w.backward_runs, 1);
    ck_assert_int_eq(w.backward_ok, 1);
    ck_assert_int_eq(w.begins, 6); /* the nodes on y's tape */
    ck_assert_int_eq(w.ends, 6);
    ck_assert_int_eq(w.n_ready, 3); /* a, b, c once each; d is not reachable */
    bool seen[3] = {false, false, false};
    sl_tensor *leaves[3] = {a, b, c};
    for (int r = 0; r < w.n_ready; r++)
        for (int l = 0; l < 3; l++)
            if (w.ready[r] == leaves[l]) {
                ck_assert(!seen[l]);
                seen[l] = true;
                /* reported with its final value */
                ck_assert(w.ready_value[r] == sl_get(leaves[l]->grad, 0));
            }
    ck_assert(seen[0] && seen[1] && seen[2]);
    ck_assert(sl_get(a->grad, 0) == bv[0] + exp(av[0])); /* both uses summed */
    /* A leaf as the loss: reported right away. */
    w.n_ready = 0;
    sl_tensor *z = sl_requires_grad(sl_scalar(SL_F64, 2), true);
    ck_assert(sl_backward(z));
    ck_assert_int_eq(w.n_ready, 1);
    ck_assert_ptr_eq(w.ready[0], z);
    ck_assert(sl_autograd_remove_observer(&obs));
    ck_assert(!sl_autograd_remove_observer(&obs));
    w.n_log = 0;
    (void)sl_mul(a, b);
    ck_assert_int_eq(w.n_log, 0); /* removed */
}
END_TEST

/* An evaluation scope: grad off and a scratch arena in one call, both restored by the end,
 * which releases what was made inside; repeated scopes stop allocating; scopes nest. */
START_TEST(eval_scope_restores_and_releases)
{
    sl_arena *home = sl_arena_current();
    sl_rng r = sl_rng_seed(6);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(1000)); /* made before: usable inside */
    sl_tensor *out = sl_zeros(SL_F64, sl_shape(1000));
    size_t used = sl_arena_used(home);
    uint64_t allocs = 0;
    for (int round = 0; round < 3; round++) {
        bool grad = round != 1; /* the grad mode before the scope comes back either way */
        sl_set_grad_enabled(grad);
        if (round == 2) allocs = sl_heap_allocs();
        sl_eval_scope s = sl_eval_begin(NULL);
        ck_assert(s.active);
        ck_assert(!sl_grad_enabled());
        ck_assert_ptr_eq(sl_arena_current(), s.arena);
        ck_assert_ptr_ne(s.arena, home);
        sl_tensor *y = sl_exp(x);
        ck_assert_ptr_null(y->node);     /* nothing recorded */
        ck_assert(sl_copy_into(out, y)); /* what outlives the scope goes to the caller's arena */
        ck_assert(sl_eval_end(&s));
        ck_assert(!s.active);
        ck_assert(sl_grad_enabled() == grad);
        ck_assert_ptr_eq(sl_arena_current(), home);
        ck_assert_uint_eq(sl_arena_used(home), used); /* the caller's arena got nothing */
        ck_assert_uint_eq(sl_arena_used(s.arena), 0);
        ck_assert(isnan(sl_get(y, 0))); /* released */
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        sl_error_clear();
        ck_assert_double_eq(sl_get(out, 3), exp(sl_get(x, 3)));
        ck_assert(sl_eval_end(&s)); /* ended: nothing to do */
    }
    ck_assert_uint_eq(sl_heap_allocs(), allocs); /* the thread keeps the scope's arena */
    sl_set_grad_enabled(true);

    /* the default arena (no current one) comes back as the default */
    sl_arena_set(NULL);
    sl_eval_scope d = sl_eval_begin(NULL);
    ck_assert(sl_eval_end(&d));
    ck_assert_ptr_null(sl_arena_set(home));

    /* nested: each level has its own arena, and the outer's tensors live through the inner */
    sl_eval_scope outer = sl_eval_begin(NULL);
    sl_tensor *a = sl_exp(x);
    sl_eval_scope inner = sl_eval_begin(NULL);
    ck_assert(inner.active);
    ck_assert_ptr_ne(inner.arena, outer.arena);
    sl_tensor *b = sl_add(a, a);
    ck_assert(!sl_eval_end(&outer)); /* not the innermost: refused, nothing changed */
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(),
                     "sl_eval_end: scopes end innermost first; this one is at depth 1, the "
                     "innermost at 2");
    sl_error_clear();
    ck_assert_ptr_eq(sl_arena_current(), inner.arena);
    ck_assert(sl_eval_end(&inner));
    ck_assert_ptr_eq(sl_arena_current(), outer.arena);
    ck_assert(!sl_grad_enabled());
    ck_assert_double_eq(sl_get(a, 0), exp(sl_get(x, 0)));
    ck_assert(isnan(sl_get(b, 0)));
    sl_error_clear();
    ck_assert(sl_eval_end(&outer));
    ck_assert(sl_grad_enabled());
    ck_assert_ptr_eq(sl_arena_current(), home);

    /* a caller's scratch arena: used, and reset at the end; the current arena is refused */
    sl_arena *scratch = sl_arena_new(0);
    sl_eval_scope c = sl_eval_begin(scratch);
    ck_assert_ptr_eq(sl_arena_current(), scratch);
    ck_assert_ptr_nonnull(sl_exp(x));
    ck_assert_uint_gt(sl_arena_used(scratch), 0);
    ck_assert(sl_eval_end(&c));
    ck_assert_uint_eq(sl_arena_used(scratch), 0);
    sl_eval_scope bad = sl_eval_begin(home);
    ck_assert(!bad.active);
    ck_assert_str_eq(sl_error_message(),
                     "sl_eval_begin: the scratch arena is the current arena; its reset at "
                     "sl_eval_end would release the caller's tensors");
    sl_error_clear();
    ck_assert(sl_grad_enabled()); /* a failed begin changes nothing */
    ck_assert_ptr_eq(sl_arena_current(), home);
    ck_assert(sl_eval_end(&bad) && sl_eval_end(NULL));
    sl_arena_free(scratch);

    /* too deep */
    sl_eval_scope level[SL_EVAL_MAX_DEPTH + 1];
    for (int i = 0; i < SL_EVAL_MAX_DEPTH; i++) ck_assert((level[i] = sl_eval_begin(NULL)).active);
    level[SL_EVAL_MAX_DEPTH] = sl_eval_begin(NULL);
    ck_assert(!level[SL_EVAL_MAX_DEPTH].active);
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    sl_error_clear();
    for (int i = SL_EVAL_MAX_DEPTH; i-- > 0;) ck_assert(sl_eval_end(&level[i]));
    ck_assert(sl_grad_enabled());
    ck_assert_ptr_eq(sl_arena_current(), home);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("autograd");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, chain_rule_and_fan_in);
    tu_add_test(s, tc, scalar_loss_backward);
    tu_add_test(s, tc, backward_errors);
    tu_add_test(s, tc, graph_is_consumed_unless_retained);
    tu_add_test(s, tc, no_grad_records_nothing_and_holds_no_memory);
    tu_add_test(s, tc, detach_stops_gradient);
    tu_add_test(s, tc, custom_op_passes_gradcheck);
    tu_add_test(s, tc, overwrite_buffer_is_new_once_then_accumulates);
#ifndef NDEBUG
    tu_add_test(s, tc, overwrite_buffer_is_nan_in_debug_builds);
#endif
    tu_add_test(s, tc, add_hands_its_gradient_to_an_input_uncopied);
    tu_add_test(s, tc, add_pass_through_gradients_are_right);
    tu_add_test(s, tc, gradcheck_catches_wrong_backward);
    tu_add_test(s, tc, gradcheck_argument_errors);
    tu_add_test(s, tc, gradcheck_leaves_caller_grads_alone);
    tu_add_test(s, tc, failed_backward_can_be_retried);
    tu_add_test(s, tc, error_message_may_quote_itself);
    tu_add_test(s, tc, observers_see_records_nodes_and_final_grads);
    tu_add_test(s, tc, eval_scope_restores_and_releases);
    return tu_run(s);
}
