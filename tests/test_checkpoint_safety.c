/* Checkpoints as untrusted input and as a model's identity (issue 10): a stored configuration
 * that differs from the registry's is refused (item 4); non-finite values are refused unless
 * allowed, and f32 and f64 convert into each other on request (item 5); a GPT checkpoint's
 * config is checked, and the tensors it implies compared with the file's, before anything is
 * allocated (item 6: the two resource bombs); only the tensors being loaded are read, and a
 * FIFO or a device is refused without blocking (item 9); saves clean the temp files of dead
 * processes, keep the file's mode and follow symlinks (item 10). */
#include "ckpt_testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* Peak resident memory of this process so far, in MiB (each test runs in a process of its
 * own under ctest). */
static double peak_rss_mib(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss / 1024.0;
}

/* Rewrites the header of `path` into `out` with the first `from` replaced by `to` (any
 * lengths: the length prefix is recomputed; the data is kept as it is). */
static void edit_header(const char *path, const char *out, const char *from, const char *to)
{
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | b[i];
    char *header = malloc(hn + 1);
    memcpy(header, b + 8, hn);
    header[hn] = '\0';
    char *hit = strstr(header, from);
    ck_assert_msg(hit != NULL, "'%s' not in the header of %s", from, path);
    size_t nh = hn - strlen(from) + strlen(to);
    unsigned char *o = malloc(8 + nh + (len - 8 - hn) + 1);
    for (int i = 0; i < 8; i++) o[i] = (unsigned char)((uint64_t)nh >> (8 * i));
    size_t pre = (size_t)(hit - header);
    memcpy(o + 8, header, pre);
    memcpy(o + 8 + pre, to, strlen(to));
    memcpy(o + 8 + pre + strlen(to), hit + strlen(from), hn - pre - strlen(from));
    memcpy(o + 8 + nh, b + 8 + hn, len - 8 - hn);
    write_bytes(out, o, 8 + nh + (len - 8 - hn));
    free(o);
    free(header);
    free(b);
}

static sl_gpt *gpt(sl_pos pos, int heads, int64_t context, int64_t dim)
{
    sl_gpt_config c = {.vocab_size = 16,
                       .context = context,
                       .dim = dim,
                       .n_layers = 1,
                       .n_heads = heads,
                       .pos = pos,
                       .fused_qkv = true,
                       .seed = 3};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert_msg(m != NULL, "%s", sl_error_message());
    return m;
}

static void assert_msg_tail(const char *tail)
{
    const char *msg = sl_error_message();
    size_t n = strlen(msg), t = strlen(tail);
    ck_assert_msg(n >= t && !strcmp(msg + n - t, tail), "message '%s' does not end in '%s'", msg,
                  tail);
}

/* ---------------------------------------------------------------- item 4: configuration */

START_TEST(params_config_api)
{
    sl_params *ps = sl_params_new(SL_F32);
    ck_assert_int_eq(sl_params_config_count(ps), 0);
    ck_assert_ptr_null(sl_params_config(ps, "a"));
    ck_assert(sl_params_set_config(ps, "model.kind", "mlp"));
    ck_assert(sl_params_set_config(ps, "model.width", "8"));
    ck_assert(sl_params_set_config(ps, "model.kind", "resmlp")); /* replaces */
    ck_assert_int_eq(sl_params_config_count(ps), 2);
    ck_assert_str_eq(sl_params_config(ps, "model.kind"), "resmlp");
    const char *k, *v;
    ck_assert(sl_params_config_at(ps, 1, &k, &v));
    ck_assert_str_eq(k, "model.width");
    ck_assert_str_eq(v, "8");
    ck_assert(!sl_params_config_at(ps, 2, &k, &v));
    ck_assert_int_eq(sl_error(), SL_ERR_INDEX);
    ck_assert(!sl_params_set_config(ps, "optim.lr", "1"));
    ck_assert_str_eq(sl_error_message(), "sl_params_set_config: key 'optim.lr' is reserved (the "
                                         "prefix 'optim.' is the optimizer's)");
    ck_assert(!sl_params_set_config(ps, "x", NULL));
    ck_assert(!sl_params_set_config(NULL, "x", "y"));
    /* saved as metadata; a caller's pair with the same key must agree */
    sl_params_add(ps, "w", sl_shape(2), true);
    const char *path = at("cfg.safetensors");
    ck_assert_msg(sl_save_params(path, ps, (sl_meta[]){{"model.width", "8"}}, 1), "%s",
                  sl_error_message());
    char buf[16];
    ck_assert(sl_read_meta(path, "model.kind", buf, sizeof buf));
    ck_assert_str_eq(buf, "resmlp");
    ck_assert(!sl_save_params(path, ps, (sl_meta[]){{"model.width", "9"}}, 1));
    ck_assert_str_eq(sl_error_message(), "sl_save_params: metadata 'model.width' is '9' but the "
                                         "registry's configuration says '8'");
    sl_params_free(ps);
}
END_TEST

