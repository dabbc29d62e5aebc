/* nn/optim.c — AdamW, SGD with momentum, and learning-rate schedules.
 *
 * The state (moments, momentum buffers, per-parameter step counts) is allocated once, when the
 * optimizer is made, in the registry's long-lived arena; a step allocates nothing. Each update
 * is elementwise, so it splits over the thread pool with results that do not depend on the
 * number of threads. Arithmetic is done in double; the state is kept in the parameters' dtype
 * and, as in torch, the update reads the moments as stored.
 *
 * Like torch.optim, a parameter whose gradient was never made (no backward reached it) is
 * skipped: no decay, no moment update, no step count. A gradient that exists but is zero
 * (sl_params_zero_grad keeps the buffers) is an ordinary update, as in torch with
 * zero_grad(set_to_none=False).
 */
#include "optim.h"
#include "optim_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>

enum { PARALLEL_GRAIN = 1 << 14 }; /* elements per chunk: below this, one thread */

const char *sl__optim_kind_name(const sl_optim *opt)
{
    return opt->kind == SL__OPTIM_ADAMW ? "adamw" : "sgd";
}

/* ---------------------------------------------------------------- construction */

/* A state tensor named "<prefix><param name>" in the registry's arena, zeroed. */
static bool add_state(sl_optim *opt, const char *prefix, const sl_param *p, sl_dtype dtype,
                      bool scalar)
{
    sl_arena *arena = sl_params_arena(opt->ps);
    size_t len = strlen(prefix) + strlen(p->name) + 1;
    char *name = sl_arena_alloc(arena, len, 1);
    if (!name) return false;
    snprintf(name, len, "%s%s", prefix, p->name);
    sl_arena *prev = sl_arena_set(arena);
    sl_tensor *t = scalar ? sl_zeros(dtype, 0, NULL) : sl_zeros(dtype, p->value->ndim,
                                                                 p->value->shape);
    sl_arena_set(prev);
    if (!t) return false;
    t->name = name;
    opt->state[opt->n_state++] = (sl__optim_state){name, t};
    return true;
}

static sl_optim *optim_new(const char *op, sl_params *ps, sl__optim_kind kind, int per_param)
{
    if (!ps) return SL_FAIL(SL_ERR_ARG, "%s: registry is NULL", op);
    int n = sl_params_count(ps);
    sl_optim *opt = sl__malloc(sizeof *opt);
    sl__optim_state *state = sl__malloc(sizeof *state * (size_t)(n * per_param + 1));
    int64_t *ends = sl__malloc(sizeof *ends * (size_t)(n + 1));
    if (!opt || !state || !ends) {
        sl__free(opt);
        sl__free(state);
        sl__free(ends);
        return SL_FAIL(SL_ERR_OOM, "%s: out of memory", op);
    }
    *opt = (sl_optim){.kind = kind, .ps = ps, .n_params = n, .state = state, .ends = ends};
    return opt;
}

static void add_hyper(sl_optim *opt, const char *name, double value)
{
    opt->hyper_names[opt->n_hyper] = name;
    opt->hyper[opt->n_hyper++] = value;
}

sl_optim *sl_adamw_new(sl_params *ps, const sl_adamw_config *cfg)
{
    static const char *op = "sl_adamw_new";
    sl_adamw_config c = cfg ? *cfg : (sl_adamw_config){0};
    if (c.beta1 == 0) c.beta1 = 0.9;
    if (c.beta2 == 0) c.beta2 = 0.95;
    if (c.eps == 0) c.eps = 1e-8;
    if (!(c.beta1 >= 0 && c.beta1 < 1) || !(c.beta2 >= 0 && c.beta2 < 1))
        return SL_FAIL(SL_ERR_ARG, "%s: betas (%g, %g) must lie in [0, 1)", op, c.beta1, c.beta2);
    if (!(c.eps > 0) || !isfinite(c.eps))
        return SL_FAIL(SL_ERR_ARG, "%s: eps %g must be finite and > 0", op, c.eps);
    if (!(c.weight_decay >= 0) || !isfinite(c.weight_decay))
        return SL_FAIL(SL_ERR_ARG, "%s: weight_decay %g must be finite and >= 0", op,
                       c.weight_decay);
    sl_optim *opt = optim_new(op, ps, SL__OPTIM_ADAMW, 3);
    if (!opt) return NULL;
    add_hyper(opt, "optim.beta1", c.beta1);
    add_hyper(opt, "optim.beta2", c.beta2);
    add_hyper(opt, "optim.eps", c.eps);
    add_hyper(opt, "optim.weight_decay", c.weight_decay);
    sl_dtype dt = sl_params_dtype(ps);
    for (int i = 0; i < opt->n_params; i++) {
        const sl_param *p = sl_params_at(ps, i);
        if (!add_state(opt, "optim.m.", p, dt, false) ||
            !add_state(opt, "optim.v.", p, dt, false) ||
            !add_state(opt, "optim.step.", p, SL_F64, true)) {
            sl_optim_free(opt);
            return NULL;
        }
    }
    return opt;
}

