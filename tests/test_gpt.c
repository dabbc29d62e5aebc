/* The GPT: config errors, names, a whole-model float64 gradcheck, the PyTorch reference
 * fixture, incremental decoding with KV caches against full recomputes (past the training
 * context), dropout, and an overfit run; for every positional method: its parameters, a
 * gradcheck, decoding, and a checkpoint round trip. */
#include "ckpt_testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A tiny model; callers override fields. */
static sl_gpt_config tiny(sl_pos pos)
{
    return (sl_gpt_config){.vocab_size = 11, .context = 8, .dim = 8, .n_layers = 2,
                           .n_heads = 2, .n_kv_heads = 0, .mlp_ratio = 2, .pos = pos,
                           .tie_embeddings = false, .fused_qkv = true, .seed = 42};
}

static sl_tensor *random_ids(sl_rng *r, int64_t B, int64_t T, int64_t V)
{
    sl_tensor *t = sl_empty(SL_I32, 2, (int64_t[]){B, T});
    for (int64_t i = 0; i < B * T; i++) ((int32_t *)t->data)[i] = (int32_t)sl_rng_below(r, V);
    return t;
}

/* Sets every parameter to normal(0, std), LayerNorm weights around 1. */
static void randomize(sl_gpt *m, uint64_t seed, double std)
{
    sl_rng r = sl_rng_seed(seed);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *p = sl_params_at(m->params, i);
        ck_assert(sl_init_normal(p->value, &r, std));
        if (strstr(p->name, "ln") && strstr(p->name, "weight"))
            for (int64_t k = 0; k < sl_numel(p->value); k++)
                sl_set(p->value, k, 1 + sl_get(p->value, k));
    }
}

/* ---------------------------------------------------------------- config and names */

START_TEST(config_errors_are_clear)
{
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    c.dim = 10, c.n_heads = 4;
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: dim 10 is not a multiple of n_heads 4");
    sl_error_clear();
    c = tiny(SL_POS_ALIBI);
    c.n_heads = 4, c.n_kv_heads = 3;
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(),
                     "sl_gpt_new: n_heads 4 is not a multiple of n_kv_heads 3");
    sl_error_clear();
    c = tiny(SL_POS_ALIBI);
    c.vocab_size = 0;
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: vocab_size 0 outside [1, 2147483647]");
    sl_error_clear();
    c = tiny(SL_POS_ALIBI);
    c.n_layers = 0;
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: dim 8, n_layers 0, n_heads 2, n_kv_heads 0 "
                                         "and mlp_ratio 2 must be >= 1");
    sl_error_clear();
    c = tiny(SL_POS_ALIBI);
    c.dropout = 1.0;
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: dropout 1 outside [0, 1)");
    sl_error_clear();
    c = tiny((sl_pos)99);
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: unknown positional method 99");
    sl_error_clear();
    c = tiny(SL_POS_ALIBI);
    ck_assert_ptr_null(sl_gpt_new(&c, SL_I32));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert_ptr_null(sl_gpt_new(NULL, SL_F32));
    sl_error_clear();

    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_null(sl_gpt_forward(m, sl_zeros(SL_F32, sl_shape(1, 4)), NULL));
    ck_assert_str_eq(sl_error_message(),
                     "sl_gpt_forward: idx must be i32 (B, T) with B, T >= 1, got f32 [1,4]");
    sl_error_clear();
    sl_tensor *bad = sl_full(SL_I32, sl_shape(1, 4), 11);
    ck_assert_ptr_null(sl_gpt_forward(m, bad, NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_INDEX); /* from sl_embedding */
    sl_error_clear();
    ck_assert_ptr_null(sl_gpt_loss(m, sl_zeros(SL_I32, sl_shape(1, 4)),
                                   sl_zeros(SL_I32, sl_shape(1, 3))));
    ck_assert_str_eq(sl_error_message(),
                     "sl_gpt_loss: targets i32 [1,3] do not match idx i32 [1,4]");
    sl_error_clear();
    sl_kv_cache **kv = sl_gpt_kv_caches_new(m, 1, 8);
    ck_assert_ptr_null(sl_gpt_forward(m, sl_zeros(SL_I32, sl_shape(1, 4)), kv));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_forward: decoding with KV caches needs grad "
                                         "mode off (sl_set_grad_enabled(false))");
    sl_error_clear();
    sl_gpt_free(m);
}
END_TEST