/* The reproducer: an ALiBi model with 4 heads and a sinusoidal one with 8 have the same
 * tensors; the weights of one used to load into the other without a word. */
START_TEST(params_config_mismatch_is_refused)
{
    sl_gpt *a = gpt(SL_POS_ALIBI, 4, 8, 16), *b = gpt(SL_POS_SINUSOIDAL, 8, 8, 16);
    const char *saved = at("a_params.safetensors"), *gsaved = at("a_gpt.safetensors");
    ck_assert(sl_save_params(saved, a->params, NULL, 0));
    ck_assert(sl_gpt_save(gsaved, a, NULL, NULL, 0));
    size_t n;
    unsigned char *snap = snapshot(b->params, &n);
    char want[512];
    const char *files[] = {saved, gsaved};
    for (int f = 0; f < 2; f++) {
        ck_assert(!sl_load_params(files[f], b->params));
        ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
        snprintf(want, sizeof want,
                 "sl_load_params: %s: it was saved from a model with another "
                 "configuration (shortlong.n_heads: file 4, model 8; shortlong.n_kv_heads: file "
                 "4, model 8; shortlong.pos: file alibi, model sinusoidal); "
                 "sl_load_opts.ignore_config loads it anyway",
                 files[f]);
        ck_assert_str_eq(sl_error_message(), want);
        assert_same(b->params, snap, n);
    }
    /* a training checkpoint too */
    sl_optim *oa = sl_adamw_new(a->params, NULL), *ob = sl_adamw_new(b->params, NULL);
    const char *tr = at("a_train.safetensors");
    ck_assert(sl_gpt_save(tr, a, oa, NULL, 0));
    ck_assert(!sl_load_training(tr, b->params, ob));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "shortlong.pos: file alibi, model "
                                                     "sinusoidal"));
    assert_same(b->params, snap, n);
    /* on request it loads */
    ck_assert(sl_load_params_ex(saved, b->params, &(sl_load_opts){.ignore_config = true}));
    unsigned char *sa = snapshot(a->params, &n);
    assert_same(b->params, sa, n);
    free(sa);
    free(snap);
    sl_optim_free(oa);
    sl_optim_free(ob);
    sl_gpt_free(a);
    sl_gpt_free(b);
}
END_TEST

/* What does not change the parameters' meaning does not block: the seed, the dropout rate, the
 * context of a method without a position table. A learned table's context does. */
