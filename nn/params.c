/* nn/params.c — the parameter registry: named leaves in a long-lived arena.
 *
 * The registry owns one arena. Parameters, their gradients (autograd allocates a leaf's
 * gradient in the leaf's own arena) and the module structs all live there, so a model is
 * freed in one call and a training step's arena can be reset without touching any of it.
 * The entries live in the arena too; only the array of pointers to them is on the heap,
 * growing by doubling while a model is built.
 */
#include "internal.h"

#include <math.h>

struct sl_params {
    sl_dtype dtype;
    sl_arena *arena;
    sl_param **items; /* count entries (each in the arena, so pointers stay valid), in order */
    int count, cap;
    /* The configuration pairs (sl_params_set_config): strings in the arena, n_config of them
     * in the order first set; the two arrays of pointers on the heap. */
    const char **config_keys, **config_values;
    int n_config, cap_config;
};

sl_params *sl_params_new(sl_dtype dtype)
{
    if (dtype != SL_F32 && dtype != SL_F64)
        return SL_FAIL(SL_ERR_DTYPE, "sl_params_new: parameters must be f32 or f64, not %s",
                       sl_dtype_name(dtype));
    sl_params *ps = sl__malloc(sizeof *ps);
    if (!ps) return SL_FAIL(SL_ERR_OOM, "sl_params_new: out of memory");
    *ps = (sl_params){.dtype = dtype};
    ps->arena = sl_arena_new(0);
    if (!ps->arena) {
        sl__free(ps);
        return NULL;
    }
    return ps;
}

void sl_params_free(sl_params *ps)
{
    if (!ps) return;
    sl_arena_free(ps->arena);
    sl__free(ps->items);
    sl__free(ps->config_keys);
    sl__free(ps->config_values);
    sl__free(ps);
}

sl_dtype sl_params_dtype(const sl_params *ps) { return ps ? ps->dtype : SL_F32; }

sl_arena *sl_params_arena(sl_params *ps) { return ps ? ps->arena : NULL; }

static const sl_param *lookup(const sl_params *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (!strcmp(ps->items[i]->name, name)) return ps->items[i];
    return NULL;
}

sl_tensor *sl_params_add(sl_params *ps, const char *name, int ndim, const int64_t *shape,
                         bool decay)
{
    if (!ps) return SL_FAIL(SL_ERR_ARG, "sl_params_add: registry is NULL");
    if (!name || !name[0]) return SL_FAIL(SL_ERR_ARG, "sl_params_add: empty parameter name");
    if (strlen(name) >= SL_PARAM_NAME_MAX)
        return SL_FAIL(SL_ERR_ARG, "sl_params_add: name '%s' is longer than %d characters", name,
                       SL_PARAM_NAME_MAX - 1);
    if (lookup(ps, name))
        return SL_FAIL(SL_ERR_ARG, "sl_params_add: a parameter named '%s' already exists", name);
    if (ps->count == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 32;
        sl_param **items = sl__realloc(ps->items, sizeof *items * (size_t)cap);
        if (!items) return SL_FAIL(SL_ERR_OOM, "sl_params_add: out of memory");
        ps->items = items;
        ps->cap = cap;
    }
    sl_arena *prev = sl_arena_set(ps->arena);
    sl_tensor *t = sl_zeros(ps->dtype, ndim, shape);
    sl_param *p = t ? sl_arena_alloc(ps->arena, sizeof *p, 16) : NULL;
    sl_arena_set(prev);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    t->name = p->name;
    t->requires_grad = true;
    ps->items[ps->count++] = p;
    p->value = t;
    p->decay = decay;
    return t;
}

int sl_params_count(const sl_params *ps) { return ps ? ps->count : 0; }

int64_t sl_params_numel(const sl_params *ps)
{
    int64_t n = 0;
    for (int i = 0; ps && i < ps->count; i++) n += sl_numel(ps->items[i]->value);
    return n;
}

const sl_param *sl_params_at(const sl_params *ps, int i)
{
    if (!ps) return SL_FAIL(SL_ERR_ARG, "sl_params_at: registry is NULL");
    if (i < 0 || i >= ps->count)
        return SL_FAIL(SL_ERR_INDEX, "sl_params_at: index %d out of range for %d parameters", i,
                       ps->count);
    return ps->items[i];
}

sl_tensor *sl_params_find(const sl_params *ps, const char *name)
{
    if (!ps || !name) return SL_FAIL(SL_ERR_ARG, "sl_params_find: registry or name is NULL");
    const sl_param *p = lookup(ps, name);
    return p ? p->value : NULL; /* absent is an answer, not an error */
}

/* ---------------------------------------------------------------- configuration */

/* A copy of s in the registry's arena. */
static const char *arena_strdup(sl_params *ps, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = sl_arena_alloc(ps->arena, n, 1);
    if (c) memcpy(c, s, n);
    return c;
}

static int config_index(const sl_params *ps, const char *key)
{
    for (int i = 0; i < ps->n_config; i++)
        if (!strcmp(ps->config_keys[i], key)) return i;
    return -1;
}