START_TEST(parameter_names_and_counts)
{
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    c.n_layers = 1, c.fused_qkv = false, c.n_kv_heads = 1;
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert_ptr_nonnull(m);
    const char *names[] = {
        "tok.weight", "blocks.0.ln1.weight", "blocks.0.ln1.bias", "blocks.0.attn.q.weight",
        "blocks.0.attn.q.bias", "blocks.0.attn.k.weight", "blocks.0.attn.k.bias",
        "blocks.0.attn.v.weight", "blocks.0.attn.v.bias", "blocks.0.attn.proj.weight",
        "blocks.0.attn.proj.bias", "blocks.0.ln2.weight", "blocks.0.ln2.bias",
        "blocks.0.mlp.fc.weight", "blocks.0.mlp.fc.bias", "blocks.0.mlp.proj.weight",
        "blocks.0.mlp.proj.bias", "ln_f.weight", "ln_f.bias", "head.weight"};
    int n = sizeof names / sizeof *names;
    ck_assert_int_eq(sl_params_count(m->params), n);
    for (int i = 0; i < n; i++) ck_assert_str_eq(sl_params_at(m->params, i)->name, names[i]);
    /* V C + ln 2C + q (C C + C) + k, v 2 (D C + D) + proj (C C + C) + ln 2C + fc (2C C + 2C)
     * + proj (C 2C + C) + ln_f 2C + head V C, with V = 11, C = 8, D = 4. */
    ck_assert_int_eq(sl_params_numel(m->params),
                     88 + 16 + 72 + 2 * 36 + 72 + 16 + 144 + 136 + 16 + 88);
    ck_assert(sl_params_find(m->params, "blocks.0.attn.k.weight")->shape[0] == 4);
    ck_assert(!sl_params_at(m->params, 0)->decay);               /* embedding */
    ck_assert(sl_params_at(m->params, n - 1)->decay);            /* head weight */
    ck_assert(!sl_params_at(m->params, n - 2)->decay);           /* ln_f bias */
    sl_gpt_free(m);

    c.tie_embeddings = true;
    m = sl_gpt_new(&c, SL_F32);
    ck_assert_ptr_null(m->head);
    ck_assert_int_eq(sl_params_count(m->params), n - 1);
    ck_assert_ptr_null(sl_params_find(m->params, "head.weight"));
    sl_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- gradcheck */

typedef struct {
    sl_gpt *m;
    sl_tensor *idx, *targets;
} loss_ctx;

static sl_tensor *run_loss(sl_tensor *const *in, int n, void *user)
{
    loss_ctx *c = user;
    return sl_gpt_loss(c->m, c->idx, c->targets);
}

/* The loss's gradient with respect to every parameter, against finite differences, for each
 * layout: alibi/none, fused/separate qkv, GQA, tied/untied head. */
START_TEST(whole_model_gradcheck_f64)
{
    for (int k = 0; k < 4; k++) {
        sl_gpt_config c = tiny(k % 2 ? SL_POS_NONE : SL_POS_ALIBI);
        c.vocab_size = 7, c.mlp_ratio = 2, c.n_heads = 2;
        c.fused_qkv = k < 2;
        c.tie_embeddings = k == 1 || k == 2;
        c.n_kv_heads = k == 3 ? 1 : 0;
        sl_gpt *m = sl_gpt_new(&c, SL_F64);
        ck_assert_ptr_nonnull(m);
        randomize(m, 10 + k, 0.5);
        sl_rng r = sl_rng_seed(k);
        loss_ctx ctx = {m, random_ids(&r, 2, 5, 7), random_ids(&r, 2, 5, 7)};
        sl_tensor *in[64];
        int n = sl_params_count(m->params);
        for (int i = 0; i < n; i++) in[i] = sl_params_at(m->params, i)->value;
        tu_gradcheck(run_loss, n, in, &ctx);
        sl_gpt_free(m);
    }
}
END_TEST

/* A model trained in f32 checked in f64 (issue 10): sl_params_copy converts every parameter;
 * the f64 copy's loss is the f32 model's to f32 precision, and the gradcheck runs on it. */
START_TEST(f32_model_copied_into_f64_for_a_gradcheck)
{
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    c.vocab_size = 7, c.n_layers = 1;
    sl_gpt *m32 = sl_gpt_new(&c, SL_F32);
    c.seed = 43; /* other weights, so that the copy is what makes them agree */
    sl_gpt *m64 = sl_gpt_new(&c, SL_F64);
    ck_assert_ptr_nonnull(m32);
    ck_assert_ptr_nonnull(m64);
    randomize(m32, 12, 0.5);
    sl_rng r = sl_rng_seed(13);
    loss_ctx ctx = {m64, random_ids(&r, 2, 5, 7), random_ids(&r, 2, 5, 7)};
    double l32 = sl_item(sl_gpt_loss(m32, ctx.idx, ctx.targets));
    double before = sl_item(sl_gpt_loss(m64, ctx.idx, ctx.targets));
    ck_assert_msg(sl_params_copy(m64->params, m32->params), "%s", sl_error_message());
    double l64 = sl_item(sl_gpt_loss(m64, ctx.idx, ctx.targets));
    ck_assert_double_gt(fabs(before - l32), 1e-3); /* they did differ */
    ck_assert_msg(fabs(l64 - l32) <= 1e-6 * fabs(l64), "f32 %.10g, f64 %.10g", l32, l64);
    sl_tensor *in[64];
    int n = sl_params_count(m64->params);
    for (int i = 0; i < n; i++) in[i] = sl_params_at(m64->params, i)->value;
    tu_gradcheck(run_loss, n, in, &ctx);
    sl_gpt_free(m32);
    sl_gpt_free(m64);
}
END_TEST

START_TEST(loss_is_mean_cross_entropy_ignoring_minus_one)
{
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    sl_gpt *m = sl_gpt_new(&c, SL_F64);
    randomize(m, 3, 0.5);
    sl_rng r = sl_rng_seed(3);
    sl_tensor *idx = random_ids(&r, 2, 6, 11), *tg = random_ids(&r, 2, 6, 11);
    ((int32_t *)tg->data)[1] = -1;
    ((int32_t *)tg->data)[7] = -1;
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL), *loss = sl_gpt_loss(m, idx, tg);
    ck_assert(logits && loss);
    double sum = 0;
    int count = 0;
    for (int row = 0; row < 12; row++) {
        int t = ((int32_t *)tg->data)[row];
        if (t < 0) continue;
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < 11; v++) mx = fmax(mx, sl_get(logits, row * 11 + v));
        for (int v = 0; v < 11; v++) z += exp(sl_get(logits, row * 11 + v) - mx);
        sum += mx + log(z) - sl_get(logits, row * 11 + t);
        count++;
    }
    ck_assert_close(sl_item(loss), sum / count, 1e-13, 0);
    sl_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- the PyTorch fixture */

#define FX_MAX 128

typedef struct {
    int n;
    char name[FX_MAX][128];
    sl_tensor *t[FX_MAX];
} fixture;

/* Reads the records of make_gpt_fixture.py's file (format in its docstring) into tensors in
 * the current arena. */
