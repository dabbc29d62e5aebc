/* Optimizers and schedules: AdamW and SGD against loops written here and against torch.optim,
 * weight decay only where asked, skipped parameters, no heap allocation per step, results
 * independent of the thread count, schedule values, the error paths, and a non-finite gradient
 * refused by the clip and the step without changing anything. */
#include "testutil.h"

#include "../nn/optim_internal.h" /* the state tensors, to see that they did not change */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The case of tests/optim_reference.py: w (4, decay) and b (2, no decay), three steps. */
static const double W0[4] = {0.5, -1.0, 2.0, 0.25}, B0[2] = {0.1, -0.2};
static const double GW[3][4] = {
    {0.1, -0.2, 0.3, 0.0}, {-0.05, 0.4, 0.1, 0.2}, {0.3, 0.3, -0.1, -0.2}};
static const double GB[3][2] = {{1.0, -0.5}, {0.5, 0.25}, {-1.0, 2.0}};
static const double LRS[3] = {1e-2, 5e-3, 2e-3};
static const double WD = 0.1;

/* torch 1.13.0a0, tests/optim_reference.py */
static const double torch_adamw_f64[6] = {
    0.48650061516840043, -0.99130137592375456, 1.981294587427235,
    0.24599039503961226, 0.085082001023226772, -0.18975404939975268};
static const double torch_adamw_f32[6] = {
    0.48650062084197998, -0.99130135774612427, 1.9812946319580078,
    0.24599038064479828, 0.085082001984119415, -0.18975403904914856};
static const double torch_sgd_f64[6] = {
    0.49688345485000002, -0.99760660969999992, 1.9897051495,
    0.24841746747499999, 0.082479999999999998, -0.19764000000000001};
static const double torch_sgd_f32[6] = {
    0.49688345193862915, -0.99760657548904419, 1.9897052049636841,
    0.24841746687889099, 0.082480005919933319, -0.19764000177383423};

typedef struct {
    sl_params *ps;
    sl_tensor *w, *b;
} two_params;

/* The registry of the reference case, with gradient buffers the test fills itself. */
static two_params make_case(sl_dtype dtype)
{
    two_params c;
    c.ps = sl_params_new(dtype);
    ck_assert_ptr_nonnull(c.ps);
    c.w = sl_params_add(c.ps, "w", sl_shape(4), true);
    c.b = sl_params_add(c.ps, "b", sl_shape(2), false);
    ck_assert_ptr_nonnull(c.w);
    ck_assert_ptr_nonnull(c.b);
    for (int i = 0; i < 4; i++) sl_set(c.w, i, W0[i]);
    for (int i = 0; i < 2; i++) sl_set(c.b, i, B0[i]);
    c.w->grad = sl_zeros(dtype, sl_shape(4));
    c.b->grad = sl_zeros(dtype, sl_shape(2));
    return c;
}

static void set_grads(two_params *c, int t)
{
    for (int i = 0; i < 4; i++) sl_set(c->w->grad, i, GW[t][i]);
    for (int i = 0; i < 2; i++) sl_set(c->b->grad, i, GB[t][i]);
}

static void run_case(two_params *c, sl_optim *opt)
{
    for (int t = 0; t < 3; t++) {
        set_grads(c, t);
        ck_assert_msg(sl_optim_step(opt, LRS[t]), "%s", sl_error_message());
    }
    ck_assert_int_eq(sl_optim_steps(opt), 3);
}

/* AdamW as the paper writes it (Loshchilov & Hutter, with torch's placement of the decay):
 * decay, moments, bias correction, update; one element at a time, in double. */
static double adamw_by_hand(double p, const double *g, int stride, const double *lr, int steps,
                            double wd)
{
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8;
    double m = 0, v = 0;
    for (int t = 1; t <= steps; t++) {
        double gt = g[(t - 1) * stride];
        p -= lr[t - 1] * wd * p;
        m = b1 * m + (1 - b1) * gt;
        v = b2 * v + (1 - b2) * gt * gt;
        double mhat = m / (1 - pow(b1, t)), vhat = v / (1 - pow(b2, t));
        p -= lr[t - 1] * mhat / (sqrt(vhat) + eps);
    }
    return p;
}

