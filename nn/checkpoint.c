/* nn/checkpoint.c — checkpoints of parameters, tensors, training state and GPT models, as
 * safetensors files (the format itself is in safetensors.c).
 *
 * A training checkpoint adds the optimizer's state tensors (names "optim.*", see
 * optim_internal.h) and its type, step count and settings as metadata; a GPT checkpoint adds
 * the model's config under "shortlong.*" keys, mapped field by field in config_keys below.
 */
#include "optim_internal.h"
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((format(printf, 2, 3))) static bool bad(const sl__ckpt *ck, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl__ckpt_vfail(ck, fmt, ap);
    va_end(ap);
    return false;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ================================================================ loading */

/* The tensors to load or save for a registry: its parameters, then opt's state if opt. */
static sl_named *model_items(const char *op, const sl_params *ps, const sl_optim *opt, int *n)
{
    int np = sl_params_count(ps), ns = opt ? opt->n_state : 0;
    sl_named *items = sl__malloc(sizeof *items * (size_t)(np + ns + 1));
    if (!items) return SL_FAIL(SL_ERR_OOM, "%s: out of memory", op);
    for (int i = 0; i < np; i++) {
        const sl_param *p = sl_params_at(ps, i);
        items[i] = (sl_named){p->name, p->value};
    }
    for (int i = 0; i < ns; i++) items[np + i] = (sl_named){opt->state[i].name, opt->state[i].t};
    *n = np + ns;
    return items;
}

/* Loads ps's parameters (and opt's state, if opt) from the opened file. */
static bool load_model(const char *op, sl__ckpt *ck, const sl_params *ps, const sl_optim *opt)
{
    int n;
    sl_named *items = model_items(op, ps, opt, &n);
    bool ok = items && sl__ckpt_load(ck, items, n, opt ? NULL : "optim.");
    sl__free(items);
    return ok;
}

bool sl_load_params(const char *path, sl_params *ps)
{
    static const char *op = "sl_load_params";
    if (!ps) return sl_set_error(SL_ERR_ARG, "%s: registry is NULL", op);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path) && load_model(op, &ck, ps, NULL);
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_load_tensors(const char *path, const sl_named *tensors, int n)
{
    static const char *op = "sl_load_tensors";
    if (n < 0 || (n > 0 && !tensors)) return sl_set_error(SL_ERR_ARG, "%s: no tensors", op);
    for (int i = 0; i < n; i++)
        if (!tensors[i].name || !tensors[i].tensor)
            return sl_set_error(SL_ERR_ARG, "%s: tensor %d or its name is NULL", op, i);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path) && sl__ckpt_load(&ck, tensors, n, NULL);
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_read_meta(const char *path, const char *key, char *buf, size_t cap)
{
    static const char *op = "sl_read_meta";
    if (!key || !buf || !cap) return sl_set_error(SL_ERR_ARG, "%s: key or buf is NULL", op);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path);
    const char *v = ok ? sl__ckpt_meta(&ck, key) : NULL;
    if (ok && !v) ok = bad(&ck, "no metadata key '%s'", key);
    if (ok && strlen(v) >= cap)
        ok = sl_set_error(SL_ERR_ARG, "%s: %s: the value of '%s' has %zu bytes, the buffer %zu",
                          op, path, key, strlen(v), cap);
    if (ok) strcpy(buf, v);
    sl__ckpt_close(&ck);
    return ok;
}

/* ---------------------------------------------------------------- training checkpoints */