static void fixture_load(fixture *f)
{
    char path[4096];
    const char *src = getenv("SL_SOURCE_DIR");
    if (src) {
        snprintf(path, sizeof path, "%s/tests/fixtures/gpt_alibi_tiny.bin", src);
    } else { /* beside this file */
        snprintf(path, sizeof path, "%s", __FILE__);
        char *slash = strrchr(path, '/');
        snprintf(slash ? slash + 1 : path, sizeof path - (size_t)(slash ? slash + 1 - path : 0),
                 "fixtures/gpt_alibi_tiny.bin");
    }
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open the fixture %s (set SL_SOURCE_DIR)", path);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    ck_assert(buf && fread(buf, 1, (size_t)size, fp) == (size_t)size);
    fclose(fp);
    size_t pos = 0;
#define TAKE(dst, bytes)                                                                         \
    do {                                                                                         \
        ck_assert_msg(pos + (bytes) <= (size_t)size, "fixture truncated at byte %zu", pos);     \
        memcpy((dst), buf + pos, (bytes));                                                       \
        pos += (bytes);                                                                          \
    } while (0)
    char magic[8];
    uint32_t count;
    TAKE(magic, 8);
    ck_assert(!memcmp(magic, "SLFIXT01", 8));
    TAKE(&count, 4);
    ck_assert_int_le(count, FX_MAX);
    for (uint32_t i = 0; i < count; i++) {
        uint16_t len;
        uint8_t dt, nd;
        int64_t shape[SL_MAX_DIMS];
        TAKE(&len, 2);
        ck_assert_int_lt(len, 128);
        TAKE(f->name[i], len);
        f->name[i][len] = '\0';
        TAKE(&dt, 1);
        TAKE(&nd, 1);
        ck_assert(dt <= SL_I32 && nd <= SL_MAX_DIMS);
        TAKE(shape, 8 * (size_t)nd);
        f->t[i] = sl_empty((sl_dtype)dt, nd, shape);
        ck_assert_ptr_nonnull(f->t[i]);
        TAKE(f->t[i]->data, (size_t)sl_numel(f->t[i]) * sl_dtype_size(dt));
    }
#undef TAKE
    ck_assert_int_eq(pos, size);
    f->n = (int)count;
    free(buf);
}

static sl_tensor *fx(const fixture *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->name[i], name)) return f->t[i];
    ck_abort_msg("the fixture has no record '%s'", name);
    return NULL;
}

/* Builds the fixture's model in dtype with its weights. */
static sl_gpt *fixture_model(const fixture *f, sl_dtype dtype)
{
    const sl_tensor *c = fx(f, "config");
    const int32_t *v = c->data;
    sl_gpt_config cfg = {.vocab_size = v[0], .context = v[1], .dim = v[2], .n_layers = v[3],
                         .n_heads = v[4], .n_kv_heads = v[5], .mlp_ratio = v[6],
                         .pos = SL_POS_ALIBI, .tie_embeddings = v[7], .fused_qkv = v[8]};
    sl_gpt *m = sl_gpt_new(&cfg, dtype);
    ck_assert_msg(m != NULL, "%s", sl_error_message());
    int n_param_records = 0;
    for (int i = 0; i < f->n; i++) n_param_records += !strncmp(f->name[i], "param.", 6);
    ck_assert_int_eq(n_param_records, sl_params_count(m->params));
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *p = sl_params_at(m->params, i);
        char key[160];
        snprintf(key, sizeof key, "param.%s", p->name);
        ck_assert_msg(sl_copy_into(p->value, fx(f, key)), "%s: %s", key, sl_error_message());
    }
    return m;
}

/* The C model against PyTorch (float64 reference): logits, loss and every parameter's
 * gradient, to tol relative (each tensor's max |difference| over its max |value|), then the
 * losses after each of a few AdamW steps. */
static void check_against_fixture(sl_dtype dtype, double tol, double adam_tol)
{
    fixture *f = calloc(1, sizeof *f);
    fixture_load(f);
    sl_gpt *m = fixture_model(f, dtype);
    sl_tensor *idx = fx(f, "idx"), *tg = fx(f, "targets");
    bool prev = sl_set_grad_enabled(false);
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL);
    sl_set_grad_enabled(prev);
    ck_assert_ptr_nonnull(logits);
    double d = tu_max_rel_diff(logits, fx(f, "logits"));
    ck_assert_msg(d <= tol, "%s logits differ from PyTorch by %.3g relative", sl_dtype_name(dtype), d);
    sl_tensor *loss = sl_gpt_loss(m, idx, tg);
    ck_assert(loss && sl_backward(loss));
    double want = sl_item(fx(f, "loss"));
    ck_assert_msg(fabs(sl_item(loss) - want) <= tol * want, "loss %.10g, PyTorch %.10g",
                  sl_item(loss), want);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *p = sl_params_at(m->params, i);
        char key[160];
        snprintf(key, sizeof key, "grad.%s", p->name);
        ck_assert_msg(p->value->grad != NULL, "%s has no gradient", p->name);
        double g = tu_max_rel_diff(p->value->grad, fx(f, key));
        ck_assert_msg(g <= tol, "%s %s: gradient differs from PyTorch by %.3g relative",
                      sl_dtype_name(dtype), p->name, g);
    }

    const double *hp = fx(f, "adamw.hparams")->data; /* lr, beta1, beta2, eps, weight decay */
    const sl_tensor *losses = fx(f, "adamw.losses");
    sl_adamw_config ac = {hp[1], hp[2], hp[3], hp[4]};
    sl_optim *opt = sl_adamw_new(m->params, &ac);
    ck_assert_msg(opt != NULL, "%s", sl_error_message());
    for (int k = 1; k < sl_numel(losses); k++) {
        ck_assert(sl_optim_step(opt, hp[0])); /* the gradients of the loss before step k */
        sl_params_zero_grad(m->params);
        loss = sl_gpt_loss(m, idx, tg);
        ck_assert(loss && sl_backward(loss));
        double lk = sl_item(loss), wk = sl_get(losses, k);
        ck_assert_msg(fabs(lk - wk) <= adam_tol * wk, "%s: loss after %d AdamW steps %.10g, "
                      "PyTorch %.10g", sl_dtype_name(dtype), k, lk, wk);
    }
    sl_optim_free(opt);
    sl_gpt_free(m);
    free(f);
}

START_TEST(matches_pytorch_f32) { check_against_fixture(SL_F32, 1e-5, 1e-5); }
END_TEST

START_TEST(matches_pytorch_f64) { check_against_fixture(SL_F64, 1e-10, 1e-10); }
END_TEST

/* ---------------------------------------------------------------- KV-cache decoding */

/* Logits for T = 20 positions (2.5x the context of 8) computed in one pass, and again
 * incrementally: a prompt of 5, then 10 single tokens, then a chunk of 5. */