static double sgd_by_hand(double p, const double *g, int stride, const double *lr, int steps,
                          double mu, double wd)
{
    double buf = 0;
    for (int t = 0; t < steps; t++) {
        double d = g[t * stride] + wd * p;
        buf = t == 0 ? d : mu * buf + d;
        p -= lr[t] * buf;
    }
    return p;
}

START_TEST(adamw_matches_hand_and_torch)
{
    for (int k = 0; k < 2; k++) {
        sl_dtype dt = k ? SL_F32 : SL_F64;
        two_params c = make_case(dt);
        sl_optim *opt = sl_adamw_new(c.ps, &(sl_adamw_config){.weight_decay = WD});
        ck_assert_ptr_nonnull(opt);
        run_case(&c, opt);
        /* float32: torch's roundings differ from ours (we update in double), ~1 ulp */
        double tol = dt == SL_F64 ? 1e-14 : 3e-7;
        const double *torch = dt == SL_F64 ? torch_adamw_f64 : torch_adamw_f32;
        for (int i = 0; i < 4; i++) {
            double hand = adamw_by_hand(W0[i], &GW[0][i], 4, LRS, 3, WD);
            ck_assert_close(sl_get(c.w, i), hand, tol, 0);
            ck_assert_close(sl_get(c.w, i), torch[i], tol, 0);
        }
        for (int i = 0; i < 2; i++) {
            double hand = adamw_by_hand(B0[i], &GB[0][i], 2, LRS, 3, 0); /* no decay */
            ck_assert_close(sl_get(c.b, i), hand, tol, 0);
            ck_assert_close(sl_get(c.b, i), torch[4 + i], tol, 0);
        }
        sl_optim_free(opt);
        sl_params_free(c.ps);
    }
}
END_TEST

START_TEST(sgd_matches_hand_and_torch)
{
    for (int k = 0; k < 2; k++) {
        sl_dtype dt = k ? SL_F32 : SL_F64;
        two_params c = make_case(dt);
        sl_optim *opt = sl_sgd_new(c.ps, 0.9, WD);
        ck_assert_ptr_nonnull(opt);
        run_case(&c, opt);
        double tol = dt == SL_F64 ? 1e-15 : 2e-7;
        const double *torch = dt == SL_F64 ? torch_sgd_f64 : torch_sgd_f32;
        for (int i = 0; i < 4; i++) {
            ck_assert_close(sl_get(c.w, i), sgd_by_hand(W0[i], &GW[0][i], 4, LRS, 3, 0.9, WD),
                            tol, 0);
            ck_assert_close(sl_get(c.w, i), torch[i], tol, 0);
        }
        for (int i = 0; i < 2; i++) {
            ck_assert_close(sl_get(c.b, i), sgd_by_hand(B0[i], &GB[0][i], 2, LRS, 3, 0.9, 0), tol,
                            0);
            ck_assert_close(sl_get(c.b, i), torch[4 + i], tol, 0);
        }
        sl_optim_free(opt);
        sl_params_free(c.ps);
    }
    /* Without momentum: p -= lr (g + wd p), exactly. */
    two_params c = make_case(SL_F64);
    sl_optim *opt = sl_sgd_new(c.ps, 0, WD);
    set_grads(&c, 0);
    ck_assert(sl_optim_step(opt, 0.5));
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq(sl_get(c.w, i), W0[i] - 0.5 * (GW[0][i] + WD * W0[i]));
    for (int i = 0; i < 2; i++) ck_assert_double_eq(sl_get(c.b, i), B0[i] - 0.5 * GB[0][i]);
    sl_optim_free(opt);
    sl_params_free(c.ps);
}
END_TEST

