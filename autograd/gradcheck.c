/* autograd/gradcheck.c — the analytic gradient against central differences in float64.
 *
 * A non-scalar output y is reduced to L = sum(w * y) with fixed random weights w: backward with
 * grad_out = w gives the analytic dL/dx, and (L(x + eps) - L(x - eps)) / 2 eps the numeric one,
 * one input element at a time. A random w catches an error anywhere in the Jacobian (a bug
 * that cancels against one particular w has probability zero). */
#include "internal.h"

#include <math.h>

enum { MAX_INPUTS = 64 };

typedef struct {
    sl_gradcheck_fn fn;
    sl_tensor *const *inputs;
    int n;
    void *user;
    sl_arena *scratch;
} call_ctx;

/* One evaluation in the scratch arena (reset first). */
static sl_tensor *call(call_ctx *c)
{
    sl_arena_reset(c->scratch);
    return c->fn(c->inputs, c->n, c->user);
}

/* L = sum(w * y) in double. */
static double weighted_sum(const sl_tensor *y, const double *w)
{
    double s = 0;
    int64_t n = sl_numel(y);
    for (int64_t i = 0; i < n; i++) s += w[i] * sl_get(y, i);
    return s;
}

/* Runs forward and backward with grad_out = w; copies every checked input's gradient into
 * grads[i] (numel doubles, zeros where no gradient flowed). */
static bool analytic(call_ctx *c, const double *w, double **grads)
{
    for (int i = 0; i < c->n; i++) sl_zero_grad(c->inputs[i]);
    sl_tensor *y = call(c);
    if (!y) return false;
    if (y->requires_grad) {
        sl_tensor *g = sl_empty(y->dtype, y->ndim, y->shape);
        if (!g) return false;
        for (int64_t k = 0; k < sl_numel(y); k++) sl_set(g, k, w[k]);
        if (!sl_backward_ex(y, g, 0)) return false;
    }
    for (int i = 0; i < c->n; i++) {
        if (!grads[i]) continue;
        const sl_tensor *x = c->inputs[i];
        for (int64_t k = 0; k < sl_numel(x); k++) grads[i][k] = x->grad ? sl_get(x->grad, k) : 0;
    }
    return true;
}