static void check_incremental(sl_gpt_config c, sl_dtype dtype, double tol)
{
    enum { B = 2, T = 20 };
    sl_gpt *m = sl_gpt_new(&c, dtype);
    ck_assert_ptr_nonnull(m);
    randomize(m, 5, 0.4);
    sl_rng r = sl_rng_seed(6);
    sl_tensor *idx = random_ids(&r, B, T, c.vocab_size);
    bool prev = sl_set_grad_enabled(false);
    sl_tensor *full = sl_gpt_forward(m, idx, NULL); // (B, T, V)
    ck_assert_ptr_nonnull(full);
    sl_kv_cache **kv = sl_gpt_kv_caches_new(m, B, T);
    ck_assert_ptr_nonnull(kv);
    const int64_t chunks[] = {5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5};
    int64_t at = 0;
    for (size_t s = 0; s < sizeof chunks / sizeof *chunks; s++) {
        sl_tensor *part = sl_contiguous(sl_narrow(idx, 1, at, chunks[s]));
        sl_tensor *got = sl_gpt_forward(m, part, kv);
        ck_assert_msg(got != NULL, "%s", sl_error_message());
        sl_tensor *want = sl_narrow(full, 1, at, chunks[s]);
        double d = tu_max_rel_diff(got, want);
        ck_assert_msg(d <= tol, "%s %s: positions [%lld, %lld): incremental logits differ by "
                      "%.3g relative", sl_pos_name(c.pos), sl_dtype_name(dtype), (long long)at,
                      (long long)(at + chunks[s]), d);
        at += chunks[s];
        ck_assert_int_eq(kv[0]->len, at);
        ck_assert_int_eq(kv[c.n_layers - 1]->len, at);
    }
    ck_assert_int_eq(at, T);
    sl_set_grad_enabled(prev);
    sl_gpt_free(m);
}

START_TEST(kv_cache_decoding_matches_full_recompute_past_context)
{
    sl_gpt_config a = tiny(SL_POS_ALIBI);
    a.n_heads = 4, a.n_kv_heads = 2, a.dim = 16;
    sl_gpt_config n = tiny(SL_POS_NONE);
    n.fused_qkv = false, n.tie_embeddings = true;
    check_incremental(a, SL_F32, 1e-5);
    check_incremental(a, SL_F64, 1e-10);
    check_incremental(n, SL_F32, 1e-5);
    check_incremental(n, SL_F64, 1e-10);
}
END_TEST

/* Sinusoidal, rotary, T5, KERPLE, Sandwich and FIRE run past the context of 8 (T5 with 8
 * buckets up to distance 6, so the 20 positions reach the clamped last bucket; FIRE's default
 * threshold, 8 / 4 = 2, so that most queries are normalised by their own position); learned
 * runs up to its table of 20. */
START_TEST(kv_cache_decoding_every_method)
{
    const sl_pos methods[] = {SL_POS_SINUSOIDAL, SL_POS_ROTARY,   SL_POS_T5,  SL_POS_LEARNED,
                              SL_POS_KERPLE,     SL_POS_SANDWICH, SL_POS_FIRE};
    for (int k = 0; k < 7; k++) {
        sl_gpt_config c = tiny(methods[k]);
        c.n_heads = 4, c.n_kv_heads = k == 2 || k == 6 ? 2 : 0, c.dim = 16;
        if (methods[k] == SL_POS_T5) c.t5_buckets = 8, c.t5_max_distance = 6;
        if (methods[k] == SL_POS_LEARNED) c.context = 20;
        check_incremental(c, SL_F32, 1e-5);
        check_incremental(c, SL_F64, 1e-10);
    }
}
END_TEST

/* ---------------------------------------------------------------- positional methods */