START_TEST(weight_decay_only_on_decay_params)
{
    /* Zero gradients: the moments stay 0, so AdamW's only change is the decoupled decay
     * p *= 1 - lr wd on w, and none on b. SGD: p -= lr wd p on w. */
    for (int k = 0; k < 2; k++) {
        two_params c = make_case(SL_F64);
        sl_optim *opt = k ? sl_sgd_new(c.ps, 0.5, 0.25)
                          : sl_adamw_new(c.ps, &(sl_adamw_config){.weight_decay = 0.25});
        ck_assert(sl_optim_step(opt, 0.1));
        for (int i = 0; i < 4; i++)
            ck_assert_double_eq(sl_get(c.w, i),
                                k ? W0[i] - 0.1 * (0.25 * W0[i]) : W0[i] * (1 - 0.1 * 0.25));
        for (int i = 0; i < 2; i++) ck_assert_double_eq(sl_get(c.b, i), B0[i]);
        sl_optim_free(opt);
        sl_params_free(c.ps);
    }
}
END_TEST

START_TEST(params_without_grad_are_skipped)
{
    /* b has no gradient for two steps: untouched (not even decayed), and its bias correction
     * then starts from its own first step, as torch keeps state["step"] per parameter. */
    two_params c = make_case(SL_F64);
    c.b->grad = NULL;
    sl_tensor *bgrad = sl_zeros(SL_F64, sl_shape(2));
    sl_optim *opt = sl_adamw_new(c.ps, &(sl_adamw_config){.weight_decay = WD});
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < 4; i++) sl_set(c.w->grad, i, GW[t][i]);
        ck_assert(sl_optim_step(opt, LRS[t]));
        for (int i = 0; i < 2; i++) ck_assert_double_eq(sl_get(c.b, i), B0[i]);
    }
    c.b->grad = bgrad;
    for (int i = 0; i < 2; i++) sl_set(bgrad, i, GB[2][i]);
    ck_assert(sl_optim_step(opt, LRS[2]));
    for (int i = 0; i < 2; i++) {
        ck_assert_close(sl_get(c.b, i), adamw_by_hand(B0[i], &GB[2][i], 2, &LRS[2], 1, 0), 1e-15,
                        0);
    }
    sl_optim_free(opt);
    sl_params_free(c.ps);
}
END_TEST

/* A small model trained through autograd: y = lin2(tanh(lin1(x))), loss = mean(y^2). */
typedef struct {
    sl_params *ps;
    sl_linear_module *l1, *l2;
    sl_tensor *x;
} tiny_model;

static tiny_model tiny_new(int64_t hidden, uint64_t seed)
{
    tiny_model m;
    sl_rng r = sl_rng_seed(seed);
    m.ps = sl_params_new(SL_F32);
    m.l1 = sl_linear_new(m.ps, "l1", 8, hidden, true, &r);
    m.l2 = sl_linear_new(m.ps, "l2", hidden, 4, false, &r);
    ck_assert_ptr_nonnull(m.l2);
    m.x = sl_rand_normal(&r, SL_F32, sl_shape(16, 8), 0, 1);
    return m;
}

static void tiny_backward(tiny_model *m, sl_arena *step)
{
    sl_arena *prev = sl_arena_set(step);
    sl_params_zero_grad(m->ps);
    sl_tensor *y = sl_linear_forward(m->l2, sl_tanh(sl_linear_forward(m->l1, m->x)));
    ck_assert_msg(sl_backward(sl_mean_all(sl_mul(y, y))), "%s", sl_error_message());
    sl_arena_set(prev);
    sl_arena_reset(step);
}

START_TEST(step_allocates_nothing)
{
    /* hidden 4096: l1.weight has 32768 elements, enough for the parallel path. */
    sl_set_num_threads(2);
    for (int k = 0; k < 2; k++) {
        tiny_model m = tiny_new(4096, 5);
        sl_arena *step = sl_arena_new(0);
        sl_optim *opt = k ? sl_sgd_new(m.ps, 0.9, 0.1)
                          : sl_adamw_new(m.ps, &(sl_adamw_config){.weight_decay = 0.1});
        tiny_backward(&m, step);
        ck_assert(sl_optim_step(opt, 1e-3)); /* warm: the pool's threads start here */
        for (int s = 0; s < 3; s++) {
            tiny_backward(&m, step);
            uint64_t before = sl_heap_allocs();
            ck_assert(sl_optim_step(opt, 1e-3));
            ck_assert_int_eq(sl_heap_allocs(), before);
        }
        sl_optim_free(opt);
        sl_arena_free(step);
        sl_params_free(m.ps);
    }
}
END_TEST

