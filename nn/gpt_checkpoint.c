/* nn/gpt_checkpoint.c — GPT checkpoints: a training or parameter checkpoint (checkpoint.c)
 * whose metadata also holds the model's config under "shortlong.*" keys (mapped field by field
 * in config_keys below) and the dropout RNG state, so that sl_gpt_load can build the model the
 * file describes before loading its weights. */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* sl_gpt_config <-> "__metadata__": every field under a "shortlong." key, as text. */
typedef enum { K_I64, K_INT, K_BOOL, K_DOUBLE, K_U64, K_POS, K_SLOPES } key_kind;
static const struct {
    const char *key;
    key_kind kind;
    size_t off;
} config_keys[] = {
    {"shortlong.vocab_size", K_I64, offsetof(sl_gpt_config, vocab_size)},
    {"shortlong.context", K_I64, offsetof(sl_gpt_config, context)},
    {"shortlong.dim", K_I64, offsetof(sl_gpt_config, dim)},
    {"shortlong.n_layers", K_INT, offsetof(sl_gpt_config, n_layers)},
    {"shortlong.n_heads", K_INT, offsetof(sl_gpt_config, n_heads)},
    {"shortlong.n_kv_heads", K_INT, offsetof(sl_gpt_config, n_kv_heads)},
    {"shortlong.mlp_ratio", K_INT, offsetof(sl_gpt_config, mlp_ratio)},
    {"shortlong.pos", K_POS, offsetof(sl_gpt_config, pos)},
    {"shortlong.t5_buckets", K_INT, offsetof(sl_gpt_config, t5_buckets)},
    {"shortlong.t5_max_distance", K_INT, offsetof(sl_gpt_config, t5_max_distance)},
    {"shortlong.tie_embeddings", K_BOOL, offsetof(sl_gpt_config, tie_embeddings)},
    {"shortlong.fused_qkv", K_BOOL, offsetof(sl_gpt_config, fused_qkv)},
    {"shortlong.dropout", K_DOUBLE, offsetof(sl_gpt_config, dropout)},
    {"shortlong.seed", K_U64, offsetof(sl_gpt_config, seed)},
    {"shortlong.slopes", K_SLOPES, offsetof(sl_gpt_config, slopes)}, /* "fixed" or "learned" */
    {"shortlong.sandwich_dim", K_I64, offsetof(sl_gpt_config, sandwich_dim)},
    {"shortlong.fire_width", K_INT, offsetof(sl_gpt_config, fire_width)},
    {"shortlong.fire_threshold", K_DOUBLE, offsetof(sl_gpt_config, fire_threshold)},
};
enum { N_CONFIG_KEYS = sizeof config_keys / sizeof config_keys[0] };

/* Keys added after the first checkpoints were written: absent, the field keeps 0 (its
 * default), so older files still load. */
static bool optional_key(int k)
{
    return !strcmp(config_keys[k].key, "shortlong.t5_buckets") ||
           !strcmp(config_keys[k].key, "shortlong.t5_max_distance") ||
           !strcmp(config_keys[k].key, "shortlong.slopes") || /* absent: fixed */
           sl__has_prefix(config_keys[k].key, "shortlong.sandwich_") ||
           sl__has_prefix(config_keys[k].key, "shortlong.fire_");
}

static void format_key(int k, const sl_gpt_config *c, char *buf, size_t cap)
{
    const char *f = (const char *)c + config_keys[k].off;
    switch (config_keys[k].kind) {
    case K_I64: snprintf(buf, cap, "%" PRId64, *(const int64_t *)f); break;
    case K_INT: snprintf(buf, cap, "%d", *(const int *)f); break;
    case K_BOOL: snprintf(buf, cap, "%s", *(const bool *)f ? "true" : "false"); break;
    case K_DOUBLE: snprintf(buf, cap, "%.17g", *(const double *)f); break;
    case K_U64: snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)f); break;
    case K_POS: snprintf(buf, cap, "%s", sl_pos_name(*(const sl_pos *)f)); break;
    case K_SLOPES: snprintf(buf, cap, "%s", sl_slopes_name(*(const sl_slopes *)f)); break;
    }
}

static bool parse_key(int k, const char *s, sl_gpt_config *c)
{
    char *f = (char *)c + config_keys[k].off;
    int64_t i;
    switch (config_keys[k].kind) {
    case K_I64: return sl__parse_i64(s, (int64_t *)f);
    case K_INT:
        if (!sl__parse_i64(s, &i) || i < INT32_MIN || i > INT32_MAX) return false;
        *(int *)f = (int)i;
        return true;
    case K_BOOL:
        if (strcmp(s, "true") && strcmp(s, "false")) return false;
        *(bool *)f = !strcmp(s, "true");
        return true;
    case K_DOUBLE: return sl__parse_double(s, (double *)f);
    case K_U64: {
        if (*s < '0' || *s > '9') return false;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end) return false;
        *(uint64_t *)f = v;
        return true;
    }
    case K_POS: return sl_pos_parse(s, (sl_pos *)f);
    case K_SLOPES: return sl_slopes_parse(s, (sl_slopes *)f);
    }
    return false;
}