bool sl_params_set_config(sl_params *ps, const char *key, const char *value)
{
    static const char *op = "sl_params_set_config";
    if (!ps || !key || !value)
        return sl_set_error(SL_ERR_ARG, "%s: registry, key or value is NULL", op);
    if (!key[0]) return sl_set_error(SL_ERR_ARG, "%s: empty key", op);
    if (!strncmp(key, "optim.", 6) || !strcmp(key, "__metadata__"))
        return sl_set_error(SL_ERR_ARG,
                            "%s: key '%s' is reserved (the prefix 'optim.' is the "
                            "optimizer's)",
                            op, key);
    int i = config_index(ps, key);
    const char *v = arena_strdup(ps, value);
    if (!v) return false;
    if (i >= 0) {
        ps->config_values[i] = v;
        return true;
    }
    const char *k = arena_strdup(ps, key);
    if (!k) return false;
    if (ps->n_config == ps->cap_config) {
        int cap = ps->cap_config ? 2 * ps->cap_config : 16;
        const char **keys = sl__realloc(ps->config_keys, sizeof *keys * (size_t)cap);
        if (!keys) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
        ps->config_keys = keys;
        const char **values = sl__realloc(ps->config_values, sizeof *values * (size_t)cap);
        if (!values) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
        ps->config_values = values;
        ps->cap_config = cap;
    }
    ps->config_keys[ps->n_config] = k;
    ps->config_values[ps->n_config++] = v;
    return true;
}

const char *sl_params_config(const sl_params *ps, const char *key)
{
    int i = ps && key ? config_index(ps, key) : -1;
    return i >= 0 ? ps->config_values[i] : NULL;
}

int sl_params_config_count(const sl_params *ps) { return ps ? ps->n_config : 0; }

bool sl_params_config_at(const sl_params *ps, int i, const char **key, const char **value)
{
    if (!ps || i < 0 || i >= ps->n_config)
        return sl_set_error(SL_ERR_INDEX,
                            "sl_params_config_at: index %d out of range for %d "
                            "pairs",
                            i, ps ? ps->n_config : 0);
    if (key) *key = ps->config_keys[i];
    if (value) *value = ps->config_values[i];
    return true;
}

/* ---------------------------------------------------------------- copies */

bool sl_params_copy(sl_params *dst, const sl_params *src)
{
    static const char *op = "sl_params_copy";
    if (!dst || !src) return sl_set_error(SL_ERR_ARG, "%s: registry is NULL", op);
    /* every check first, so that a mismatch leaves dst as it was: the models' configurations
     * (where both record a key, the values must agree, as when loading a checkpoint), then the
     * parameters */
    for (int i = 0; i < dst->n_config; i++) {
        const char *theirs = sl_params_config(src, dst->config_keys[i]);
        if (theirs && strcmp(theirs, dst->config_values[i]))
            return sl_set_error(SL_ERR_ARG,
                                "%s: the models differ: %s is %s in the source and %s in the "
                                "destination",
                                op, dst->config_keys[i], theirs, dst->config_values[i]);
    }
    for (int i = 0; i < dst->count; i++) {
        const sl_param *p = dst->items[i], *q = lookup(src, p->name);
        if (!q)
            return sl_set_error(SL_ERR_ARG,
                                "%s: parameter '%s' %s of the destination is not in the source", op,
                                p->name, sl_shape_str(p->value));
        if (!sl__same_shape(p->value, q->value))
            return sl_set_error(SL_ERR_ARG,
                                "%s: parameter '%s' is %s in the source and %s in the "
                                "destination",
                                op, p->name, sl_shape_str(q->value), sl_shape_str(p->value));
    }
    for (int i = 0; i < src->count; i++) /* one the destination lacks: name the first */
        if (!lookup(dst, src->items[i]->name))
            return sl_set_error(SL_ERR_ARG,
                                "%s: parameter '%s' %s of the source is not in the destination", op,
                                src->items[i]->name, sl_shape_str(src->items[i]->value));
    if (dst == src) return true;
    for (int i = 0; i < dst->count; i++)
        if (!sl_copy_into(dst->items[i]->value, lookup(src, dst->items[i]->name)->value))
            return false;
    return true;
}

/* ---------------------------------------------------------------- gradients */

/* The gradients' bytes as one range, zeroed in pieces of ZERO_PIECE over the pool: a model's
 * gradients are megabytes (12.9 MB for the GPT example), which one thread zeroed alone. */
enum { ZERO_PIECE = 1 << 16 };

static void zero_pieces(void *ctx, int64_t p0, int64_t p1)
{
    const sl_params *ps = ctx;
    int64_t lo = p0 * ZERO_PIECE, hi = p1 * ZERO_PIECE, at = 0; /* bytes, over all gradients */
    for (int i = 0; i < ps->count && at < hi; i++) {
        const sl_tensor *g = ps->items[i]->value->grad;
        if (!g) continue;
        const int64_t n = sl_numel(g) * (int64_t)sl_dtype_size(g->dtype);
        const int64_t a = lo > at ? lo : at, b = hi < at + n ? hi : at + n;
        if (a < b) memset((char *)sl_ptr(g) + (a - at), 0, (size_t)(b - a));
        at += n;
    }
}