START_TEST(positional_parameters)
{
    /* Sinusoidal and rotary add no parameters: the same count as none. */
    sl_gpt_config c = tiny(SL_POS_NONE);
    sl_gpt *none = sl_gpt_new(&c, SL_F32);
    int base = sl_params_count(none->params);
    int64_t numel = sl_params_numel(none->params);
    for (int p = 0; p < SL_POS_COUNT; p++) {
        c = tiny((sl_pos)p);
        sl_gpt *m = sl_gpt_new(&c, SL_F32);
        ck_assert_msg(m != NULL, "%s: %s", sl_pos_name((sl_pos)p), sl_error_message());
        int extra = p == SL_POS_LEARNED || p == SL_POS_T5 ? 1
                    : p == SL_POS_KERPLE                  ? 2
                    : p == SL_POS_FIRE                    ? 6 * c.n_layers
                                                          : 0;
        ck_assert_int_eq(sl_params_count(m->params), base + extra);
        ck_assert_int_eq(m->cfg.t5_buckets, 32); /* resolved defaults */
        ck_assert_int_eq(m->cfg.t5_max_distance, 128);
        if (p == SL_POS_LEARNED) { /* registered right after the token embedding */
            const sl_param *pp = sl_params_at(m->params, 1);
            ck_assert_str_eq(pp->name, "pos.weight");
            ck_assert_ptr_eq(pp->value, m->pos->weight);
            ck_assert(pp->value->shape[0] == 8 && pp->value->shape[1] == 8 && !pp->decay);
            ck_assert_int_eq(sl_params_numel(m->params), numel + 8 * 8);
        } else if (p == SL_POS_T5) { /* one table that every layer shares */
            const sl_param *pp = sl_params_at(m->params, 1);
            ck_assert_str_eq(pp->name, "pos.rel_bias");
            ck_assert(pp->value->shape[0] == 2 && pp->value->shape[1] == 32 && !pp->decay);
            for (int l = 0; l < c.n_layers; l++)
                ck_assert_ptr_eq(m->blocks[l]->attn->t5_table, pp->value);
            ck_assert_int_eq(sl_params_numel(m->params), numel + 2 * 32);
        } else if (p == SL_POS_KERPLE) { /* one pair that every layer shares */
            ck_assert_str_eq(sl_params_at(m->params, 1)->name, "pos.kerple_log_r1");
            ck_assert_str_eq(sl_params_at(m->params, 2)->name, "pos.kerple_log_r2");
            for (int l = 0; l < c.n_layers; l++) {
                ck_assert_ptr_eq(m->blocks[l]->attn->kerple_log_r1, m->kerple_log_r1);
                ck_assert_ptr_eq(m->blocks[l]->attn->kerple_log_r2, m->kerple_log_r2);
            }
            for (int h = 0; h < 2; h++) { /* r1 in [0.01, 2), r2 in [0.01, 1) */
                double r1 = exp(sl_get(m->kerple_log_r1, h)), r2 = exp(sl_get(m->kerple_log_r2, h));
                ck_assert(r1 >= 0.01 - 1e-7 && r1 < 2 && r2 >= 0.01 - 1e-7 && r2 < 1);
            }
            ck_assert(!sl_params_at(m->params, 1)->decay && !sl_params_at(m->params, 2)->decay);
            ck_assert_int_eq(sl_params_numel(m->params), numel + 2 * 2);
        } else if (p == SL_POS_FIRE) { /* per layer: W = 32 hidden units, c, the threshold */
            ck_assert_int_eq(m->cfg.fire_width, 32);
            ck_assert_double_eq(m->cfg.fire_threshold, 2.0); /* context 8 / 4 */
            const sl_fire_weights *f = &m->blocks[1]->attn->fire;
            ck_assert_ptr_eq(sl_params_find(m->params, "blocks.1.attn.fire.fc2.weight"),
                             f->fc2_weight);
            ck_assert(f->fc1_weight->shape[0] == 32 && f->fc1_weight->shape[1] == 1);
            ck_assert(f->fc2_weight->shape[0] == 2 && f->fc2_weight->shape[1] == 32);
            ck_assert_double_eq_tol(sl_get(f->c, 0), 0.1, 1e-7);
            ck_assert_double_eq(sl_get(f->l_mult, 0), 1);
            for (int64_t k = 0; k < 32; k++) { /* nn.Linear's bounds: 1 and 1/sqrt(32) */
                ck_assert(fabs(sl_get(f->fc1_weight, k)) <= 1);
                ck_assert(fabs(sl_get(f->fc2_weight, k)) <= 1 / sqrt(32.0));
            }
            ck_assert_int_eq(sl_params_numel(m->params),
                             numel + c.n_layers * (32 + 32 + 2 * 32 + 2 + 1 + 1));
        } else {
            ck_assert_ptr_null(m->pos);
            ck_assert_ptr_null(m->t5_table);
            ck_assert_int_eq(sl_params_numel(m->params), numel);
        }
        sl_gpt_free(m);
    }
    sl_gpt_free(none);
    c = tiny(SL_POS_ROTARY);
    c.dim = 6, c.n_heads = 2; /* head dim 3 */
    ck_assert_ptr_null(sl_gpt_new(&c, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: rotary needs an even head dim, not "
                                         "3 (dim 6 / 2 heads)");
    sl_error_clear();
}
END_TEST

/* Sinusoidal and learned positions are added to the token embeddings before the blocks (which
 * sinusoidal scales by sqrt(C), as Vaswani et al. do). */
START_TEST(positions_added_to_embeddings)
{
    sl_rng r = sl_rng_seed(11);
    sl_tensor *idx = random_ids(&r, 2, 6, 11);
    for (int k = 0; k < 2; k++) {
        sl_gpt_config c = tiny(k ? SL_POS_LEARNED : SL_POS_SINUSOIDAL);
        sl_gpt *m = sl_gpt_new(&c, SL_F64);
        randomize(m, 12, 0.5);
        sl_tensor *x = sl_embedding_forward(m->tok, idx); // (2, 6, 8)
        for (int64_t i = 0; i < 2 * 6 * 8; i++) {
            int64_t t = i / 8 % 6, d = i % 8;
            double add = k ? sl_get(m->pos->weight, t * 8 + d)
                           : (d % 2 ? cos : sin)(t * pow(10000.0, -(double)(d - d % 2) / 8));
            sl_set(x, i, sl_get(x, i) * (k ? 1 : sqrt(8.0)) + add);
        }
        for (int l = 0; l < c.n_layers; l++)
            x = sl_block_forward(m->blocks[l], x, NULL, NULL, NULL, false);
        x = sl_linear_forward(m->head, sl_layer_norm_forward(m->ln_f, x));
        ck_assert_double_eq_tol(tu_max_abs_diff(sl_gpt_forward(m, idx, NULL), x), 0, 1e-13);
        sl_gpt_free(m);
    }
}
END_TEST

/* A learned-position model runs up to its table and fails clearly past it, in one pass or
 * when decoding, without touching the caches. */
START_TEST(learned_positions_stop_at_the_table)
{
    sl_gpt_config c = tiny(SL_POS_LEARNED);
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    sl_rng r = sl_rng_seed(13);
    ck_assert_ptr_nonnull(sl_gpt_forward(m, random_ids(&r, 1, 8, 11), NULL));
    ck_assert_ptr_null(sl_gpt_forward(m, random_ids(&r, 1, 9, 11), NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_INDEX);
    ck_assert_str_eq(sl_error_message(), "sl_gpt_forward: position 8 is past the learned "
                     "position table (8 positions); a learned-position model cannot run longer "
                     "than its training context");
    sl_error_clear();
    ck_assert_ptr_null(sl_gpt_loss(m, random_ids(&r, 1, 300, 11), random_ids(&r, 1, 300, 11)));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "position 299 is past"));
    sl_error_clear();
    bool prev = sl_set_grad_enabled(false);
    sl_kv_cache **kv = sl_gpt_kv_caches_new(m, 1, 16);
    ck_assert_ptr_nonnull(sl_gpt_forward(m, random_ids(&r, 1, 6, 11), kv));
    ck_assert_ptr_nonnull(sl_gpt_forward(m, random_ids(&r, 1, 2, 11), kv));
    ck_assert_int_eq(kv[0]->len, 8);
    ck_assert_ptr_null(sl_gpt_forward(m, random_ids(&r, 1, 1, 11), kv));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "position 8 is past"));
    sl_error_clear();
    ck_assert_int_eq(kv[0]->len, 8);
    ck_assert_int_eq(kv[1]->len, 8);
    sl_set_grad_enabled(prev);
    sl_gpt_free(m);
}
END_TEST

/* The loss's gradient against finite differences for each method that brings parameters or
 * acts inside the model: sinusoidal, learned, rotary (with GQA), T5 (small buckets, so several
 * are exercised by 6 positions; untied head), KERPLE, Sandwich, FIRE (a threshold of 2.5, so
 * that half the queries are past it; 5 hidden units, GQA). */
