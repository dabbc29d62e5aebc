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
#include "internal.h"
#include "optim_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

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

typedef struct {
    void *p, *g, *m, *v; /* parameter, gradient, first / second moment (or momentum buffer) */
    double lr, decay;    /* decay: the factor (1 - lr * wd) for AdamW, wd for SGD */
    double beta1, beta2, eps, step_size, bc2_sqrt; /* AdamW */
    double momentum;                               /* SGD; 0 means no buffer */
} update_args;

/* AdamW, torch.optim.AdamW's single-tensor algorithm, per element:
 *     p  = p * (1 - lr wd)                       decoupled decay, before the moment update
 *     m  = b1 m + (1 - b1) g
 *     v  = b2 v + (1 - b2) g^2
 *     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat, vhat the bias-corrected moments.
 *
 * f32 parameters run 8 at a time in vectors of doubles (the tail of a range zero-padded into
 * one more vector, so that every element goes through the same instructions wherever a chunk
 * boundary falls: the results do not depend on the thread count). f64 stays scalar: it is the
 * reference precision. */
typedef double vd8 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));

/* sqrt lane by lane, correctly rounded (as sqrt() is), in vector instructions where the build
 * has them: libm's sqrt keeps errno, which stops the compiler vectorising it. */
static inline vd8 vsqrt8(vd8 x)
{
#if defined(__AVX512F__)
    return (vd8)_mm512_sqrt_pd((__m512d)x);
#elif defined(__AVX__)
    __m256d lo, hi;
    memcpy(&lo, &x, sizeof lo);
    memcpy(&hi, (const char *)&x + sizeof lo, sizeof hi);
    lo = _mm256_sqrt_pd(lo);
    hi = _mm256_sqrt_pd(hi);
    memcpy(&x, &lo, sizeof lo);
    memcpy((char *)&x + sizeof lo, &hi, sizeof hi);
    return x;
#else
    for (int k = 0; k < 8; k++) x[k] = sqrt(x[k]);
    return x;
#endif
}

/* The update of 8 f32 elements; p, m, v in place. */
static inline void adamw_vec8(const update_args *a, vf8 *p, vf8 g, vf8 *m, vf8 *v)
{
    vd8 gd = __builtin_convertvector(g, vd8);
    *m = __builtin_convertvector(a->beta1 * __builtin_convertvector(*m, vd8) + (1 - a->beta1) * gd,
                                 vf8);
    *v = __builtin_convertvector(
        a->beta2 * __builtin_convertvector(*v, vd8) + (1 - a->beta2) * gd * gd, vf8);
    vd8 pd = __builtin_convertvector(*p, vd8) * a->decay;
    pd -= a->step_size * __builtin_convertvector(*m, vd8) /
          (vsqrt8(__builtin_convertvector(*v, vd8)) / a->bc2_sqrt + a->eps);
    *p = __builtin_convertvector(pd, vf8);
}

static void adamw_float(void *ctx, int64_t begin, int64_t end)
{
    const update_args *a = ctx;
    float *p = a->p, *m = a->m, *v = a->v;
    const float *g = a->g;
    vf8 pv, gv, mv, vv;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        memcpy(&pv, p + i, sizeof pv);
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&mv, m + i, sizeof mv);
        memcpy(&vv, v + i, sizeof vv);
        adamw_vec8(a, &pv, gv, &mv, &vv);
        memcpy(p + i, &pv, sizeof pv);
        memcpy(m + i, &mv, sizeof mv);
        memcpy(v + i, &vv, sizeof vv);
    }
    if (i < end) { /* the tail, zero-padded */
        size_t bytes = sizeof(float) * (size_t)(end - i);
        pv = gv = mv = vv = (vf8){0};
        memcpy(&pv, p + i, bytes);
        memcpy(&gv, g + i, bytes);
        memcpy(&mv, m + i, bytes);
        memcpy(&vv, v + i, bytes);
        adamw_vec8(a, &pv, gv, &mv, &vv);
        memcpy(p + i, &pv, bytes);
        memcpy(m + i, &mv, bytes);
        memcpy(v + i, &vv, bytes);
    }
}