START_TEST(params_config_only_what_matters)
{
    sl_gpt_config ca = {.vocab_size = 16,
                        .context = 8,
                        .dim = 16,
                        .n_layers = 1,
                        .n_heads = 2,
                        .pos = SL_POS_ALIBI,
                        .fused_qkv = true,
                        .seed = 1};
    sl_gpt_config cb = ca;
    cb.seed = 2, cb.dropout = 0.1, cb.context = 64;
    sl_gpt *a = sl_gpt_new(&ca, SL_F32), *b = sl_gpt_new(&cb, SL_F32);
    ck_assert_ptr_null(sl_params_config(b->params, "shortlong.seed"));
    ck_assert_ptr_null(sl_params_config(b->params, "shortlong.dropout"));
    ck_assert_ptr_null(sl_params_config(b->params, "shortlong.context"));
    ck_assert_ptr_null(sl_params_config(b->params, "shortlong.t5_buckets"));
    ck_assert_str_eq(sl_params_config(b->params, "shortlong.pos"), "alibi");
    const char *path = at("a.safetensors");
    ck_assert(sl_gpt_save(path, a, NULL, NULL, 0));
    ck_assert_msg(sl_load_params(path, b->params), "%s", sl_error_message());
    sl_gpt_free(a);
    sl_gpt_free(b);

    /* learned positions: the context is the table's size, and is compared */
    ca.pos = cb.pos = SL_POS_LEARNED;
    cb.context = 16;
    a = sl_gpt_new(&ca, SL_F32), b = sl_gpt_new(&cb, SL_F32);
    ck_assert(sl_gpt_save(path, a, NULL, NULL, 0));
    ck_assert(!sl_load_params(path, b->params));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "(shortlong.context: file 8, model 16)"));
    sl_gpt_free(a);
    sl_gpt_free(b);

    /* T5's settings are compared for T5 */
    ca.pos = cb.pos = SL_POS_T5;
    cb.context = ca.context;
    cb.t5_max_distance = 64;
    a = sl_gpt_new(&ca, SL_F32), b = sl_gpt_new(&cb, SL_F32);
    ck_assert(sl_gpt_save(path, a, NULL, NULL, 0));
    ck_assert(!sl_load_params(path, b->params));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "(shortlong.t5_max_distance: file 128, "
                                                     "model 64)"));
    sl_gpt_free(a);
    sl_gpt_free(b);
}
END_TEST

/* A registry without configuration loads as it always did, from any file whose tensors match;
 * a file without the keys loads into a GPT registry. */
START_TEST(generic_registry_loads_as_before)
{
    sl_gpt *a = gpt(SL_POS_ALIBI, 4, 8, 16);
    const char *path = at("a.safetensors"), *plain = at("plain.safetensors");
    ck_assert(sl_gpt_save(path, a, NULL, NULL, 0));
    sl_params *g = sl_params_new(SL_F32);
    int np = sl_params_count(a->params);
    sl_named *items = calloc((size_t)np, sizeof *items);
    for (int i = 0; i < np; i++) {
        const sl_param *p = sl_params_at(a->params, i);
        sl_params_add(g, p->name, p->value->ndim, p->value->shape, p->decay);
        items[i] = (sl_named){p->name, p->value};
    }
    ck_assert_msg(sl_load_params(path, g), "%s", sl_error_message());
    size_t n;
    unsigned char *sa = snapshot(a->params, &n);
    assert_same(g, sa, n);
    /* a file with the same tensors and no configuration loads into the GPT's registry */
    ck_assert(sl_save_tensors(plain, items, np, NULL, 0));
    sl_gpt *b = gpt(SL_POS_SINUSOIDAL, 8, 8, 16);
    ck_assert_msg(sl_load_params(plain, b->params), "%s", sl_error_message());
    assert_same(b->params, sa, n);
    free(sa);
    free(items);
    sl_params_free(g);
    sl_gpt_free(a);
    sl_gpt_free(b);
}
END_TEST

/* ---------------------------------------------------------------- item 5: values */