START_TEST(every_method_gradcheck_f64)
{
    const sl_pos methods[] = {SL_POS_SINUSOIDAL, SL_POS_LEARNED,  SL_POS_ROTARY, SL_POS_T5,
                              SL_POS_KERPLE,     SL_POS_SANDWICH, SL_POS_FIRE};
    for (int k = 0; k < 7; k++) {
        sl_gpt_config c = tiny(methods[k]);
        c.vocab_size = 7, c.n_heads = 2, c.context = 6;
        c.n_kv_heads = methods[k] == SL_POS_ROTARY || methods[k] == SL_POS_FIRE ? 1 : 0;
        c.tie_embeddings = methods[k] != SL_POS_T5;
        c.t5_buckets = 4, c.t5_max_distance = 4;
        c.fire_width = 5, c.fire_threshold = 2.5;
        if (k >= 4)
            c.n_layers = 1; /* the new methods: one layer (the modules' own gradchecks
                               and the ops' cover the rest) keeps the check quick */
        sl_gpt *m = sl_gpt_new(&c, SL_F64);
        ck_assert_msg(m != NULL, "%s", sl_error_message());
        randomize(m, 20 + k, 0.5);
        sl_rng r = sl_rng_seed(30 + k);
        loss_ctx ctx = {m, random_ids(&r, 2, 6, 7), random_ids(&r, 2, 6, 7)};
        sl_tensor *in[64];
        ck_assert_int_le(sl_params_count(m->params), 64);
        int n = sl_params_count(m->params);
        for (int i = 0; i < n; i++) in[i] = sl_params_at(m->params, i)->value;
        tu_gradcheck(run_loss, n, in, &ctx);
        sl_gpt_free(m);
    }
}
END_TEST

/* Each method saved and loaded: the config (T5's buckets included), the same logits. A file
 * written before the T5 keys existed (here: with them renamed away) loads with the defaults. */