static void adamw_double(void *ctx, int64_t begin, int64_t end)
{
    const update_args *a = ctx;
    double *p = a->p, *m = a->m, *v = a->v;
    const double *g = a->g;
    for (int64_t i = begin; i < end; i++) {
        double gi = g[i];
        m[i] = a->beta1 * m[i] + (1 - a->beta1) * gi;
        v[i] = a->beta2 * v[i] + (1 - a->beta2) * gi * gi;
        double pi = p[i] * a->decay;
        pi -= a->step_size * m[i] / (sqrt(v[i]) / a->bc2_sqrt + a->eps);
        p[i] = pi;
    }
}

/* SGD, torch.optim.SGD (dampening 0, no Nesterov), per element:
 *     g  = g + wd p                              L2 decay, coupled through the gradient
 *     b  = mu b + g                              (momentum only; b starts at 0, so b_1 = g)
 *     p -= lr b                                  (b is g without momentum) */
#define DEFINE_SGD(T)                                                                            \
    static void sgd_##T(void *ctx, int64_t begin, int64_t end)                                  \
    {                                                                                            \
        const update_args *a = ctx;                                                              \
        T *p = a->p, *b = a->m;                                                                  \
        const T *g = a->g;                                                                       \
        for (int64_t i = begin; i < end; i++) {                                                  \
            double d = g[i] + a->decay * (double)p[i];                                           \
            if (a->momentum != 0) {                                                              \
                d = a->momentum * b[i] + d;                                                      \
                b[i] = (T)d;                                                                     \
                d = b[i];                                                                        \
            }                                                                                    \
            p[i] = (T)(p[i] - a->lr * d);                                                        \
        }                                                                                        \
    }
DEFINE_SGD(float)
DEFINE_SGD(double)

/* ---------------------------------------------------------------- the finiteness check */

/* The gradients as one index space: parameter i's gradient holds positions [ends[i - 1],
 * ends[i]) (none without a gradient). A pass over it in parallel chunks finds the first
 * position whose value is Inf or NaN: each chunk its own first, the smallest kept. */
typedef struct {
    const sl_optim *opt;
    _Atomic int64_t first; /* INT64_MAX: none */
} finite_job;

enum { FINITE_BLOCK = 256 }; /* elements tested together, then searched if one failed */

typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef uint64_t vul4 __attribute__((vector_size(32)));

/* The index in [0, n) of the first non-finite element of a block, or -1: an element is not
 * finite when its exponent bits are all ones. */
static int64_t first_nonfinite(sl_dtype dtype, const void *p, int64_t n)
{
    bool any = false;
    int64_t i = 0;
    if (dtype == SL_F32) {
        const uint32_t *u = p;
        vu8 acc = {0}, e = {0};
        e += 0x7f800000u;
        for (; i + 8 <= n; i += 8) {
            vu8 v;
            memcpy(&v, u + i, sizeof v);
            acc |= (vu8)((v & e) == e);
        }
        for (int k = 0; k < 8; k++) any |= acc[k] != 0;
        for (; i < n; i++) any |= (u[i] & e[0]) == e[0];
    } else {
        const uint64_t *u = p;
        vul4 acc = {0}, e = {0};
        e += UINT64_C(0x7ff0000000000000);
        for (; i + 4 <= n; i += 4) {
            vul4 v;
            memcpy(&v, u + i, sizeof v);
            acc |= (vul4)((v & e) == e);
        }
        for (int k = 0; k < 4; k++) any |= acc[k] != 0;
        for (; i < n; i++) any |= (u[i] & e[0]) == e[0];
    }
    if (!any) return -1;
    for (i = 0; i < n; i++) {
        double v = dtype == SL_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
        if (!isfinite(v)) return i;
    }
    return -1;
}

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
            int64_t k =
                first_nonfinite(g->dtype, (const char *)sl_ptr(g) + (size_t)(b - start) * es, n);
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
    finite_job j = {opt, INT64_MAX};
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
    for (int i = 0; i < n; i++) {
        const sl_param *p = sl_params_at(opt->ps, i);
        sl_tensor *g;
        usable_grad(p, &g);
        if (!g) continue;
        update_args a = {.p = sl_ptr(p->value), .g = sl_ptr(g), .lr = lr};
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
            fn = f32 ? adamw_float : adamw_double;
        } else {
            a.momentum = h[0];
            a.m = a.momentum != 0 ? sl_ptr(opt->state[i].t) : NULL;
            a.decay = p->decay ? h[1] : 0;
            fn = f32 ? sgd_float : sgd_double;
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