/* Whether key k changes what the parameters of config c mean (so that a file saved with
 * another value must not load into them): not the seed or the dropout rate, the context only
 * for learned positions (the others do not depend on it), T5's settings only for T5. */
static bool architectural_key(int k, const sl_gpt_config *c)
{
    const char *key = config_keys[k].key;
    if (!strcmp(key, "shortlong.seed") || !strcmp(key, "shortlong.dropout")) return false;
    if (!strcmp(key, "shortlong.context")) return c->pos == SL_POS_LEARNED;
    if (sl__has_prefix(key, "shortlong.t5_")) return c->pos == SL_POS_T5;
    if (sl__has_prefix(key, "shortlong.sandwich_")) return c->pos == SL_POS_SANDWICH;
    if (sl__has_prefix(key, "shortlong.fire_")) return c->pos == SL_POS_FIRE;
    return true;
}

bool sl__gpt_record_config(sl_params *ps, const sl_gpt_config *c)
{
    char buf[80];
    bool ok = sl_params_set_config(ps, "shortlong.model", "gpt");
    for (int k = 0; ok && k < N_CONFIG_KEYS; k++) {
        if (!architectural_key(k, c)) continue;
        format_key(k, c, buf, sizeof buf);
        ok = sl_params_set_config(ps, config_keys[k].key, buf);
    }
    return ok;
}

static bool put_gpt_meta(const char *op, json_t *meta, const sl_gpt *m)
{
    char buf[80];
    bool ok = sl__ckpt_meta_put(op, meta, "shortlong.model", "gpt");
    for (int k = 0; ok && k < N_CONFIG_KEYS; k++) {
        format_key(k, &m->cfg, buf, sizeof buf);
        ok = sl__ckpt_meta_put(op, meta, config_keys[k].key, buf);
    }
    /* The dropout stream, so that training resumes with the same masks. */
    sl_rng_to_hex(&m->rng, buf);
    return ok && sl__ckpt_meta_put(op, meta, "shortlong.rng", buf);
}

static bool read_gpt_config(const sl__ckpt *ck, sl_gpt_config *cfg, sl_rng *rng)
{
    const char *model = sl__ckpt_meta(ck, "shortlong.model");
    if (!model || strcmp(model, "gpt"))
        return sl__ckpt_fail(
            ck,
            "not a shortlong GPT checkpoint (metadata 'shortlong.model' is %s%s%s, "
            "expected 'gpt')",
            model ? "'" : "", model ? model : "absent", model ? "'" : "");
    *cfg = (sl_gpt_config){0};
    for (int k = 0; k < N_CONFIG_KEYS; k++) {
        const char *s = sl__ckpt_meta(ck, config_keys[k].key);
        if (!s && optional_key(k)) continue;
        if (!s) return sl__ckpt_fail(ck, "missing config key '%s'", config_keys[k].key);
        if (!parse_key(k, s, cfg))
            return sl__ckpt_fail(ck, "config key '%s' has the value '%s', which is not a valid %s",
                                 config_keys[k].key, s,
                                 config_keys[k].kind == K_BOOL     ? "boolean (true or false)"
                                 : config_keys[k].kind == K_POS    ? "positional method"
                                 : config_keys[k].kind == K_SLOPES ? "slopes (fixed or learned)"
                                 : config_keys[k].kind == K_DOUBLE ? "number"
                                                                   : "integer");
    }
    const char *s = sl__ckpt_meta(ck, "shortlong.rng");
    if (!sl_rng_from_hex(s, rng))
        return sl__ckpt_fail(ck, "config key 'shortlong.rng' is %s%s%s, expected 64 hex digits",
                             s ? "'" : "", s ? s : "absent", s ? "'" : "");
    return true;
}