START_TEST(nonfinite_values_are_refused)
{
    const double bad[] = {NAN, INFINITY, -INFINITY};
    const char *shown[] = {"nan", "inf", "-inf"};
    for (int k = 0; k < 3; k++) {
        for (int d = 0; d < 2; d++) {
            sl_dtype dt = d ? SL_F64 : SL_F32;
            sl_params *good = make_params(dt, 1), *ps = make_params(dt, 2);
            sl_tensor *w = sl_params_find(good, "blocks.0.fc.weight");
            sl_set(w, 7, bad[k]);
            const char *path = at("nan.safetensors");
            ck_assert(sl_save_params(path, good, NULL, 0));
            size_t n;
            unsigned char *snap = snapshot(ps, &n);
            ck_assert(!sl_load_params(path, ps));
            ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
            char want[400];
            snprintf(want, sizeof want,
                     "sl_load_params: %s: tensor 'blocks.0.fc.weight' [4,3] "
                     "holds %s at flat index 7 (a model with NaN or infinite values; "
                     "sl_load_opts.allow_nonfinite loads it anyway)",
                     path, shown[k]);
            ck_assert_str_eq(sl_error_message(), want);
            assert_same(ps, snap, n);
            /* allowed, it loads as it is */
            ck_assert(sl_load_params_ex(path, ps, &(sl_load_opts){.allow_nonfinite = true}));
            double got = sl_get(sl_params_find(ps, "blocks.0.fc.weight"), 7);
            ck_assert(isnan(bad[k]) ? isnan(got) : got == bad[k]);
            free(snap);
            sl_params_free(good);
            sl_params_free(ps);
        }
    }
    /* sl_load_tensors is checked too */
    const char *path = at("t.safetensors");
    sl_tensor *t = sl_zeros(SL_F32, sl_shape(2));
    sl_set(t, 1, INFINITY);
    ck_assert(sl_save_tensors(path, &(sl_named){"t", t}, 1, NULL, 0));
    ck_assert(!sl_load_tensors(path, &(sl_named){"t", t}, 1));
    assert_msg_tail(": tensor 't' [2] holds inf at flat index 1 (a model with NaN or infinite "
                    "values; sl_load_opts.allow_nonfinite loads it anyway)");
    ck_assert(
        sl_load_tensors_ex(path, &(sl_named){"t", t}, 1, &(sl_load_opts){.allow_nonfinite = true}));
}
END_TEST

/* An f32 checkpoint into an f64 model (for a gradcheck) and back. */
START_TEST(load_converts_dtypes_on_request)
{
    sl_gpt *m = gpt(SL_POS_ALIBI, 2, 8, 8);
    const char *path = at("m.safetensors"), *p64 = at("m64.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    ck_assert_ptr_null(sl_gpt_load(path, SL_F64));
    sl_gpt *d = sl_gpt_load_ex(path, SL_F64, &(sl_load_opts){.convert_dtype = true});
    ck_assert_msg(d != NULL, "%s", sl_error_message());
    ck_assert_int_eq(sl_params_dtype(d->params), SL_F64);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_tensor *a = sl_params_at(m->params, i)->value,
                        *b = sl_params_at(d->params, i)->value;
        ck_assert_int_eq(b->dtype, SL_F64);
        ck_assert_double_eq(tu_max_abs_diff(a, b), 0); /* every float is a double */
    }
    /* and back, through a registry */
    ck_assert(sl_gpt_save(p64, d, NULL, NULL, 0));
    sl_gpt *s = gpt(SL_POS_ALIBI, 2, 8, 8);
    ck_assert(!sl_load_params(p64, s->params));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "is F64 in the file, the model expects F32 "
                                                     "(sl_load_opts.convert_dtype converts it)"));
    ck_assert_msg(sl_load_params_ex(p64, s->params, &(sl_load_opts){.convert_dtype = true}), "%s",
                  sl_error_message());
    size_t n;
    unsigned char *sm = snapshot(m->params, &n);
    assert_same(s->params, sm, n);
    free(sm);
    /* a value f32 cannot hold is an error, not an infinity */
    sl_tensor *big = sl_zeros(SL_F64, sl_shape(3));
    sl_set(big, 2, 1e300);
    ck_assert(sl_save_tensors(path, &(sl_named){"x", big}, 1, NULL, 0));
    sl_tensor *f = sl_zeros(SL_F32, sl_shape(3));
    ck_assert(
        !sl_load_tensors_ex(path, &(sl_named){"x", f}, 1, &(sl_load_opts){.convert_dtype = true}));
    assert_msg_tail(": tensor 'x' [3] holds 1e+300 at flat index 2, beyond the range of F32");
    ck_assert_double_eq(sl_get(f, 2), 0);
    /* i32 never converts */
    sl_tensor *i = sl_zeros(SL_I32, sl_shape(3));
    ck_assert(
        !sl_load_tensors_ex(path, &(sl_named){"x", i}, 1, &(sl_load_opts){.convert_dtype = true}));
    assert_msg_tail(": tensor 'x' is F64 in the file, the model expects I32");
    sl_gpt_free(s);
    sl_gpt_free(d);
    sl_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- item 6: bounds */