/* f32 AdamW runs 8 elements at a time: 21 elements are two whole vectors and a padded tail,
 * each against the hand loop (the moments are stored in f32, hence the tolerance). */
START_TEST(adamw_f32_vectors_and_tail)
{
    enum { N = 21, STEPS = 3 };
    sl_params *ps = sl_params_new(SL_F32);
    sl_tensor *p = sl_params_add(ps, "p", sl_shape(N), true);
    p->grad = sl_zeros(SL_F32, sl_shape(N));
    double p0[N], g[STEPS][N];
    for (int i = 0; i < N; i++) {
        p0[i] = (float)(0.1 * i - 1);
        sl_set(p, i, p0[i]);
        for (int t = 0; t < STEPS; t++) g[t][i] = (float)sin(1.0 + i + 7.0 * t);
    }
    sl_optim *opt = sl_adamw_new(ps, &(sl_adamw_config){.weight_decay = WD});
    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < N; i++) sl_set(p->grad, i, g[t][i]);
        ck_assert(sl_optim_step(opt, LRS[t]));
    }
    for (int i = 0; i < N; i++)
        ck_assert_close(sl_get(p, i), adamw_by_hand(p0[i], &g[0][i], N, LRS, STEPS, WD), 3e-7,
                        1e-9);
    sl_optim_free(opt);
    sl_params_free(ps);
}
END_TEST

START_TEST(thread_count_does_not_change_results)
{
    const int64_t n = 100003;
    float *ref = malloc(sizeof *ref * (size_t)n);
    for (int threads = 1; threads <= 2; threads++) {
        sl_set_num_threads(threads);
        sl_rng r = sl_rng_seed(9);
        sl_params *ps = sl_params_new(SL_F32);
        sl_tensor *p = sl_params_add(ps, "p", sl_shape(n), true);
        sl_init_normal(p, &r, 1.0);
        p->grad = sl_zeros(SL_F32, sl_shape(n));
        sl_optim *opt = sl_adamw_new(ps, &(sl_adamw_config){.weight_decay = 0.1});
        for (int s = 0; s < 3; s++) {
            sl_init_normal(p->grad, &r, 1.0);
            ck_assert(sl_optim_step(opt, 1e-2));
        }
        if (threads == 1) memcpy(ref, p->data, sizeof *ref * (size_t)n);
        else ck_assert_int_eq(memcmp(ref, p->data, sizeof *ref * (size_t)n), 0);
        sl_optim_free(opt);
        sl_params_free(ps);
    }
    free(ref);
}
END_TEST

START_TEST(training_reduces_the_loss)
{
    /* The optimizers are wired to real gradients: 30 steps shrink mean(y^2) a lot. */
    for (int k = 0; k < 2; k++) {
        tiny_model m = tiny_new(16, 3);
        sl_optim *opt = k ? sl_sgd_new(m.ps, 0.9, 0) : sl_adamw_new(m.ps, NULL);
        double first = 0, last = 0;
        for (int s = 0; s < 30; s++) {
            sl_params_zero_grad(m.ps);
            sl_tensor *y = sl_linear_forward(m.l2, sl_tanh(sl_linear_forward(m.l1, m.x)));
            sl_tensor *loss = sl_mean_all(sl_mul(y, y));
            ck_assert(sl_backward(loss));
            if (s == 0) first = sl_item(loss);
            last = sl_item(loss);
            ck_assert(sl_optim_step(opt, k ? 0.5 : 1e-2));
        }
        ck_assert_msg(last < 0.2 * first, "loss %g -> %g", first, last);
        sl_optim_free(opt);
        sl_params_free(m.ps);
    }
}
END_TEST