static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !((*s >= '0' && *s <= '9') || *s == '-')) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* A finite decimal number as %.17g writes it (no hex, inf, nan or spaces). */
static bool parse_double(const char *s, double *out)
{
    if (!s || !*s || strspn(s, "0123456789+-.eE") != strlen(s)) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* The optimizer's type, step count and hyperparameters as stored in the file must be this
 * optimizer's (resuming with other settings would not continue the same run). */
static bool check_optim_meta(const sl__ckpt *ck, const sl_optim *opt, int64_t *steps)
{
    const char *type = sl__ckpt_meta(ck, "optim.type");
    if (!type)
        return bad(ck, "no optimizer state (metadata 'optim.type' is absent): not a training "
                   "checkpoint");
    if (strcmp(type, sl__optim_kind_name(opt)))
        return bad(ck, "the optimizer in the file is '%s', this one is '%s'", type,
                   sl__optim_kind_name(opt));
    const char *s = sl__ckpt_meta(ck, "optim.step");
    if (!parse_i64(s, steps) || *steps < 0)
        return bad(ck, "metadata 'optim.step' is %s%s%s, expected a count >= 0", s ? "'" : "",
                   s ? s : "absent", s ? "'" : "");
    for (int i = 0; i < opt->n_hyper; i++) {
        const char *name = opt->hyper_names[i];
        double v;
        s = sl__ckpt_meta(ck, name);
        if (!parse_double(s, &v))
            return bad(ck, "metadata '%s' is %s%s%s, expected a number", name, s ? "'" : "",
                       s ? s : "absent", s ? "'" : "");
        if (v != opt->hyper[i])
            return bad(ck, "%s is %.17g in the file but %.17g in this optimizer", name, v,
                       opt->hyper[i]);
    }
    return true;
}

bool sl_load_training(const char *path, sl_params *ps, sl_optim *opt)
{
    static const char *op = "sl_load_training";
    if (!ps || !opt) return sl_set_error(SL_ERR_ARG, "%s: registry or optimizer is NULL", op);
    if (opt->ps != ps || opt->n_params != sl_params_count(ps))
        return sl_set_error(SL_ERR_ARG, "%s: the optimizer was made for another registry", op);
    sl__ckpt ck;
    int64_t steps = 0;
    bool ok = sl__ckpt_open(&ck, op, path) && check_optim_meta(&ck, opt, &steps) &&
              load_model(op, &ck, ps, opt);
    if (ok) opt->steps = steps;
    sl__ckpt_close(&ck);
    return ok;
}

/* ================================================================ saving */

/* The caller's pairs; the prefixes "optim." and "shortlong." are shortlong's own. */
static bool put_user_meta(const char *op, json_t *meta, const sl_meta *m, int n)
{
    if (n < 0 || (n > 0 && !m))
        return sl_set_error(SL_ERR_ARG, "%s: %d metadata pairs at %p", op, n, (const void *)m);
    for (int i = 0; i < n; i++) {
        if (m[i].key && (has_prefix(m[i].key, "optim.") || has_prefix(m[i].key, "shortlong.")))
            return sl_set_error(SL_ERR_ARG, "%s: metadata key '%s' is reserved (shortlong uses "
                                "the prefixes 'optim.' and 'shortlong.')", op, m[i].key);
        if (!sl__ckpt_meta_put(op, meta, m[i].key, m[i].value)) return false;
    }
    return true;
}

static bool put_optim_meta(const char *op, json_t *meta, const sl_optim *opt)
{
    char buf[40];
    bool ok = sl__ckpt_meta_put(op, meta, "optim.type", sl__optim_kind_name(opt));
    snprintf(buf, sizeof buf, "%" PRId64, opt->steps);
    ok = ok && sl__ckpt_meta_put(op, meta, "optim.step", buf);
    for (int i = 0; ok && i < opt->n_hyper; i++) {
        snprintf(buf, sizeof buf, "%.17g", opt->hyper[i]); /* round-trips exactly */
        ok = sl__ckpt_meta_put(op, meta, opt->hyper_names[i], buf);
    }
    return ok;
}

/* Saves ps (and opt's state and settings, if opt) with the metadata in meta. */
static bool save(const char *op, const char *path, const sl_params *ps, const sl_optim *opt,
                 json_t *meta)
{
    if (!path || !ps) return sl_set_error(SL_ERR_ARG, "%s: path or registry is NULL", op);
    if (opt && (opt->ps != ps || opt->n_params != sl_params_count(ps)))
        return sl_set_error(SL_ERR_ARG, "%s: the optimizer was made for another registry", op);
    for (int i = 0; opt && i < sl_params_count(ps); i++)
        if (has_prefix(sl_params_at(ps, i)->name, "optim."))
            return sl_set_error(SL_ERR_ARG, "%s: parameter name '%s' clashes with the "
                                "optimizer's state names", op, sl_params_at(ps, i)->name);
    if (opt && !put_optim_meta(op, meta, opt)) return false;
    int n;
    sl_named *items = model_items(op, ps, opt, &n);
    bool ok = items && sl__ckpt_write(op, path, items, n, meta);
    sl__free(items);
    return ok;
}

static bool save_with_meta(const char *op, const char *path, const sl_params *ps,
                           const sl_optim *opt, const sl_meta *m, int n)
{
    json_t *meta = json_object();
    if (!meta) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    bool ok = put_user_meta(op, meta, m, n) && save(op, path, ps, opt, meta);
    json_decref(meta);
    return ok;
}

bool sl_save_params(const char *path, const sl_params *ps, const sl_meta *meta, int n_meta)
{
    return save_with_meta("sl_save_params", path, ps, NULL, meta, n_meta);
}

bool sl_save_training(const char *path, const sl_params *ps, const sl_optim *opt,
                      const sl_meta *meta, int n_meta)
{
    if (!opt) return sl_set_error(SL_ERR_ARG, "sl_save_training: optimizer is NULL");
    return save_with_meta("sl_save_training", path, ps, opt, meta, n_meta);
}

bool sl_save_tensors(const char *path, const sl_named *tensors, int n, const sl_meta *meta,
                     int n_meta)
{
    static const char *op = "sl_save_tensors";
    if (!path || n < 0 || (n > 0 && !tensors))
        return sl_set_error(SL_ERR_ARG, "%s: no path or no tensors", op);
    for (int i = 0; i < n; i++)
        if (!tensors[i].name || !tensors[i].tensor)
            return sl_set_error(SL_ERR_ARG, "%s: tensor %d or its name is NULL", op, i);
    json_t *m = json_object();
    if (!m) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    bool ok = put_user_meta(op, m, meta, n_meta) && sl__ckpt_write(op, path, tensors, n, m);
    json_decref(m);
    return ok;
}

/* ================================================================ GPT checkpoints */

/* sl_gpt_config <-> "__metadata__": every field under a "shortlong." key, as text. */
typedef enum { K_I64, K_INT, K_BOOL, K_DOUBLE, K_U64, K_POS } key_kind;
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
};
enum { N_CONFIG_KEYS = sizeof config_keys / sizeof config_keys[0] };

