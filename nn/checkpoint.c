/* nn/checkpoint.c — checkpoints of tensors, parameters and training state, as safetensors
 * files (the format itself is in safetensors.c; a model's own checkpoints, with its config,
 * build on these: gpt_checkpoint.c).
 *
 * A training checkpoint adds the optimizer's state tensors (names "optim.*", see
 * optim_internal.h) and its type, step count and settings as metadata.
 */
#include "checkpoint.h"
#include "optim_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

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

/* The file's values of the registry's configuration keys must be the registry's. */
static bool check_config(const sl__ckpt *ck, const sl_params *ps)
{
    char diff[640];
    size_t len = 0;
    diff[0] = '\0';
    for (int i = 0; i < sl_params_config_count(ps); i++) {
        const char *key, *value;
        sl_params_config_at(ps, i, &key, &value);
        const char *in_file = sl__ckpt_meta(ck, key);
        if (!in_file || !strcmp(in_file, value)) continue;
        if (len < sizeof diff)
            len += (size_t)snprintf(diff + len, sizeof diff - len, "%s%s: file %s, model %s",
                                    len ? "; " : "", key, in_file, value);
    }
    if (!len) return true;
    return sl__ckpt_fail(ck,
                         "it was saved from a model with another configuration (%s); "
                         "sl_load_opts.ignore_config loads it anyway",
                         diff);
}

bool sl__load_model(const char *op, sl__ckpt *ck, const sl_params *ps, const sl_optim *opt,
                    const sl_load_opts *opts)
{
    if (!(opts && opts->ignore_config) && !check_config(ck, ps)) return false;
    int n;
    sl_named *items = model_items(op, ps, opt, &n);
    bool ok = items && sl__ckpt_load(ck, items, n, opt ? NULL : "optim.", opts);
    sl__free(items);
    return ok;
}

bool sl_load_params_ex(const char *path, sl_params *ps, const sl_load_opts *opts)
{
    static const char *op = "sl_load_params";
    if (!ps) return sl_set_error(SL_ERR_ARG, "%s: registry is NULL", op);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path) && sl__load_model(op, &ck, ps, NULL, opts);
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_load_params(const char *path, sl_params *ps) { return sl_load_params_ex(path, ps, NULL); }

bool sl_load_tensors_ex(const char *path, const sl_named *tensors, int n, const sl_load_opts *opts)
{
    static const char *op = "sl_load_tensors";
    if (n < 0 || (n > 0 && !tensors)) return sl_set_error(SL_ERR_ARG, "%s: no tensors", op);
    for (int i = 0; i < n; i++)
        if (!tensors[i].name || !tensors[i].tensor)
            return sl_set_error(SL_ERR_ARG, "%s: tensor %d or its name is NULL", op, i);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path) && sl__ckpt_load(&ck, tensors, n, NULL, opts);
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_load_tensors(const char *path, const sl_named *tensors, int n)
{
    return sl_load_tensors_ex(path, tensors, n, NULL);
}

bool sl_read_meta(const char *path, const char *key, char *buf, size_t cap)
{
    static const char *op = "sl_read_meta";
    if (!key || !buf || !cap) return sl_set_error(SL_ERR_ARG, "%s: key or buf is NULL", op);
    sl__ckpt ck;
    bool ok = sl__ckpt_open(&ck, op, path);
    const char *v = ok ? sl__ckpt_meta(&ck, key) : NULL;
    if (ok && !v) ok = sl__ckpt_fail(&ck, "no metadata key '%s'", key);
    if (ok && strlen(v) >= cap)
        ok = sl_set_error(SL_ERR_ARG, "%s: %s: the value of '%s' has %zu bytes, the buffer %zu",
                          op, path, key, strlen(v), cap);
    if (ok) strcpy(buf, v);
    sl__ckpt_close(&ck);
    return ok;
}

/* ---------------------------------------------------------------- training checkpoints */