START_TEST(checkpoint_round_trip_every_method)
{
    for (int p = 0; p < SL_POS_COUNT; p++) {
        sl_gpt_config c = tiny((sl_pos)p);
        c.t5_buckets = 12, c.t5_max_distance = 40;
        c.sandwich_dim = 6, c.fire_width = 3, c.fire_threshold = 1.25;
        sl_gpt *m = sl_gpt_new(&c, SL_F32);
        randomize(m, 40 + p, 0.3);
        const char *path = at("pos.safetensors");
        ck_assert_msg(sl_gpt_save(path, m, NULL, NULL, 0), "%s", sl_error_message());
        char buf[32];
        ck_assert(sl_read_meta(path, "shortlong.pos", buf, sizeof buf));
        ck_assert_str_eq(buf, sl_pos_name((sl_pos)p));
        ck_assert(sl_read_meta(path, "shortlong.t5_buckets", buf, sizeof buf));
        ck_assert_str_eq(buf, "12");
        ck_assert(sl_read_meta(path, "shortlong.t5_max_distance", buf, sizeof buf));
        ck_assert_str_eq(buf, "40");
        sl_gpt *l = sl_gpt_load(path, SL_F32);
        ck_assert_msg(l != NULL, "%s: %s", sl_pos_name((sl_pos)p), sl_error_message());
        ck_assert_int_eq(l->cfg.pos, p);
        ck_assert_int_eq(l->cfg.t5_buckets, 12);
        ck_assert_int_eq(l->cfg.t5_max_distance, 40);
        ck_assert_int_eq(l->cfg.sandwich_dim, p == SL_POS_SANDWICH ? 6 : 0);
        ck_assert_int_eq(l->cfg.fire_width, p == SL_POS_FIRE ? 3 : 0);
        ck_assert_double_eq(l->cfg.fire_threshold, p == SL_POS_FIRE ? 1.25 : 0);
        ck_assert_int_eq(sl_params_count(l->params), sl_params_count(m->params));
        sl_rng r = sl_rng_seed(50);
        sl_tensor *idx = random_ids(&r, 1, 8, 11);
        bool prev = sl_set_grad_enabled(false);
        ck_assert_double_eq(tu_max_abs_diff(sl_gpt_forward(l, idx, NULL),
                                            sl_gpt_forward(m, idx, NULL)), 0);
        sl_set_grad_enabled(prev);
        sl_gpt_free(l);
        sl_gpt_free(m);
    }
    /* An older T5 checkpoint: no t5 keys, so 32 buckets up to 128. */
    sl_gpt_config c = tiny(SL_POS_T5);
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    const char *path = at("old.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    int renamed = 0;
    for (size_t i = 8; i + 13 <= len; i++)
        if (!memcmp(b + i, "shortlong.t5_", 13)) b[i + 10] = 'x', renamed++; /* "xt5_..." */
    ck_assert_int_eq(renamed, 2);
    write_bytes(path, b, len);
    free(b);
    char buf[8];
    ck_assert(!sl_read_meta(path, "shortlong.t5_buckets", buf, sizeof buf));
    sl_error_clear();
    sl_gpt *l = sl_gpt_load(path, SL_F32);
    ck_assert_msg(l != NULL, "%s", sl_error_message());
    ck_assert_int_eq(l->cfg.t5_buckets, 32);
    ck_assert_int_eq(l->cfg.t5_max_distance, 128);
    sl_gpt_free(l);
    sl_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- dropout */

START_TEST(dropout_only_in_training)
{
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    sl_gpt *plain = sl_gpt_new(&c, SL_F32);
    c.dropout = 0.2;
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    sl_rng r = sl_rng_seed(9);
    sl_tensor *idx = random_ids(&r, 2, 6, c.vocab_size);
    /* Dropout does not change the initial weights: in eval mode the logits are the same. */
    sl_tensor *a = sl_gpt_forward(plain, idx, NULL), *b = sl_gpt_forward(m, idx, NULL);
    ck_assert(tu_max_abs_diff(a, b) == 0);
    m->train = true;
    sl_rng start = m->rng;
    sl_tensor *t1 = sl_gpt_forward(m, idx, NULL), *t2 = sl_gpt_forward(m, idx, NULL);
    ck_assert(tu_max_abs_diff(t1, a) > 1e-4);
    ck_assert(tu_max_abs_diff(t1, t2) > 1e-4); /* the stream moves on */
    m->rng = start;
    ck_assert(tu_max_abs_diff(sl_gpt_forward(m, idx, NULL), t1) == 0); /* and replays */
    /* Where dropout sits: on the embeddings, then on each block's residual branches. */
    sl_rng rr = start;
    sl_tensor *x = sl_dropout(sl_embedding_forward(m->tok, idx), 0.2, &rr, true);
    for (int l = 0; l < c.n_layers; l++)
        x = sl_block_forward(m->blocks[l], x, NULL, &m->drop, &rr, true);
    x = sl_linear_forward(m->head, sl_layer_norm_forward(m->ln_f, x));
    ck_assert(tu_max_abs_diff(x, t1) == 0);
    sl_gpt_free(plain);
    sl_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- evaluation memory */

/* Without grad and without caches, sl_gpt_forward runs each block in scratch arenas of its
 * own and keeps only the block's output: the logits are bitwise those of a forward with grad,
 * and the caller's arena ends up holding a few (B, T, C) tensors and the logits, however many
 * layers there are, where a forward with grad keeps every block's intermediates. */
/* The evaluation-time settings. sl_gpt_scale_slopes: factor 1 changes nothing, bitwise; another
 * factor equals slopes multiplied by hand (fixed ones; learned ones through their logarithm).
 * sl_gpt_set_window: a window wider than the input changes nothing, bitwise; a window of 1
 * leaves each query its own key only, so position i's logits are those of token i alone, for
 * the fused path and the scores' (T5, KERPLE, FIRE). */
START_TEST(evaluation_window_and_slope_scale)
{
    sl_rng r = sl_rng_seed(70);
    sl_tensor *idx = random_ids(&r, 2, 12, 11);
    bool prev = sl_set_grad_enabled(false);
    for (int learned = 0; learned < 2; learned++) {
        sl_gpt_config c = tiny(SL_POS_ALIBI);
        c.slopes = learned ? SL_SLOPES_LEARNED : SL_SLOPES_FIXED;
        sl_gpt *m = sl_gpt_new(&c, SL_F64);
        randomize(m, 71, 0.4);
        sl_tensor *base = sl_gpt_forward(m, idx, NULL);
        ck_assert(sl_gpt_scale_slopes(m, 1));
        ck_assert(tu_max_abs_diff(sl_gpt_forward(m, idx, NULL), base) == 0);
        ck_assert(sl_gpt_scale_slopes(m, 0.25));
        sl_tensor *scaled = sl_gpt_forward(m, idx, NULL);
        ck_assert_double_gt(tu_max_abs_diff(scaled, base), 1e-6);
        ck_assert(sl_gpt_scale_slopes(m, 1));
        for (int l = 0; l < c.n_layers; l++) {
            sl_attention *a = m->blocks[l]->attn;
            for (int h = 0; h < c.n_heads; h++)
                if (learned) sl_set(a->log_slopes, h, sl_get(a->log_slopes, h) + log(0.25));
                else sl_set(a->slopes, h, 0.25 * sl_get(a->slopes, h));
        }
        ck_assert_double_le(tu_max_rel_diff(sl_gpt_forward(m, idx, NULL), scaled), 1e-13);
        ck_assert(!sl_gpt_scale_slopes(m, 0));
        ck_assert_str_eq(sl_error_message(),
                         "sl_gpt_scale_slopes: factor 0 must be finite and > 0");
        sl_error_clear();
        sl_gpt_free(m);
    }
    const sl_pos methods[] = {SL_POS_NONE, SL_POS_ALIBI, SL_POS_T5, SL_POS_KERPLE, SL_POS_FIRE};
    for (int k = 0; k < 5; k++) {
        sl_gpt_config c = tiny(methods[k]);
        c.fire_threshold = 3;
        sl_gpt *m = sl_gpt_new(&c, SL_F64);
        randomize(m, 72 + k, 0.4);
        sl_tensor *base = sl_gpt_forward(m, idx, NULL);
        ck_assert(sl_gpt_set_window(m, 12));
        ck_assert(tu_max_abs_diff(sl_gpt_forward(m, idx, NULL), base) == 0);
        ck_assert(sl_gpt_set_window(m, 1));
        sl_tensor *one = sl_gpt_forward(m, idx, NULL);
        ck_assert(sl_gpt_set_window(m, 0));
        for (int64_t t = 0; t < 12; t++) {
            sl_tensor *alone = sl_gpt_forward(m, sl_contiguous(sl_narrow(idx, 1, t, 1)), NULL);
            double d = tu_max_rel_diff(sl_narrow(one, 1, t, 1), alone);
            ck_assert_msg(d <= 1e-13, "%s, position %lld: %g", sl_pos_name(methods[k]),
                          (long long)t, d);
        }
        if (methods[k] != SL_POS_ALIBI) {
            ck_assert(!sl_gpt_scale_slopes(m, 0.5));
            ck_assert_ptr_nonnull(strstr(sl_error_message(), "only ALiBi has slopes"));
            sl_error_clear();
        }
        sl_gpt_free(m);
    }
    sl_gpt_config c = tiny(SL_POS_ALIBI);
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert(!sl_gpt_set_window(m, -1));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_set_window: window -1 must be >= 0 (0: none)");
    sl_error_clear();
    sl_gpt_free(m);
    sl_set_grad_enabled(prev);
}
END_TEST

START_TEST(eval_forward_keeps_one_block_at_a_time)
{
    const sl_pos methods[] = {SL_POS_ALIBI, SL_POS_ROTARY, SL_POS_T5, SL_POS_SINUSOIDAL};
    enum { B = 2, T = 24, C = 16, V = 11, L = 6 };
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        sl_gpt_config c = tiny(methods[i]);
        c.dim = C, c.n_layers = L, c.n_heads = 4, c.context = T;
        sl_gpt *m = sl_gpt_new(&c, SL_F32);
        ck_assert_msg(m != NULL, "%s", sl_error_message());
        randomize(m, 3, 0.2);
        sl_rng r = sl_rng_seed(4);
        sl_tensor *idx = random_ids(&r, B, T, V);
        size_t used[2];
        sl_tensor *y[2];
        for (int k = 0; k < 2; k++) { /* k = 0 with grad (recorded), 1 without */
            bool prev = sl_set_grad_enabled(k == 0);
            sl_arena *a = sl_arena_new(0), *outer = sl_arena_set(a);
            sl_tensor *out = sl_gpt_forward(m, idx, NULL);
            ck_assert_msg(out != NULL, "%s", sl_error_message());
            used[k] = sl_arena_used(a);
            sl_arena_set(outer);
            y[k] = sl_empty(SL_F32, out->ndim, out->shape);
            ck_assert(sl_copy_into(y[k], out));
            sl_arena_free(a);
            sl_set_grad_enabled(prev);
        }
        ck_assert_double_eq(tu_max_abs_diff(y[0], y[1]), 0);
        size_t act = sizeof(float) * B * T * C, logits = sizeof(float) * B * T * V;
        ck_assert_msg(used[1] <= 6 * act + logits + 16384, "%s: %zu bytes kept without grad",
                      sl_pos_name(methods[i]), used[1]);
        ck_assert_msg(used[0] > (size_t)L * 6 * act, "%s: only %zu bytes with grad",
                      sl_pos_name(methods[i]), used[0]);
        sl_gpt_free(m);
    }
}
END_TEST

/* A warm training step of each method after ALiBi (their biases through materialised scores)
 * allocates nothing from the heap, as ALiBi's does (overfits_one_batch). */
START_TEST(warm_step_allocates_nothing_for_the_methods_after_alibi)
{
    const sl_pos methods[] = {SL_POS_KERPLE, SL_POS_SANDWICH, SL_POS_FIRE, SL_POS_T5};
    for (int k = 0; k < 4; k++) {
        sl_gpt_config c = tiny(methods[k]);
        c.fire_threshold = 3;
        sl_gpt *m = sl_gpt_new(&c, SL_F32);
        sl_rng r = sl_rng_seed(80);
        sl_tensor *idx = random_ids(&r, 2, 8, 11), *tg = random_ids(&r, 2, 8, 11);
        sl_optim *opt = sl_adamw_new(m->params, NULL);
        sl_arena *step = sl_arena_new(0), *outer = sl_arena_set(step);
        uint64_t heap_at_2 = 0;
        for (int it = 0; it < 6; it++) {
            if (it == 2) heap_at_2 = sl_heap_allocs();
            sl_tensor *loss = sl_gpt_loss(m, idx, tg);
            ck_assert_msg(loss && sl_backward(loss), "%s: %s", sl_pos_name(methods[k]),
                          sl_error_message());
            ck_assert(sl_optim_step(opt, 1e-3));
            sl_params_zero_grad(m->params);
            sl_arena_reset(step);
        }
        ck_assert_msg(sl_heap_allocs() == heap_at_2, "%s: %llu heap allocations in warm steps",
                      sl_pos_name(methods[k]), (unsigned long long)(sl_heap_allocs() - heap_at_2));
        sl_arena_set(outer);
        sl_arena_free(step);
        sl_optim_free(opt);
        sl_gpt_free(m);
    }
}
END_TEST

/* ---------------------------------------------------------------- overfit */

/* A 2-layer ALiBi GPT (V 16, C 32, 4 heads) memorises one batch of 2 x 16 random tokens:
 * AdamW at lr 1e-2 without decay brings the loss from about ln 16 = 2.77 below 0.05 in at most
 * STEPS steps (it takes about 40). */
START_TEST(overfits_one_batch)
{
    enum { STEPS = 150 };
    sl_gpt_config c = {.vocab_size = 16, .context = 16, .dim = 32, .n_layers = 2, .n_heads = 4,
                       .pos = SL_POS_ALIBI, .fused_qkv = true, .seed = 1};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    sl_rng r = sl_rng_seed(10);
    sl_tensor *idx = random_ids(&r, 2, 16, 16), *tg = random_ids(&r, 2, 16, 16);
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){0.9, 0.95, 1e-8, 0.0});
    ck_assert_ptr_nonnull(opt);
    sl_arena *step = sl_arena_new(0);
    sl_arena *outer = sl_arena_set(step);
    double first = NAN, last = NAN;
    uint64_t heap_at_2 = 0;
    int it = 0;
    for (; it < STEPS; it++) {
        /* Once warm, a step (forward, backward, update, reset) allocates nothing. */
        if (it == 2) heap_at_2 = sl_heap_allocs();
        if (it == 12) ck_assert_int_eq(sl_heap_allocs(), heap_at_2);
        sl_tensor *loss = sl_gpt_loss(m, idx, tg);
        ck_assert_msg(loss && sl_backward(loss), "step %d: %s", it, sl_error_message());
        last = sl_item(loss);
        if (it == 0) first = last;
        if (last < 0.05) break;
        ck_assert(sl_optim_step(opt, 1e-2));
        sl_params_zero_grad(m->params);
        sl_arena_reset(step);
    }
    sl_arena_set(outer);
    sl_arena_free(step);
    ck_assert_msg(fabs(first - log(16.0)) < 0.3, "initial loss %g, not near ln 16", first);
    ck_assert_msg(last < 0.05, "loss %g after %d steps (first %g)", last, it, first);
    sl_optim_free(opt);
    sl_gpt_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gpt");
    TCase *tc = tcase_create("gpt");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, config_errors_are_clear);
    tu_add_test(s, tc, parameter_names_and_counts);
    tu_add_test(s, tc, whole_model_gradcheck_f64);
    tu_add_test(s, tc, f32_model_copied_into_f64_for_a_gradcheck);
    tu_add_test(s, tc, loss_is_mean_cross_entropy_ignoring_minus_one);
    tu_add_test(s, tc, matches_pytorch_f32);
    tu_add_test(s, tc, matches_pytorch_f64);
    tu_add_test(s, tc, kv_cache_decoding_matches_full_recompute_past_context);
    tu_add_test(s, tc, kv_cache_decoding_every_method);
    tu_add_test(s, tc, positional_parameters);
    tu_add_test(s, tc, positions_added_to_embeddings);
    tu_add_test(s, tc, learned_positions_stop_at_the_table);
    tu_add_test(s, tc, every_method_gradcheck_f64);
    tu_add_test(s, tc, dropout_only_in_training);
    tu_add_test(s, tc, evaluation_window_and_slope_scale);
    tu_add_test(s, tc, eval_forward_keeps_one_block_at_a_time);
    tu_add_test(s, tc, warm_step_allocates_nothing_for_the_methods_after_alibi);
    tu_add_test(s, tc, overfits_one_batch);
    TCase *files = tcase_create("files"); /* in a temporary directory */
    tu_fixture(files, setup, teardown);
    tu_add_test(s, files, checkpoint_round_trip_every_method);
    return tu_run(s);
}