/* Keys added after the first checkpoints were written: absent, the field keeps 0 (its
 * default), so older files still load. */
static bool optional_key(int k)
{
    return !strcmp(config_keys[k].key, "shortlong.t5_buckets") ||
           !strcmp(config_keys[k].key, "shortlong.t5_max_distance");
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
    }
}

static bool parse_key(int k, const char *s, sl_gpt_config *c)
{
    char *f = (char *)c + config_keys[k].off;
    int64_t i;
    switch (config_keys[k].kind) {
    case K_I64: return parse_i64(s, (int64_t *)f);
    case K_INT:
        if (!parse_i64(s, &i) || i < INT32_MIN || i > INT32_MAX) return false;
        *(int *)f = (int)i;
        return true;
    case K_BOOL:
        if (strcmp(s, "true") && strcmp(s, "false")) return false;
        *(bool *)f = !strcmp(s, "true");
        return true;
    case K_DOUBLE: return parse_double(s, (double *)f);
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
    }
    return false;
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
    snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             m->rng.s[0], m->rng.s[1], m->rng.s[2], m->rng.s[3]);
    return ok && sl__ckpt_meta_put(op, meta, "shortlong.rng", buf);
}

static bool parse_rng(const char *s, sl_rng *rng)
{
    if (!s || strlen(s) != 64) return false;
    for (int w = 0; w < 4; w++) {
        uint64_t v = 0;
        for (int i = 0; i < 16; i++) {
            char ch = s[16 * w + i];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (d < 0) return false;
            v = v << 4 | (uint64_t)d;
        }
        rng->s[w] = v;
    }
    return true;
}