sl_optim *sl_sgd_new(sl_params *ps, double momentum, double weight_decay)
{
    static const char *op = "sl_sgd_new";
    if (!(momentum >= 0 && momentum < 1))
        return SL_FAIL(SL_ERR_ARG, "%s: momentum %g must lie in [0, 1)", op, momentum);
    if (!(weight_decay >= 0) || !isfinite(weight_decay))
        return SL_FAIL(SL_ERR_ARG, "%s: weight_decay %g must be finite and >= 0", op,
                       weight_decay);
    sl_optim *opt = optim_new(op, ps, SL__OPTIM_SGD, momentum ? 1 : 0);
    if (!opt) return NULL;
    add_hyper(opt, "optim.momentum", momentum);
    add_hyper(opt, "optim.weight_decay", weight_decay);
    for (int i = 0; momentum && i < opt->n_params; i++) {
        if (!add_state(opt, "optim.momentum.", sl_params_at(ps, i), sl_params_dtype(ps), false)) {
            sl_optim_free(opt);
            return NULL;
        }
    }
    return opt;
}

void sl_optim_free(sl_optim *opt)
{
    if (!opt) return;
    sl__free(opt->state); /* the state tensors live in the registry's arena */
    sl__free(opt->ends);
    sl__free(opt);
}

int64_t sl_optim_steps(const sl_optim *opt) { return opt ? opt->steps : 0; }

/* ---------------------------------------------------------------- the update kernels */

/* The running CPU's kernels (optim_isa.c: the updates, whose math is there, and the finiteness
 * check). */
static const sl__optim_kernels *kernels(void) { return SL_ISA_PICK(sl__optim_kernels); }

/* ---------------------------------------------------------------- the finiteness check */

/* The gradients as one index space: parameter i's gradient holds positions [ends[i - 1],
 * ends[i]) (none without a gradient). A pass over it in parallel chunks finds the first
 * position whose value is Inf or NaN: each chunk its own first, the smallest kept. */
typedef struct {
    const sl_optim *opt;
    const sl__optim_kernels *k;
    _Atomic int64_t first; /* INT64_MAX: none */
} finite_job;

enum { FINITE_BLOCK = 256 }; /* elements tested together, then searched if one failed */

static void finite_range(void *ctx, int64_t begin, int64_t end)
{
    finite_job *j = ctx;
    const int64_t *ends = j->opt->ends;
    int lo = 0, hi = j->opt->n_params - 1; /* the parameter holding position begin */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ends[mid] <= begin) lo = mid + 1;
        else hi = mid;
    }
    for (int i = lo; begin < end; i++) {
        int64_t start = i ? ends[i - 1] : 0, stop = ends[i] < end ? ends[i] : end;
        if (stop <= begin) continue; /* no gradient */
        const sl_tensor *g = sl_params_at(j->opt->ps, i)->value->grad;
        size_t es = sl_dtype_size(g->dtype);
        for (int64_t b = begin; b < stop; b += FINITE_BLOCK) {
            int64_t n = stop - b < FINITE_BLOCK ? stop - b : FINITE_BLOCK;
            const char *at = (const char *)sl_ptr(g) + (size_t)(b - start) * es;
            int64_t k = j->k->first_nonfinite(g->dtype, at, n);
            if (k < 0) continue;
            int64_t pos = b + k, seen = atomic_load(&j->first);
            while (pos < seen && !atomic_compare_exchange_weak(&j->first, &seen, pos)) {
            }
            return; /* the rest of the chunk comes after it */
        }
        begin = stop;
    }
}

/* False, naming the parameter and the element, if a gradient holds an Inf or a NaN. */
static bool grads_finite(sl_optim *opt)
{
    int64_t total = 0;
    for (int i = 0; i < opt->n_params; i++) {
        const sl_tensor *g = sl_params_at(opt->ps, i)->value->grad;
        opt->ends[i] = total += g ? sl_numel(g) : 0;
    }
    finite_job j = {opt, kernels(), INT64_MAX};
    if (total) sl_parallel_for(total, PARALLEL_GRAIN, finite_range, &j);
    int64_t pos = atomic_load(&j.first);
    if (pos == INT64_MAX) return true;
    int i = 0;
    while (opt->ends[i] <= pos) i++;
    const sl_param *p = sl_params_at(opt->ps, i);
    int64_t k = pos - (i ? opt->ends[i - 1] : 0);
    return sl_set_error(SL_ERR_STATE,
                        "sl_optim_step: parameter '%s' has a non-finite gradient (%g at flat "
                        "index %lld of %s); nothing was updated",
                        p->name, sl_get(p->value->grad, k), (long long)k, sl_shape_str(p->value));
}