START_TEST(schedules)
{
    ck_assert_double_eq(sl_lr_constant(0, 0.3), 0.3);
    ck_assert_double_eq(sl_lr_constant(1000, 0.3), 0.3);
    /* warmup 10, total 110, 1.0 -> 0.1 */
    double (*f)(int64_t, int64_t, int64_t, double, double) = sl_lr_warmup_cosine;
    ck_assert_double_eq(f(0, 10, 110, 1.0, 0.1), 0.1);  /* (0 + 1) / 10 */
    ck_assert_double_eq(f(4, 10, 110, 1.0, 0.1), 0.5);
    ck_assert_double_eq(f(9, 10, 110, 1.0, 0.1), 1.0);  /* the last warmup step */
    ck_assert_double_eq(f(10, 10, 110, 1.0, 0.1), 1.0); /* cosine starts at the top */
    ck_assert_close(f(35, 10, 110, 1.0, 0.1), 0.1 + 0.9 * (1 + sqrt(0.5)) / 2, 1e-15, 0);
    ck_assert_close(f(60, 10, 110, 1.0, 0.1), 0.55, 1e-15, 0); /* halfway */
    ck_assert_close(f(109, 10, 110, 1.0, 0.1), 0.1 + 0.9 * (1 + cos(M_PI * 0.99)) / 2, 1e-15, 0);
    ck_assert_double_eq(f(110, 10, 110, 1.0, 0.1), 0.1);
    ck_assert_double_eq(f(5000, 10, 110, 1.0, 0.1), 0.1);
    /* no warmup; a total inside the warmup */
    ck_assert_double_eq(f(0, 0, 100, 2.0, 0.0), 2.0);
    ck_assert_double_eq(f(2, 5, 3, 1.0, 0.5), 0.6);
    ck_assert_double_eq(f(5, 5, 3, 1.0, 0.5), 0.5);
    /* monotone decay after warmup */
    for (int64_t s = 10; s < 110; s++)
        ck_assert(f(s + 1, 10, 110, 1.0, 0.1) <= f(s, 10, 110, 1.0, 0.1));
    ck_assert(isnan(sl_lr_constant(-1, 0.3)));
    ck_assert_str_eq(sl_error_message(), "sl_lr_constant: step -1 is negative");
    ck_assert(isnan(f(-2, 10, 110, 1.0, 0.1)));
    ck_assert_str_eq(sl_error_message(), "sl_lr_warmup_cosine: step -2 and warmup 10 must be >= 0");
}
END_TEST

/* The bytes of a tensor (contiguous), on the heap. */
static void *bytes_of(const sl_tensor *t)
{
    size_t n = (size_t)sl_numel(t) * sl_dtype_size(t->dtype);
    void *b = malloc(n);
    memcpy(b, sl_ptr(t), n);
    return b;
}

static void assert_bytes(const sl_tensor *t, const void *b)
{
    ck_assert_int_eq(memcmp(sl_ptr(t), b, (size_t)sl_numel(t) * sl_dtype_size(t->dtype)), 0);
}

/* An Inf or a NaN in one gradient element: the clip returns the non-finite norm with an error
 * naming the element and scales nothing; the step fails naming it and changes no parameter, no
 * moment, no step count (bitwise); with the gradient repaired, training goes on. Before, the
 * clip returned inf silently and the step succeeded, leaving NaN parameters. */