bool sl_gpt_read_config(const char *path, sl_gpt_config *cfg)
{
    if (!cfg) return sl_set_error(SL_ERR_ARG, "sl_gpt_read_config: cfg is NULL");
    sl__ckpt ck;
    sl_rng rng;
    bool ok = sl__ckpt_open(&ck, "sl_gpt_read_config", path) && read_gpt_config(&ck, cfg, &rng);
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_gpt_save(const char *path, const sl_gpt *m, const sl_optim *opt, const sl_meta *extra,
                 int n_extra)
{
    static const char *op = "sl_gpt_save";
    if (!m) return sl_set_error(SL_ERR_ARG, "%s: model is NULL", op);
    json_t *meta = json_object();
    if (!meta) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    bool ok = put_gpt_meta(op, meta, m) && sl__put_user_meta(op, meta, extra, n_extra) &&
              sl__save_model(op, path, m->params, opt, meta);
    json_decref(meta);
    return ok;
}

/* Matching the tensors a config implies against the file's header. */
typedef struct {
    const sl__ckpt *ck;
    sl_dtype dtype;
    bool convert;
    int matched;
} spec_match;

static bool match_spec(void *ctx, const char *name, int ndim, const int64_t *shape)
{
    spec_match *sm = ctx;
    const sl__ckpt *ck = sm->ck;
    const sl__ckpt_entry *e = NULL;
    for (int i = 0; i < ck->n && !e; i++)
        if (!strcmp(ck->entries[i].name, name)) e = &ck->entries[i];
    if (!e)
        return sl__ckpt_fail(ck, "its config implies a tensor '%s' %s that the file lacks", name,
                             sl__dims_str(ndim, shape));
    if (e->ndim != ndim || memcmp(e->shape, shape, sizeof *shape * (size_t)ndim))
        return sl__ckpt_fail(ck, "tensor '%s' has shape %s in the file, its config implies %s",
                             name, sl__dims_str(e->ndim, e->shape), sl__dims_str(ndim, shape));
    if (e->dtype != sm->dtype && !(sm->convert && e->dtype != SL_I32))
        return sl__ckpt_fail(ck, "tensor '%s' is %s in the file, the model expects %s%s", name,
                             e->dtype == SL_F32   ? "F32"
                             : e->dtype == SL_F64 ? "F64"
                                                  : "I32",
                             sm->dtype == SL_F32 ? "F32" : "F64",
                             e->dtype != SL_I32 ? " (sl_load_opts.convert_dtype converts it)" : "");
    sm->matched++;
    return true;
}

/* Stops the walk (false) at the parameter called ctx. */
static bool is_not(void *ctx, const char *name, int ndim, const int64_t *shape)
{
    (void)ndim, (void)shape;
    return strcmp(name, ctx) != 0;
}

/* The file must hold exactly the parameters cfg (resolved) implies, by name, shape and dtype
 * (and optimizer state, "optim.*", which is skipped), before anything is allocated for the
 * model: so the model's size is bounded by the file's. */
static bool check_tensors(const sl__ckpt *ck, const sl_gpt_config *cfg, sl_dtype dtype,
                          bool convert)
{
    spec_match sm = {ck, dtype, convert, 0};
    if (!sl__gpt_each_param(cfg, match_spec, &sm)) return false;
    int in_file = 0;
    for (int i = 0; i < ck->n; i++) in_file += !sl__has_prefix(ck->entries[i].name, "optim.");
    if (in_file == sm.matched) return true; /* names in the header are unique */
    for (int i = 0; i < ck->n; i++) {
        const char *name = ck->entries[i].name;
        if (!sl__has_prefix(name, "optim.") && sl__gpt_each_param(cfg, is_not, (void *)name))
            return sl__ckpt_fail(ck,
                                 "unexpected tensor '%s' (its config implies no tensor of "
                                 "that name)",
                                 name);
    }
    return true;
}

sl_gpt *sl_gpt_load_ex(const char *path, sl_dtype dtype, const sl_load_opts *opts)
{
    static const char *op = "sl_gpt_load";
    sl__ckpt ck;
    sl_gpt_config file_cfg, cfg;
    sl_rng rng;
    if (dtype != SL_F32 && dtype != SL_F64)
        return SL_FAIL(SL_ERR_DTYPE, "%s: parameters must be f32 or f64, not %s", op,
                       sl_dtype_name(dtype));
    if (!sl__ckpt_open(&ck, op, path) || !read_gpt_config(&ck, &file_cfg, &rng)) {
        sl__ckpt_close(&ck);
        return NULL;
    }
    /* The config comes from an untrusted file: every setting is checked, and the tensors it
     * implies are compared with the file's, before anything is built. */
    if (!sl__gpt_config_resolve(op, &file_cfg, &cfg)) {
        char why[512]; /* the resolver's message without its "sl_gpt_load: " */
        const char *msg = sl_error_message();
        snprintf(why, sizeof why, "%s", sl__has_prefix(msg, op) ? msg + strlen(op) + 2 : msg);
        sl__ckpt_fail(&ck, "its config does not make a model: %s", why);
        sl__ckpt_close(&ck);
        return NULL;
    }
    if (!check_tensors(&ck, &cfg, dtype, opts && opts->convert_dtype)) {
        sl__ckpt_close(&ck);
        return NULL;
    }
    sl_gpt *m = sl_gpt_new(&cfg, dtype);
    if (!m) {
        sl__ckpt_close(&ck);
        return NULL;
    }
    /* The registry's configuration is the file's own: nothing to compare. */
    sl_load_opts o = opts ? *opts : (sl_load_opts){0};
    o.ignore_config = true;
    bool ok = sl__load_model(op, &ck, m->params, NULL, &o);
    sl__ckpt_close(&ck);
    if (!ok) {
        sl_gpt_free(m);
        return NULL;
    }
    m->rng = rng;
    return m;
}

sl_gpt *sl_gpt_load(const char *path, sl_dtype dtype) { return sl_gpt_load_ex(path, dtype, NULL); }