bool sl_gradcheck(sl_gradcheck_fn fn, int n_inputs, sl_tensor *const *inputs, void *user,
                  const sl_gradcheck_opts *opts, sl_gradcheck_result *result)
{
    sl_gradcheck_result local;
    sl_gradcheck_result *r = result ? result : &local;
    memset(r, 0, sizeof *r);
    r->input = -1;
    sl_gradcheck_opts o = {1e-6, 1e-5, 1e-3, 1, false};
    if (opts) {
        o = *opts;
        if (!(o.eps > 0)) o.eps = 1e-6; /* 0 (a zeroed struct) picks the defaults */
        if (!(o.atol > 0)) o.atol = 1e-5;
        if (!(o.rtol > 0)) o.rtol = 1e-3;
    }
#define FAIL_ARG(...)                                                                            \
    do {                                                                                         \
        sl_set_error(SL_ERR_ARG, __VA_ARGS__);                                                   \
        snprintf(r->message, sizeof r->message, "%s", sl_error_message());                      \
        return false;                                                                            \
    } while (0)
    if (!fn) FAIL_ARG("sl_gradcheck: fn is NULL");
    if (n_inputs < 1 || !inputs) FAIL_ARG("sl_gradcheck: no inputs");
    if (n_inputs > MAX_INPUTS) FAIL_ARG("sl_gradcheck: %d inputs; at most %d", n_inputs, MAX_INPUTS);
    for (int i = 0; i < n_inputs; i++) {
        const sl_tensor *x = inputs[i];
        if (!x) FAIL_ARG("sl_gradcheck: input %d is NULL", i);
        if (x->requires_grad && x->dtype != SL_F64)
            FAIL_ARG("sl_gradcheck: input %d is %s %s; finite differences need f64 inputs", i,
                     sl_dtype_name(x->dtype), sl_shape_str(x));
        if (x->node)
            FAIL_ARG("sl_gradcheck: input %d %s was made by %s; pass leaves (sl_detach)", i,
                     sl_shape_str(x), x->node->op);
    }
#undef FAIL_ARG

    sl_arena *keep = sl_arena_new(0), *scratch = sl_arena_new(0);
    sl_tensor *saved_grads[MAX_INPUTS] = {0};
    sl_arena *prev_arena = sl_arena_set(NULL); /* to restore exactly, NULL included */
    sl_arena_set(prev_arena);
    bool prev_grad = sl_grad_enabled();
    bool ok = false;
    if (!keep || !scratch) goto done;
    call_ctx c = {fn, inputs, n_inputs, user, scratch};
    /* The caller's accumulated gradients, restored at the end. */
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->grad) {
            sl_arena *prev = sl_arena_set(keep);
            saved_grads[i] = sl_empty(inputs[i]->grad->dtype, inputs[i]->ndim, inputs[i]->shape);
            sl_arena_set(prev);
            if (!saved_grads[i] || !sl_copy_into(saved_grads[i], inputs[i]->grad)) goto done;
        }

    /* The projection weights, shaped like the output. */
    sl_arena_set(scratch);
    sl_set_grad_enabled(false);
    sl_tensor *y0 = call(&c);
    if (!y0) goto done;
    int64_t ny = sl_numel(y0);
    sl_rng rng = sl_rng_seed(o.seed);
    double *w = sl_arena_alloc(keep, sizeof(double) * (size_t)(ny ? ny : 1), 64);
    double *grads[MAX_INPUTS] = {0}, *grads2[MAX_INPUTS] = {0};
    if (!w) goto done;
    for (int64_t k = 0; k < ny; k++) w[k] = ny == 1 ? 1.0 : sl_rng_normal(&rng);
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]->requires_grad) continue;
        size_t bytes = sizeof(double) * (size_t)(sl_numel(inputs[i]) + 1);
        grads[i] = sl_arena_alloc(keep, bytes, 64);
        grads2[i] = sl_arena_alloc(keep, bytes, 64);
        if (!grads[i] || !grads2[i]) goto done;
    }

    /* Analytic, twice. */
    sl_set_grad_enabled(true);
    if (!analytic(&c, w, grads) || !analytic(&c, w, grads2)) goto done;
    r->repeat_ok = true;
    for (int i = 0; i < n_inputs; i++)
        if (grads[i])
            r->repeat_ok &= !memcmp(grads[i], grads2[i], sizeof(double) * (size_t)sl_numel(inputs[i]));

    /* Numeric, element by element, with nothing recorded. */
    sl_set_grad_enabled(false);
    r->excess = -INFINITY;
    for (int i = 0; i < n_inputs; i++) {
        if (!grads[i]) continue;
        sl_tensor *x = inputs[i];
        for (int64_t k = 0; k < sl_numel(x); k++) {
            double orig = sl_get(x, k);
            sl_set(x, k, orig + o.eps);
            sl_tensor *yp = call(&c);
            double lp = yp ? weighted_sum(yp, w) : NAN;
            sl_set(x, k, orig - o.eps);
            sl_tensor *ym = call(&c);
            double lm = ym ? weighted_sum(ym, w) : NAN;
            sl_set(x, k, orig);
            if (!yp || !ym) goto done;
            double num = (lp - lm) / (2 * o.eps), ana = grads[i][k];
            double excess = fabs(ana - num) - (o.atol + o.rtol * fabs(num));
            if (isnan(excess)) excess = INFINITY;
            if (excess > r->excess) {
                r->excess = excess;
                r->input = i;
                r->index = k;
                r->analytic = ana;
                r->numeric = num;
            }
        }
    }
    ok = r->excess <= 0 && r->repeat_ok;
    if (r->input < 0) {
        snprintf(r->message, sizeof r->message, "sl_gradcheck: no input requires grad");
        ok = false;
    } else {
        snprintf(r->message, sizeof r->message,
                 "sl_gradcheck: %s: worst element: input %d %s, flat index %lld: analytic %.10g, "
                 "numeric %.10g (|diff| %.3g, allowed %.3g)%s",
                 ok ? "ok" : "FAILED", r->input, sl_shape_str(inputs[r->input]),
                 (long long)r->index, r->analytic, r->numeric, fabs(r->analytic - r->numeric),
                 o.atol + o.rtol * fabs(r->numeric),
                 r->repeat_ok ? "" : "; a second backward gave different gradients");
    }
    if (!ok && !o.quiet) fprintf(stderr, "%s\n", r->message);
done:
    if (!ok && r->message[0] == '\0')
        snprintf(r->message, sizeof r->message, "sl_gradcheck: the function failed: %s",
                 sl_error_message());
    sl_set_grad_enabled(prev_grad);
    sl_arena_set(prev_arena);
    /* The inputs' grads live in their own arenas: give them back the caller's values. */
    for (int i = 0; i < n_inputs; i++) {
        if (saved_grads[i]) sl_copy_into(inputs[i]->grad, saved_grads[i]);
        else sl_zero_grad(inputs[i]);
    }
    sl_arena_free(scratch);
    sl_arena_free(keep);
    r->ok = ok;
    return ok;
}