START_TEST(nonfinite_gradient_changes_nothing)
{
    for (int k = 0; k < 8; k++) {
        sl_dtype dt = k & 1 ? SL_F64 : SL_F32;
        bool sgd = k & 2, nan = k & 4;
        two_params c = make_case(dt);
        sl_optim *opt = sgd ? sl_sgd_new(c.ps, 0.9, WD)
                            : sl_adamw_new(c.ps, &(sl_adamw_config){.weight_decay = WD});
        set_grads(&c, 0);
        ck_assert(sl_optim_step(opt, LRS[0]));
        void *w = bytes_of(c.w), *b = bytes_of(c.b), *state[6];
        ck_assert_int_le(opt->n_state, 6);
        for (int i = 0; i < opt->n_state; i++) state[i] = bytes_of(opt->state[i].t);

        set_grads(&c, 1);
        const char *name = nan ? "w" : "b", *shape = nan ? "[4]" : "[2]";
        int at = nan ? 3 : 1;
        sl_set(nan ? c.w->grad : c.b->grad, at, nan ? NAN : -INFINITY);
        double norm = sl_params_clip_grad_norm(c.ps, 1e-3);
        ck_assert(nan ? isnan(norm) : norm == INFINITY);
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        char want[256];
        snprintf(want, sizeof want,
                 "sl_params_clip_grad_norm: the gradient norm is %s: parameter '%s' has a "
                 "non-finite gradient (%s at flat index %d of %s); nothing was scaled",
                 nan ? "nan" : "inf", name, nan ? "nan" : "-inf", at, shape);
        ck_assert_str_eq(sl_error_message(), want);
        sl_error_clear();
        for (int i = 0; i < 4; i++) /* nothing scaled, although the norm is above 1e-3 */
            if (!(nan && i == at))
                ck_assert_double_eq(sl_get(c.w->grad, i),
                                    dt == SL_F32 ? (float)GW[1][i] : GW[1][i]);

        ck_assert(!sl_optim_step(opt, LRS[1]));
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        snprintf(want, sizeof want,
                 "sl_optim_step: parameter '%s' has a non-finite gradient (%s at flat index %d "
                 "of %s); nothing was updated",
                 name, nan ? "nan" : "-inf", at, shape);
        ck_assert_str_eq(sl_error_message(), want);
        sl_error_clear();
        assert_bytes(c.w, w);
        assert_bytes(c.b, b);
        for (int i = 0; i < opt->n_state; i++) assert_bytes(opt->state[i].t, state[i]);
        ck_assert_int_eq(sl_optim_steps(opt), 1);

        set_grads(&c, 1); /* repaired: the step goes on from where it was */
        ck_assert(sl_optim_step(opt, LRS[1]));
        ck_assert_int_eq(sl_optim_steps(opt), 2);
        free(w);
        free(b);
        for (int i = 0; i < opt->n_state; i++) free(state[i]);
        sl_optim_free(opt);
        sl_params_free(c.ps);
    }
}
END_TEST

/* The check runs over the thread pool in chunks; the element it names is the first non-finite
 * one in registration order whatever the thread count, and a parameter without a gradient is
 * passed over. */
START_TEST(nonfinite_check_names_the_first_element)
{
    for (int threads = 1; threads <= 2; threads++) {
        sl_set_num_threads(threads);
        sl_params *ps = sl_params_new(SL_F32);
        sl_params_add(ps, "none", sl_shape(5), true); /* no gradient */
        sl_tensor *p = sl_params_add(ps, "p", sl_shape(100003), true);
        sl_tensor *q = sl_params_add(ps, "q", sl_shape(7), true);
        p->grad = sl_zeros(SL_F32, sl_shape(100003));
        q->grad = sl_zeros(SL_F32, sl_shape(7));
        sl_optim *opt = sl_adamw_new(ps, NULL);
        ck_assert(sl_optim_step(opt, 0.1));
        sl_set(q->grad, 0, NAN);
        sl_set(p->grad, 90001, INFINITY);
        sl_set(p->grad, 70001, NAN);
        void *pv = bytes_of(p);
        ck_assert(!sl_optim_step(opt, 0.1));
        ck_assert_str_eq(sl_error_message(),
                         "sl_optim_step: parameter 'p' has a non-finite gradient (nan at flat "
                         "index 70001 of [100003]); nothing was updated");
        sl_error_clear();
        assert_bytes(p, pv);
        sl_set(p->grad, 70001, 0);
        sl_set(p->grad, 90001, 0);
        ck_assert(!sl_optim_step(opt, 0.1));
        ck_assert_str_eq(sl_error_message(),
                         "sl_optim_step: parameter 'q' has a non-finite gradient (nan at flat "
                         "index 0 of [7]); nothing was updated");
        sl_error_clear();
        free(pv);
        sl_optim_free(opt);
        sl_params_free(ps);
    }
}
END_TEST