void sl_params_zero_grad(sl_params *ps)
{
    if (!ps) return;
    int64_t bytes = 0;
    for (int i = 0; i < ps->count; i++) {
        sl_tensor *g = ps->items[i]->value->grad;
        if (!g) continue;
        bytes += sl_numel(g) * (int64_t)sl_dtype_size(g->dtype);
        sl__bump(g); /* a write like sl_fill's: a node that saved g for its backward sees it */
    }
    sl_parallel_for((bytes + ZERO_PIECE - 1) / ZERO_PIECE, 8, zero_pieces, ps);
}

/* Gradients are contiguous buffers made by autograd (or absent: no backward reached them). */
static double grad_sum_squares(const sl_tensor *g)
{
    int64_t n = sl_numel(g);
    double s = 0;
    if (g->dtype == SL_F32) {
        const float *p = sl_ptr(g);
        for (int64_t i = 0; i < n; i++) s += (double)p[i] * p[i];
    } else {
        const double *p = sl_ptr(g);
        for (int64_t i = 0; i < n; i++) s += p[i] * p[i];
    }
    return s;
}

static void grad_scale(sl_tensor *g, double c)
{
    int64_t n = sl_numel(g);
    if (g->dtype == SL_F32) {
        float *p = sl_ptr(g);
        for (int64_t i = 0; i < n; i++) p[i] = (float)(p[i] * c);
    } else {
        double *p = sl_ptr(g);
        for (int64_t i = 0; i < n; i++) p[i] *= c;
    }
    sl__bump(g);
}

/* The error for a non-finite norm: the first non-finite gradient element, or an overflow. */
static void report_nonfinite(const sl_params *ps, double norm)
{
    for (int i = 0; i < ps->count; i++) {
        const sl_tensor *g = ps->items[i]->value->grad;
        for (int64_t k = 0, n = g ? sl_numel(g) : 0; k < n; k++) {
            double v = sl_get(g, k);
            if (isfinite(v)) continue;
            sl_set_error(SL_ERR_STATE,
                         "sl_params_clip_grad_norm: the gradient norm is %g: parameter '%s' has "
                         "a non-finite gradient (%g at flat index %lld of %s); nothing was "
                         "scaled",
                         norm, ps->items[i]->name, v, (long long)k, sl_shape_str(g));
            return;
        }
    }
    sl_set_error(SL_ERR_STATE,
                 "sl_params_clip_grad_norm: the gradient norm overflowed to %g (every gradient "
                 "is finite, their squares' sum is not); nothing was scaled",
                 norm);
}

/* norm = sqrt(sum over every gradient element of g^2), summed in double. As in PyTorch's
 * clip_grad_norm_, gradients are scaled by max_norm / (norm + 1e-6) when that is below 1.
 * A non-finite norm is returned as it is, with an error, and nothing is scaled. */
double sl_params_clip_grad_norm(sl_params *ps, double max_norm)
{
    if (!ps) return sl_set_error(SL_ERR_ARG, "sl_params_clip_grad_norm: registry is NULL"), NAN;
    if (!(max_norm > 0))
        return sl_set_error(SL_ERR_ARG, "sl_params_clip_grad_norm: max_norm %g must be > 0",
                            max_norm),
               NAN;
    double ss = 0;
    for (int i = 0; i < ps->count; i++)
        if (ps->items[i]->value->grad) ss += grad_sum_squares(ps->items[i]->value->grad);
    double norm = sqrt(ss);
    if (!isfinite(norm)) {
        report_nonfinite(ps, norm);
        return norm;
    }
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1)
        for (int i = 0; i < ps->count; i++)
            if (ps->items[i]->value->grad) grad_scale(ps->items[i]->value->grad, coef);
    return norm;
}

bool sl_init_normal(sl_tensor *t, sl_rng *rng, double std)
{
    if (!t) return sl__null_arg("sl_init_normal", "t");
    if (!sl__check_live("sl_init_normal", t, "t")) return false;
    if (!rng) return sl_set_error(SL_ERR_ARG, "sl_init_normal: rng is NULL");
    if (!sl__check_float("sl_init_normal", t)) return false;
    if (!(std >= 0) || !isfinite(std))
        return sl_set_error(SL_ERR_ARG, "sl_init_normal: std %g must be finite and >= 0", std);
    /* Row-major order, one draw per element: the same values for a seed on every machine. */
    int64_t n = sl_numel(t);
    if (!sl_is_contiguous(t)) {
        for (int64_t i = 0; i < n; i++) sl_set(t, i, std * sl_rng_normal(rng));
    } else if (t->dtype == SL_F32) {
        float *p = sl_ptr(t);
        for (int64_t i = 0; i < n; i++) p[i] = (float)(std * sl_rng_normal(rng));
    } else {
        double *p = sl_ptr(t);
        for (int64_t i = 0; i < n; i++) p[i] = std * sl_rng_normal(rng);
    }
    sl__bump(t);
    return true;
}