static bool read_gpt_config(const sl__ckpt *ck, sl_gpt_config *cfg, sl_rng *rng)
{
    const char *model = sl__ckpt_meta(ck, "shortlong.model");
    if (!model || strcmp(model, "gpt"))
        return bad(ck, "not a shortlong GPT checkpoint (metadata 'shortlong.model' is %s%s%s, "
                   "expected 'gpt')", model ? "'" : "", model ? model : "absent",
                   model ? "'" : "");
    *cfg = (sl_gpt_config){0};
    for (int k = 0; k < N_CONFIG_KEYS; k++) {
        const char *s = sl__ckpt_meta(ck, config_keys[k].key);
        if (!s && optional_key(k)) continue;
        if (!s) return bad(ck, "missing config key '%s'", config_keys[k].key);
        if (!parse_key(k, s, cfg))
            return bad(ck, "config key '%s' has the value '%s', which is not a valid %s",
                       config_keys[k].key, s,
                       config_keys[k].kind == K_BOOL     ? "boolean (true or false)"
                       : config_keys[k].kind == K_POS    ? "positional method"
                       : config_keys[k].kind == K_DOUBLE ? "number"
                                                         : "integer");
    }
    const char *s = sl__ckpt_meta(ck, "shortlong.rng");
    if (!parse_rng(s, rng))
        return bad(ck, "config key 'shortlong.rng' is %s%s%s, expected 64 hex digits",
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
    bool ok = put_gpt_meta(op, meta, m) && put_user_meta(op, meta, extra, n_extra) &&
              save(op, path, m->params, opt, meta);
    json_decref(meta);
    return ok;
}

sl_gpt *sl_gpt_load(const char *path, sl_dtype dtype)
{
    static const char *op = "sl_gpt_load";
    sl__ckpt ck;
    sl_gpt_config cfg;
    sl_rng rng;
    if (!sl__ckpt_open(&ck, op, path) || !read_gpt_config(&ck, &cfg, &rng)) {
        sl__ckpt_close(&ck);
        return NULL;
    }
    /* The config comes from an untrusted file: before building (and touching) the model it
     * describes, check that the file holds at least that model's token embedding and blocks. */
    double c = (double)cfg.dim, ratio = cfg.mlp_ratio ? cfg.mlp_ratio : 4;
    double at_least = (double)cfg.vocab_size * c + (double)cfg.n_layers * (2 + 2 * ratio) * c * c;
    if (cfg.dim > 0 && cfg.vocab_size > 0 && at_least * 4 > (double)ck.data_len) {
        bad(&ck, "its config (vocab %lld, dim %lld, %d layers) needs at least %.0f parameters, "
                 "but the file holds only %llu bytes of data",
            (long long)cfg.vocab_size, (long long)cfg.dim, cfg.n_layers, at_least,
            (unsigned long long)ck.data_len);
        sl__ckpt_close(&ck);
        return NULL;
    }
    sl_gpt *m = sl_gpt_new(&cfg, dtype);
    if (!m) {
        char why[512];
        snprintf(why, sizeof why, "%s", sl_error_message());
        bad(&ck, "its config does not make a model: %s", why);
        sl__ckpt_close(&ck);
        return NULL;
    }
    bool ok = load_model(op, &ck, m->params, NULL);
    sl__ckpt_close(&ck);
    if (!ok) {
        sl_gpt_free(m);
        return NULL;
    }
    m->rng = rng;
    return m;
}