START_TEST(errors)
{
    ck_assert_ptr_null(sl_adamw_new(NULL, NULL));
    ck_assert_str_eq(sl_error_message(), "sl_adamw_new: registry is NULL");
    two_params c = make_case(SL_F64);
    ck_assert_ptr_null(sl_adamw_new(c.ps, &(sl_adamw_config){.beta1 = 1.0}));
    ck_assert_str_eq(sl_error_message(), "sl_adamw_new: betas (1, 0.95) must lie in [0, 1)");
    ck_assert_ptr_null(sl_adamw_new(c.ps, &(sl_adamw_config){.eps = -1}));
    ck_assert_str_eq(sl_error_message(), "sl_adamw_new: eps -1 must be finite and > 0");
    ck_assert_ptr_null(sl_adamw_new(c.ps, &(sl_adamw_config){.weight_decay = NAN}));
    ck_assert_str_eq(sl_error_message(), "sl_adamw_new: weight_decay nan must be finite and >= 0");
    ck_assert_ptr_null(sl_sgd_new(c.ps, 1.5, 0));
    ck_assert_str_eq(sl_error_message(), "sl_sgd_new: momentum 1.5 must lie in [0, 1)");
    ck_assert_ptr_null(sl_sgd_new(NULL, 0.9, 0));
    ck_assert_str_eq(sl_error_message(), "sl_sgd_new: registry is NULL");
    ck_assert(!sl_optim_step(NULL, 0.1));
    ck_assert_str_eq(sl_error_message(), "sl_optim_step: optimizer is NULL");

    sl_optim *opt = sl_adamw_new(c.ps, NULL);
    set_grads(&c, 0);
    ck_assert(!sl_optim_step(opt, NAN));
    ck_assert_str_eq(sl_error_message(),
                     "sl_optim_step: learning rate nan must be finite and >= 0");
    ck_assert(!sl_optim_step(opt, -1));
    /* A gradient of the wrong shape: an error, and nothing is updated (w comes first). */
    c.b->grad = sl_zeros(SL_F64, sl_shape(3));
    ck_assert(!sl_optim_step(opt, 0.1));
    ck_assert_str_eq(sl_error_message(),
                     "sl_optim_step: parameter 'b' f64 [2] has a gradient f64 [3] that does not "
                     "match it (or one of them is not contiguous)");
    for (int i = 0; i < 4; i++) ck_assert_double_eq(sl_get(c.w, i), W0[i]);
    ck_assert_int_eq(sl_optim_steps(opt), 0);
    /* A parameter added after the optimizer was made. */
    c.b->grad = NULL;
    sl_params_add(c.ps, "late", sl_shape(1), true);
    ck_assert(!sl_optim_step(opt, 0.1));
    ck_assert_str_eq(sl_error_message(),
                     "sl_optim_step: the registry has 3 parameters, the optimizer was made for 2 "
                     "(make the optimizer after the model)");
    sl_optim_free(opt);
    sl_optim_free(NULL);
    sl_params_free(c.ps);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, adamw_matches_hand_and_torch);
    tu_add_test(s, tc, sgd_matches_hand_and_torch);
    tu_add_test(s, tc, weight_decay_only_on_decay_params);
    tu_add_test(s, tc, params_without_grad_are_skipped);
    tu_add_test(s, tc, step_allocates_nothing);
    tu_add_test(s, tc, adamw_f32_vectors_and_tail);
    tu_add_test(s, tc, thread_count_does_not_change_results);
    tu_add_test(s, tc, training_reduces_the_loss);
    tu_add_test(s, tc, schedules);
    tu_add_test(s, tc, nonfinite_gradient_changes_nothing);
    tu_add_test(s, tc, nonfinite_check_names_the_first_element);
    tu_add_test(s, tc, errors);
    tu_every_isa();
    return tu_run(s);
}