/* ---------------------------------------------------------------- the step */

/* Sets *out to the gradient to use for p, or NULL to skip p (no backward ever reached it).
 * False (with the error set) if the gradient does not fit the parameter. */
static bool usable_grad(const sl_param *p, sl_tensor **out)
{
    sl_tensor *v = p->value, *g = v->grad;
    *out = NULL;
    if (!g) return true;
    if (g->dtype != v->dtype || !sl__same_shape(g, v) || !sl_is_contiguous(g) ||
        !sl_is_contiguous(v))
        return sl_set_error(SL_ERR_STATE,
                            "sl_optim_step: parameter '%s' %s %s has a gradient %s %s that does "
                            "not match it (or one of them is not contiguous)",
                            p->name, sl_dtype_name(v->dtype), sl_shape_str(v),
                            sl_dtype_name(g->dtype), sl_shape_str(g));
    *out = g;
    return true;
}

bool sl_optim_step(sl_optim *opt, double lr)
{
    static const char *op = "sl_optim_step";
    if (!opt) return sl_set_error(SL_ERR_ARG, "%s: optimizer is NULL", op);
    if (!(lr >= 0) || !isfinite(lr))
        return sl_set_error(SL_ERR_ARG, "%s: learning rate %g must be finite and >= 0", op, lr);
    int n = sl_params_count(opt->ps);
    if (n != opt->n_params)
        return sl_set_error(SL_ERR_STATE,
                            "%s: the registry has %d parameters, the optimizer was made for %d "
                            "(make the optimizer after the model)",
                            op, n, opt->n_params);
    /* Check every gradient before changing anything, so a failed step changes nothing. */
    for (int i = 0; i < n; i++) {
        sl_tensor *g;
        if (!usable_grad(sl_params_at(opt->ps, i), &g)) return false;
    }
    if (!grads_finite(opt)) return false;
    bool f32 = sl_params_dtype(opt->ps) == SL_F32;
    const sl__optim_kernels *kern = kernels();
    for (int i = 0; i < n; i++) {
        const sl_param *p = sl_params_at(opt->ps, i);
        sl_tensor *g;
        usable_grad(p, &g);
        if (!g) continue;
        sl__update_args a = {.p = sl_ptr(p->value), .g = sl_ptr(g), .lr = lr};
        const double *h = opt->hyper;
        sl_range_fn fn;
        if (opt->kind == SL__OPTIM_ADAMW) {
            double *step = sl_ptr(opt->state[3 * i + 2].t);
            double t = ++*step;
            a.m = sl_ptr(opt->state[3 * i].t);
            a.v = sl_ptr(opt->state[3 * i + 1].t);
            a.beta1 = h[0];
            a.beta2 = h[1];
            a.eps = h[2];
            a.decay = p->decay ? 1 - lr * h[3] : 1;
            a.step_size = lr / (1 - pow(h[0], t));
            a.bc2_sqrt = sqrt(1 - pow(h[1], t));
            fn = f32 ? kern->adamw_f32 : kern->adamw_f64;
        } else {
            a.momentum = h[0];
            a.m = a.momentum != 0 ? sl_ptr(opt->state[i].t) : NULL;
            a.decay = p->decay ? h[1] : 0;
            fn = f32 ? kern->sgd_f32 : kern->sgd_f64;
        }
        sl_parallel_for(sl_numel(p->value), PARALLEL_GRAIN, fn, &a);
        /* written in place: a backward that kept any of them now fails (tensor.h) */
        sl__bump(p->value);
        int per = opt->n_state / n; /* state tensors per parameter, in parameter order */
        for (int k = 0; k < per; k++) sl__bump(opt->state[per * i + k].t);
    }
    opt->steps++;
    return true;
}

/* ---------------------------------------------------------------- schedules */

double sl_lr_constant(int64_t step, double lr)
{
    if (step < 0)
        return sl_set_error(SL_ERR_ARG, "sl_lr_constant: step %lld is negative", (long long)step),
               NAN;
    return lr;
}

/* For step s (from 0), warmup W and total S:
 *     s <  W:       max_lr * (s + 1) / W             (step 0 already trains; step W-1 = max_lr)
 *     W <= s < S:   min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2
 *     s >= S:       min_lr
 * This is llm.c's schedule. Unlike a warmup that starts at exactly 0 (HuggingFace's
 * get_cosine_schedule_with_warmup), no step is spent with a zero learning rate. */
double sl_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double max_lr,
                           double min_lr)
{
    if (step < 0 || warmup < 0)
        return sl_set_error(SL_ERR_ARG,
                            "sl_lr_warmup_cosine: step %lld and warmup %lld must be >= 0",
                            (long long)step, (long long)warmup),
               NAN;
    if (step < warmup) return max_lr * (double)(step + 1) / (double)warmup;
    if (step >= total) return min_lr;
    double ratio = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(M_PI * ratio));
}