/* The reproducer: a small learned-position checkpoint whose config claims a context of 2^25
 * (the table would be 4 GiB) or of 2^24 (within the cap: 2 GiB) fails before the model is
 * allocated. The peak RSS shows nothing big was allocated. */
START_TEST(gpt_load_learned_context_bomb)
{
    sl_gpt_config c = {.vocab_size = 256,
                       .context = 8,
                       .dim = 32,
                       .n_layers = 1,
                       .n_heads = 2,
                       .pos = SL_POS_LEARNED,
                       .fused_qkv = true,
                       .seed = 3};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    const char *path = at("learned.safetensors"), *bomb = at("bomb.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    sl_gpt_free(m);
    double before = peak_rss_mib();
    char want[400];
    edit_header(path, bomb, "\"shortlong.context\":\"8\"", "\"shortlong.context\":\"33554432\"");
    ck_assert_ptr_null(sl_gpt_load(bomb, SL_F32));
    snprintf(want, sizeof want,
             "sl_gpt_load: %s: its config does not make a model: context "
             "33554432 outside [1, 16777216]",
             bomb);
    ck_assert_str_eq(sl_error_message(), want);
    edit_header(path, bomb, "\"shortlong.context\":\"8\"", "\"shortlong.context\":\"16777216\"");
    ck_assert_ptr_null(sl_gpt_load(bomb, SL_F32));
    snprintf(want, sizeof want,
             "sl_gpt_load: %s: tensor 'pos.weight' has shape [8,32] in the "
             "file, its config implies [16777216,32]",
             bomb);
    ck_assert_str_eq(sl_error_message(), want);
    double grew = peak_rss_mib() - before;
    ck_assert_msg(grew < 64, "the loads raised the peak RSS by %.0f MiB", grew);
}
END_TEST

/* t5_buckets = 2^28 (with a maximum distance that makes it a valid setting): the table would
 * be 2 GiB; the file's is (2, 32). */
START_TEST(gpt_load_t5_bucket_bomb)
{
    sl_gpt_config c = {.vocab_size = 16,
                       .context = 8,
                       .dim = 8,
                       .n_layers = 1,
                       .n_heads = 2,
                       .pos = SL_POS_T5,
                       .fused_qkv = true,
                       .seed = 3};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    const char *path = at("t5.safetensors"), *bomb = at("bomb.safetensors"),
               *bomb2 = at("bomb2.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    sl_gpt_free(m);
    double before = peak_rss_mib();
    char want[400];
    edit_header(path, bomb, "\"shortlong.t5_buckets\":\"32\"",
                "\"shortlong.t5_buckets\":\"268435456\"");
    ck_assert_ptr_null(sl_gpt_load(bomb, SL_F32));
    snprintf(want, sizeof want,
             "sl_gpt_load: %s: its config does not make a model: T5 needs "
             "t5_buckets >= 2 (got 268435456) and t5_max_distance > t5_buckets / 2 (got 128)",
             bomb);
    ck_assert_str_eq(sl_error_message(), want);
    edit_header(bomb, bomb2, "\"shortlong.t5_max_distance\":\"128\"",
                "\"shortlong.t5_max_distance\":\"268435457\"");
    ck_assert_ptr_null(sl_gpt_load(bomb2, SL_F32));
    snprintf(want, sizeof want,
             "sl_gpt_load: %s: tensor 'pos.rel_bias' has shape [2,32] in "
             "the file, its config implies [2,268435456]",
             bomb2);
    ck_assert_str_eq(sl_error_message(), want);
    double grew = peak_rss_mib() - before;
    ck_assert_msg(grew < 64, "the loads raised the peak RSS by %.0f MiB", grew);
}
END_TEST

/* Every setting is checked before building, and the file must hold exactly the implied
 * tensors: one the config implies but the file lacks, one the file has but no config implies. */
START_TEST(gpt_load_checks_config_and_tensors_first)
{
    sl_gpt *m = gpt(SL_POS_ROTARY, 2, 8, 8);
    const char *path = at("r.safetensors"), *bad = at("bad.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    static const struct {
        const char *from, *to, *message;
    } cases[] = {
        {"\"shortlong.context\":\"8\"", "\"shortlong.context\":\"0\"",
         "its config does not make a model: context 0 outside [1, 16777216]"},
        {"\"shortlong.n_heads\":\"2\"", "\"shortlong.n_heads\":\"8\"",
         "its config does not make a model: rotary needs an even head dim, not 1 (dim 8 / 8 "
         "heads)"},
        {"\"shortlong.dropout\":\"0\"", "\"shortlong.dropout\":\"1\"",
         "its config does not make a model: dropout 1 outside [0, 1)"},
        {"\"shortlong.tie_embeddings\":\"false\"", "\"shortlong.tie_embeddings\":\"true\"",
         "unexpected tensor 'head.weight' (its config implies no tensor of that name)"},
        {"\"shortlong.pos\":\"rotary\"", "\"shortlong.pos\":\"learned\"",
         "its config implies a tensor 'pos.weight' [8,8] that the file lacks"},
        {"\"shortlong.fused_qkv\":\"true\"", "\"shortlong.fused_qkv\":\"false\"",
         "its config implies a tensor 'blocks.0.attn.q.weight' [8,8] that the file lacks"},
        {"\"shortlong.mlp_ratio\":\"4\"", "\"shortlong.mlp_ratio\":\"2\"",
         "tensor 'blocks.0.mlp.fc.weight' has shape [32,8] in the file, its config implies "
         "[16,8]"},
    };
    char want[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        edit_header(path, bad, cases[i].from, cases[i].to);
        sl_error_clear();
        ck_assert_ptr_null(sl_gpt_load(bad, SL_F32));
        ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
        snprintf(want, sizeof want, "sl_gpt_load: %s: %s", bad, cases[i].message);
        ck_assert_str_eq(sl_error_message(), want);
    }
    sl_gpt_free(m);
}
END_TEST

/* The tensors sl_gpt_load expects from a config are the ones sl_gpt_new registers, for every
 * method and layout (a file saved from each loads back). */
START_TEST(gpt_load_every_layout)
{
    for (int p = 0; p < SL_POS_COUNT; p++)
        for (int v = 0; v < 8; v++) {
            sl_gpt_config c = {.vocab_size = 12,
                               .context = 6,
                               .dim = 8,
                               .n_layers = 2,
                               .n_heads = 4,
                               .n_kv_heads = v & 1 ? 2 : 0,
                               .pos = (sl_pos)p,
                               .fused_qkv = v & 2,
                               .tie_embeddings = v & 4,
                               .mlp_ratio = 3,
                               .seed = 5};
            sl_gpt *m = sl_gpt_new(&c, SL_F32);
            ck_assert_msg(m != NULL, "%s", sl_error_message());
            const char *path = at("v.safetensors");
            ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
            sl_gpt *l = sl_gpt_load(path, SL_F32);
            ck_assert_msg(l != NULL, "%s variant %d: %s", sl_pos_name((sl_pos)p), v,
                          sl_error_message());
            size_t n;
            unsigned char *s = snapshot(m->params, &n);
            assert_same(l->params, s, n);
            free(s);
            sl_gpt_free(l);
            sl_gpt_free(m);
        }
}
END_TEST

/* ---------------------------------------------------------------- item 9: reading */

/* The reproducer: a checkpoint holding a big tensor the load skips (optimizer state when
 * loading weights) used to be read whole into memory. The file is sparse, so it costs no disk. */
START_TEST(unused_tensors_are_never_read)
{
    sl_params *ps = sl_params_new(SL_F32);
    sl_tensor *w = sl_params_add(ps, "w", sl_shape(4), true);
    sl_fill(w, 1.5);
    const uint64_t big = UINT64_C(1) << 30; /* 1 GiB of "optimizer state" */
    char header[256];
    snprintf(header, sizeof header,
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"optim.huge\":{\"dtype\":\"F32\",\"shape\":[%llu],\"data_offsets\":[16,%llu]}}",
             (unsigned long long)(big / 4), (unsigned long long)(16 + big));
    const char *path = at("sparse.safetensors");
    size_t hn = strlen(header);
    unsigned char *b = calloc(1, 8 + hn + 16);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(b + 8, header, hn);
    float vals[4] = {1, 2, 3, 4};
    memcpy(b + 8 + hn, vals, 16);
    write_bytes(path, b, 8 + hn + 16);
    free(b);
    ck_assert_int_eq(truncate(path, (off_t)(8 + hn + 16 + big)), 0);
    double before = peak_rss_mib();
    ck_assert_msg(sl_load_params(path, ps), "%s", sl_error_message());
    double grew = peak_rss_mib() - before;
    ck_assert_double_eq(sl_get(w, 3), 4);
    ck_assert_msg(grew < 64, "loading 16 bytes raised the peak RSS by %.0f MiB", grew);
    sl_params_free(ps);
}
END_TEST

/* A FIFO used to block the load until a writer came; a device is not a file either. */
START_TEST(fifo_and_devices_are_refused)
{
    sl_params *ps = make_params(SL_F32, 1);
    const char *fifo = at("fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    alarm(20); /* blocking would end the test here rather than hang it */
    char want[300];
    ck_assert(!sl_load_params(fifo, ps));
    snprintf(want, sizeof want, "sl_load_params: %s: not a regular file", fifo);
    ck_assert_str_eq(sl_error_message(), want);
    sl_gpt_config cfg;
    ck_assert(!sl_gpt_read_config(fifo, &cfg));
    ck_assert(!sl_load_params("/dev/zero", ps));
    ck_assert_str_eq(sl_error_message(), "sl_load_params: /dev/zero: not a regular file");
    alarm(0);
    sl_params_free(ps);
}
END_TEST

/* ---------------------------------------------------------------- item 10: saves */

/* A pid that no process has any more: a child's, once reaped. */
static long dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    return (long)pid;
}

static void touch(const char *path) { write_bytes(path, "x", 1); }

/* The reproducer: saves killed mid-write left their temp files until the disk filled. A save
 * removes its path's temp files whose process is gone, and only those. */
START_TEST(save_removes_stale_temp_files)
{
    sl_params *ps = make_params(SL_F32, 1);
    const char *path = at("c.safetensors");
    char dead[300], dead2[300], mine[300], alive[300], other[300], odd[300];
    long pid = dead_pid();
    snprintf(dead, sizeof dead, "%s.tmp.%ld.0", path, pid);
    snprintf(dead2, sizeof dead2, "%s.tmp.%ld.17", path, pid);
    snprintf(mine, sizeof mine, "%s.tmp.%ld.999", path, (long)getpid());
    snprintf(alive, sizeof alive, "%s.tmp.1.0", path);                       /* init runs */
    snprintf(other, sizeof other, "%s.tmp.%ld.0", at("d.safetensors"), pid); /* another file's */
    snprintf(odd, sizeof odd, "%s.tmp.%ldx.0", path, pid);                   /* not a temp name */
    const char *all[] = {dead, dead2, mine, alive, other, odd};
    for (int i = 0; i < 6; i++) touch(all[i]);
    ck_assert_msg(sl_save_params(path, ps, NULL, 0), "%s", sl_error_message());
    ck_assert(!exists(dead));
    ck_assert(!exists(dead2));
    for (int i = 2; i < 6; i++) ck_assert_msg(exists(all[i]), "%s was removed", all[i]);
    sl_params_free(ps);
}
END_TEST

/* The reproducer: a save replaced a 600 file with a 644 one. */
START_TEST(save_keeps_the_mode)
{
    sl_params *ps = make_params(SL_F32, 1);
    const char *path = at("c.safetensors");
    mode_t modes[] = {0600, 0640, 0444};
    for (int i = 0; i < 3; i++) {
        ck_assert(sl_save_params(path, ps, NULL, 0));
        ck_assert_int_eq(chmod(path, modes[i]), 0);
        ck_assert_msg(sl_save_params(path, ps, NULL, 0), "%s", sl_error_message());
        struct stat st;
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, modes[i]);
        ck_assert_int_eq(chmod(path, 0600), 0);
    }
    /* a new file: 0666 less the umask */
    mode_t mask = umask(022);
    const char *fresh = at("fresh.safetensors");
    ck_assert(sl_save_params(fresh, ps, NULL, 0));
    umask(mask);
    struct stat st;
    ck_assert_int_eq(stat(fresh, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    sl_params_free(ps);
}
END_TEST

/* The reproducer: a save replaced a symlink with a regular file. Links are followed, chains and
 * relative ones included, and a dangling link gets its file. */
START_TEST(save_follows_symlinks)
{
    sl_params *a = make_params(SL_F32, 1), *b = make_params(SL_F32, 2),
              *probe = make_params(SL_F32, 3);
    const char *real = at("real.safetensors"), *link = at("link.safetensors"),
               *link2 = at("link2.safetensors"), *dangling = at("dangling.safetensors");
    ck_assert(sl_save_params(real, a, NULL, 0));
    ck_assert_int_eq(symlink("real.safetensors", link), 0); /* relative */
    ck_assert_int_eq(symlink(link, link2), 0);              /* absolute, to a link */
    ck_assert_msg(sl_save_params(link2, b, NULL, 0), "%s", sl_error_message());
    struct stat st;
    ck_assert_int_eq(lstat(link, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert_int_eq(lstat(link2, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert(!temp_left(real));
    ck_assert(!temp_left(link2));
    size_t n;
    unsigned char *sb = snapshot(b, &n);
    ck_assert(sl_load_params(real, probe));
    assert_same(probe, sb, n);
    ck_assert_int_eq(symlink("made.safetensors", dangling), 0);
    ck_assert_msg(sl_save_params(dangling, a, NULL, 0), "%s", sl_error_message());
    ck_assert(exists(at("made.safetensors")));
    ck_assert_int_eq(lstat(dangling, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    /* a loop is an error, not a hang */
    const char *l1 = at("loop1"), *l2 = at("loop2");
    ck_assert_int_eq(symlink("loop2", l1), 0);
    ck_assert_int_eq(symlink("loop1", l2), 0);
    ck_assert(!sl_save_params(l1, a, NULL, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "too many levels of symbolic links"));
    free(sb);
    sl_params_free(a);
    sl_params_free(b);
    sl_params_free(probe);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_safety");
    TCase *tc = tcase_create("checkpoint_safety");
    tu_fixture(tc, setup, teardown);
    tu_add_test(s, tc, params_config_api);
    tu_add_test(s, tc, params_config_mismatch_is_refused);
    tu_add_test(s, tc, params_config_only_what_matters);
    tu_add_test(s, tc, generic_registry_loads_as_before);
    tu_add_test(s, tc, nonfinite_values_are_refused);
    tu_add_test(s, tc, load_converts_dtypes_on_request);
    tu_add_test(s, tc, gpt_load_learned_context_bomb);
    tu_add_test(s, tc, gpt_load_t5_bucket_bomb);
    tu_add_test(s, tc, gpt_load_checks_config_and_tensors_first);
    tu_add_test(s, tc, gpt_load_every_layout);
    tu_add_test(s, tc, unused_tensors_are_never_read);
    tu_add_test(s, tc, fifo_and_devices_are_refused);
    tu_add_test(s, tc, save_removes_stale_temp_files);
    tu_add_test(s, tc, save_keeps_the_mode);
    tu_add_test(s, tc, save_follows_symlinks);
    return tu_run(s);
}