bool sl__parse_i64(const char *s, int64_t *out)
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
bool sl__parse_double(const char *s, double *out)
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
        return sl__ckpt_fail(ck,
                             "no optimizer state (metadata 'optim.type' is absent): not a training "
                             "checkpoint");
    if (strcmp(type, sl__optim_kind_name(opt)))
        return sl__ckpt_fail(ck, "the optimizer in the file is '%s', this one is '%s'", type,
                             sl__optim_kind_name(opt));
    const char *s = sl__ckpt_meta(ck, "optim.step");
    if (!sl__parse_i64(s, steps) || *steps < 0)
        return sl__ckpt_fail(ck, "metadata 'optim.step' is %s%s%s, expected a count >= 0",
                             s ? "'" : "", s ? s : "absent", s ? "'" : "");
    for (int i = 0; i < opt->n_hyper; i++) {
        const char *name = opt->hyper_names[i];
        double v;
        s = sl__ckpt_meta(ck, name);
        if (!sl__parse_double(s, &v))
            return sl__ckpt_fail(ck, "metadata '%s' is %s%s%s, expected a number", name,
                                 s ? "'" : "", s ? s : "absent", s ? "'" : "");
        if (v != opt->hyper[i])
            return sl__ckpt_fail(ck, "%s is %.17g in the file but %.17g in this optimizer", name, v,
                                 opt->hyper[i]);
    }
    return true;
}

bool sl_load_training_ex(const char *path, sl_params *ps, sl_optim *opt, const sl_load_opts *opts)
{
    static const char *op = "sl_load_training";
    if (!ps || !opt) return sl_set_error(SL_ERR_ARG, "%s: registry or optimizer is NULL", op);
    if (opt->ps != ps || opt->n_params != sl_params_count(ps))
        return sl_set_error(SL_ERR_ARG, "%s: the optimizer was made for another registry", op);
    sl__ckpt ck;
    int64_t steps = 0;
    bool ok = sl__ckpt_open(&ck, op, path) && check_optim_meta(&ck, opt, &steps) &&
              sl__load_model(op, &ck, ps, opt, opts);
    if (ok) opt->steps = steps;
    sl__ckpt_close(&ck);
    return ok;
}

bool sl_load_training(const char *path, sl_params *ps, sl_optim *opt)
{
    return sl_load_training_ex(path, ps, opt, NULL);
}

/* ================================================================ saving */

/* The caller's pairs; the prefixes "optim." and "shortlong." are shortlong's own. */
bool sl__put_user_meta(const char *op, json_t *meta, const sl_meta *m, int n)
{
    if (n < 0 || (n > 0 && !m))
        return sl_set_error(SL_ERR_ARG, "%s: %d metadata pairs at %p", op, n, (const void *)m);
    for (int i = 0; i < n; i++) {
        if (m[i].key &&
            (sl__has_prefix(m[i].key, "optim.") || sl__has_prefix(m[i].key, "shortlong.")))
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

/* The registry's configuration pairs; a key already in meta (a model's own writer put it
 * there) must have the same value. */
static bool put_config_meta(const char *op, json_t *meta, const sl_params *ps)
{
    for (int i = 0; i < sl_params_config_count(ps); i++) {
        const char *key, *value;
        sl_params_config_at(ps, i, &key, &value);
        json_t *have = json_object_get(meta, key);
        if (!have) {
            if (!sl__ckpt_meta_put(op, meta, key, value)) return false;
        } else if (strcmp(json_string_value(have), value)) {
            return sl_set_error(SL_ERR_ARG,
                                "%s: metadata '%s' is '%s' but the registry's "
                                "configuration says '%s'",
                                op, key, json_string_value(have), value);
        }
    }
    return true;
}

/* Saves ps (and opt's state and settings, if opt) with the metadata in meta. */
bool sl__save_model(const char *op, const char *path, const sl_params *ps, const sl_optim *opt,
                    json_t *meta)
{
    if (!path || !ps) return sl_set_error(SL_ERR_ARG, "%s: path or registry is NULL", op);
    if (opt && (opt->ps != ps || opt->n_params != sl_params_count(ps)))
        return sl_set_error(SL_ERR_ARG, "%s: the optimizer was made for another registry", op);
    for (int i = 0; opt && i < sl_params_count(ps); i++)
        if (sl__has_prefix(sl_params_at(ps, i)->name, "optim."))
            return sl_set_error(SL_ERR_ARG, "%s: parameter name '%s' clashes with the "
                                "optimizer's state names", op, sl_params_at(ps, i)->name);
    if (opt && !put_optim_meta(op, meta, opt)) return false;
    if (!put_config_meta(op, meta, ps)) return false;
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
    bool ok = sl__put_user_meta(op, meta, m, n) && sl__save_model(op, path, ps, opt, meta);
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
    bool ok = sl__put_user_meta(op, m, meta, n_meta) && sl__ckpt_write(op, path, tensors, n, m);
    json_decref(m);
    return ok;
}
