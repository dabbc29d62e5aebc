/* Checkpoints of training and of GPT models: bitwise-identical resumption of training with
 * AdamW and SGD, the optimizer checks on load, GPT round trips (config, weights, dropout rng,
 * logits) and a clear error for every kind of bad config. */
#include "ckpt_testutil.h"

/* ---------------------------------------------------------------- training checkpoints */

/* A two-layer regression on a fixed data set; each step draws its batch with the rng and
 * advances a data position, so resuming has to restore both. */
typedef struct {
    sl_params *ps;
    sl_linear_module *l1, *l2;
    sl_optim *opt;
    float x[32][8], y[32][4];
    sl_rng rng;
    int64_t pos;
} trainer;

static void trainer_init(trainer *t, uint64_t init_seed, bool sgd)
{
    sl_rng r = sl_rng_seed(init_seed);
    t->ps = sl_params_new(SL_F32);
    t->l1 = sl_linear_new(t->ps, "l1", 8, 16, true, &r);
    t->l2 = sl_linear_new(t->ps, "l2", 16, 4, true, &r);
    ck_assert_ptr_nonnull(t->l2);
    t->opt = sgd ? sl_sgd_new(t->ps, 0.9, 0.01)
                 : sl_adamw_new(t->ps, &(sl_adamw_config){.weight_decay = 0.1});
    sl_rng d = sl_rng_seed(100); /* the data set is the same for every trainer */
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < 8; j++) t->x[i][j] = (float)sl_rng_normal(&d);
        for (int j = 0; j < 4; j++) t->y[i][j] = (float)sl_rng_normal(&d);
    }
    t->rng = sl_rng_seed(5);
    t->pos = 0;
}

static void trainer_free(trainer *t)
{
    sl_optim_free(t->opt);
    sl_params_free(t->ps);
}

static void train(trainer *t, int steps)
{
    for (int s = 0; s < steps; s++) {
        float bx[4][8], by[4][4];
        for (int i = 0; i < 4; i++) {
            int64_t row = (t->pos * 4 + (int64_t)sl_rng_below(&t->rng, 8)) % 32;
            memcpy(bx[i], t->x[row], sizeof bx[i]);
            memcpy(by[i], t->y[row], sizeof by[i]);
        }
        t->pos++;
        sl_params_zero_grad(t->ps);
        sl_tensor *x = sl_from_data(SL_F32, sl_shape(4, 8), bx);
        sl_tensor *y = sl_from_data(SL_F32, sl_shape(4, 4), by);
        sl_tensor *out = sl_linear_forward(t->l2, sl_tanh(sl_linear_forward(t->l1, x)));
        sl_tensor *d = sl_sub(out, y);
        ck_assert_msg(sl_backward(sl_mean_all(sl_mul(d, d))), "%s", sl_error_message());
        double lr = sl_lr_warmup_cosine(sl_optim_steps(t->opt), 2, 10, 0.05, 0.005);
        ck_assert(sl_optim_step(t->opt, lr));
    }
}

static void save_trainer(const trainer *t, const char *path)
{
    char pos[32], rng[80];
    snprintf(pos, sizeof pos, "%lld", (long long)t->pos);
    snprintf(rng, sizeof rng, "%016llx%016llx%016llx%016llx", (unsigned long long)t->rng.s[0],
             (unsigned long long)t->rng.s[1], (unsigned long long)t->rng.s[2],
             (unsigned long long)t->rng.s[3]);
    sl_meta meta[] = {{"data.position", pos}, {"rng", rng}};
    ck_assert_msg(sl_save_training(path, t->ps, t->opt, meta, 2), "%s", sl_error_message());
}

/* The data position and the rng from the caller's metadata. */
static void load_position(trainer *t, const char *path)
{
    char buf[80];
    ck_assert(sl_read_meta(path, "data.position", buf, sizeof buf));
    t->pos = strtoll(buf, NULL, 10);
    ck_assert(sl_read_meta(path, "rng", buf, sizeof buf));
    for (int w = 0; w < 4; w++) {
        char word[17];
        memcpy(word, buf + 16 * w, 16);
        word[16] = '\0';
        t->rng.s[w] = strtoull(word, NULL, 16);
    }
}

static void load_trainer(trainer *t, const char *path)
{
    ck_assert_msg(sl_load_training(path, t->ps, t->opt), "%s", sl_error_message());
    load_position(t, path);
}

START_TEST(training_resumes_bitwise)
{
    for (int k = 0; k < 2; k++) {
        const char *path = at("train.safetensors");
        trainer a, b;
        trainer_init(&a, 1, k);
        train(&a, 3);
        save_trainer(&a, path);
        train(&a, 3);
        /* A fresh trainer with another initialisation and another rng state. */
        trainer_init(&b, 2, k);
        b.rng = sl_rng_seed(99);
        load_trainer(&b, path);
        ck_assert_int_eq(sl_optim_steps(b.opt), 3);
        ck_assert_int_eq(b.pos, 3);
        train(&b, 3);
        ck_assert_int_eq(sl_optim_steps(b.opt), 6);
        size_t na, nb;
        unsigned char *sa = snapshot(a.ps, &na), *sb = snapshot(b.ps, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(sa, sb, na) == 0, "resumed training differs (%s)",
                      k ? "sgd" : "adamw");
        /* and the optimizer state matters: without it the run differs */
        trainer c;
        trainer_init(&c, 2, k);
        ck_assert(sl_load_params(path, c.ps)); /* weights only */
        load_position(&c, path);
        train(&c, 3);
        unsigned char *sc = snapshot(c.ps, &nb);
        ck_assert_msg(memcmp(sa, sc, na) != 0, "optimizer state made no difference");
        free(sa);
        free(sb);
        free(sc);
        trainer_free(&a);
        trainer_free(&b);
        trainer_free(&c);
    }
}
END_TEST

START_TEST(training_checkpoint_errors)
{
    trainer a;
    trainer_init(&a, 1, false);
    train(&a, 1);
    const char *path = at("t.safetensors"), *plain = at("plain.safetensors");
    save_trainer(&a, path);
    char want[512];
    /* another optimizer type, other settings, a file without optimizer state */
    sl_optim *sgd = sl_sgd_new(a.ps, 0.9, 0);
    ck_assert(!sl_load_training(path, a.ps, sgd));
    snprintf(want, sizeof want, "sl_load_training: %s: the optimizer in the file is 'adamw', "
             "this one is 'sgd'", path);
    ck_assert_str_eq(sl_error_message(), want);
    sl_optim *other = sl_adamw_new(a.ps, &(sl_adamw_config){.beta2 = 0.999, .weight_decay = 0.1});
    ck_assert(!sl_load_training(path, a.ps, other));
    snprintf(want, sizeof want, "sl_load_training: %s: optim.beta2 is 0.94999999999999996 in the "
             "file but 0.999 in this optimizer", path);
    ck_assert_str_eq(sl_error_message(), want);
    ck_assert(sl_save_params(plain, a.ps, NULL, 0));
    ck_assert(!sl_load_training(plain, a.ps, a.opt));
    snprintf(want, sizeof want, "sl_load_training: %s: no optimizer state (metadata 'optim.type' "
             "is absent): not a training checkpoint", plain);
    ck_assert_str_eq(sl_error_message(), want);
    /* weights load from a training checkpoint */
    ck_assert_msg(sl_load_params(path, a.ps), "%s", sl_error_message());
    /* an optimizer of another registry; a NULL optimizer */
    trainer b;
    trainer_init(&b, 1, false);
    ck_assert(!sl_load_training(path, a.ps, b.opt));
    ck_assert_str_eq(sl_error_message(),
                     "sl_load_training: the optimizer was made for another registry");
    ck_assert(!sl_save_training(path, a.ps, NULL, NULL, 0));
    ck_assert_str_eq(sl_error_message(), "sl_save_training: optimizer is NULL");
    /* a parameter whose name would clash with the state's */
    sl_params *ps = sl_params_new(SL_F32);
    sl_params_add(ps, "optim.m.x", sl_shape(2), true);
    sl_optim *o = sl_adamw_new(ps, NULL);
    ck_assert(!sl_save_training(at("clash"), ps, o, NULL, 0));
    ck_assert_str_eq(sl_error_message(), "sl_save_training: parameter name 'optim.m.x' clashes "
                                         "with the optimizer's state names");
    sl_optim_free(o);
    sl_params_free(ps);
    sl_optim_free(sgd);
    sl_optim_free(other);
    trainer_free(&a);
    trainer_free(&b);
}
END_TEST

/* ---------------------------------------------------------------- GPT checkpoints */

static const sl_gpt_config tiny_gpt = {.vocab_size = 16, .context = 8, .dim = 8, .n_layers = 2,
                                       .n_heads = 2, .pos = SL_POS_ALIBI, .fused_qkv = true,
                                       .dropout = 0.1, .seed = 7};

static void assert_same_config(const sl_gpt_config *a, const sl_gpt_config *b)
{
    ck_assert_int_eq(a->vocab_size, b->vocab_size);
    ck_assert_int_eq(a->context, b->context);
    ck_assert_int_eq(a->dim, b->dim);
    ck_assert_int_eq(a->n_layers, b->n_layers);
    ck_assert_int_eq(a->n_heads, b->n_heads);
    ck_assert_int_eq(a->n_kv_heads, b->n_kv_heads);
    ck_assert_int_eq(a->mlp_ratio, b->mlp_ratio);
    ck_assert_int_eq(a->pos, b->pos);
    ck_assert_int_eq(a->tie_embeddings, b->tie_embeddings);
    ck_assert_int_eq(a->fused_qkv, b->fused_qkv);
    ck_assert_double_eq(a->dropout, b->dropout);
    ck_assert_uint_eq(a->seed, b->seed);
}

static sl_tensor *logits_of(sl_gpt *m)
{
    int32_t idx[10] = {1, 5, 3, 0, 15, 2, 2, 9, 4, 7};
    bool prev = sl_set_grad_enabled(false);
    sl_tensor *y = sl_gpt_forward(m, sl_from_data(SL_I32, sl_shape(1, 10), idx), NULL);
    sl_set_grad_enabled(prev);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    return y;
}

START_TEST(gpt_round_trip)
{
    sl_gpt_config variants[4];
    for (int v = 0; v < 4; v++) variants[v] = tiny_gpt;
    variants[1].tie_embeddings = true;
    variants[2].fused_qkv = false;
    variants[2].n_kv_heads = 1;
    variants[3].pos = SL_POS_NONE;
    variants[3].seed = UINT64_MAX;
    variants[3].dropout = 0;
    for (int v = 0; v < 4; v++) {
        sl_gpt *m = sl_gpt_new(&variants[v], SL_F32);
        ck_assert_msg(m != NULL, "%s", sl_error_message());
        sl_rng_next(&m->rng); /* a dropout stream that has moved on */
        const char *path = at("gpt.safetensors");
        ck_assert_msg(sl_gpt_save(path, m, NULL, (sl_meta[]){{"note", "hi"}}, 1), "%s",
                      sl_error_message());
        sl_gpt_config cfg;
        ck_assert_msg(sl_gpt_read_config(path, &cfg), "%s", sl_error_message());
        assert_same_config(&cfg, &m->cfg);
        sl_gpt *l = sl_gpt_load(path, SL_F32);
        ck_assert_msg(l != NULL, "%s", sl_error_message());
        assert_same_config(&l->cfg, &m->cfg);
        ck_assert_int_eq(memcmp(&l->rng, &m->rng, sizeof m->rng), 0);
        size_t na, nb;
        unsigned char *sa = snapshot(m->params, &na);
        assert_same(l->params, sa, na);
        ck_assert_double_eq(tu_max_abs_diff(logits_of(l), logits_of(m)), 0);
        char buf[8];
        ck_assert(sl_read_meta(path, "note", buf, sizeof buf));
        ck_assert_str_eq(buf, "hi");
        ck_assert(sl_read_meta(path, "shortlong.pos", buf, sizeof buf));
        ck_assert_str_eq(buf, sl_pos_name(m->cfg.pos));
        /* parameters in another dtype than the file's */
        ck_assert_ptr_null(sl_gpt_load(path, SL_F64));
        ck_assert_str_eq(strstr(sl_error_message(), ": tensor"),
                         ": tensor 'tok.weight' is F32 in the file, the model expects F64 "
                         "(sl_load_opts.convert_dtype converts it)");
        free(sa);
        (void)nb;
        sl_gpt_free(l);
        sl_gpt_free(m);
    }
}
END_TEST

START_TEST(gpt_training_checkpoint)
{
    sl_gpt *m = sl_gpt_new(&tiny_gpt, SL_F32);
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){.weight_decay = 0.1});
    int32_t idx[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    m->train = true;
    sl_tensor *loss = sl_gpt_loss(m, sl_from_data(SL_I32, sl_shape(1, 8), idx),
                                  sl_from_data(SL_I32, sl_shape(1, 8), tgt));
    ck_assert_msg(loss && sl_backward(loss), "%s", sl_error_message());
    ck_assert(sl_optim_step(opt, 1e-2));
    const char *path = at("gpt_train.safetensors");
    ck_assert_msg(sl_gpt_save(path, m, opt, NULL, 0), "%s", sl_error_message());
    sl_gpt *l = sl_gpt_load(path, SL_F32); /* skips the optimizer state */
    ck_assert_msg(l != NULL, "%s", sl_error_message());
    sl_optim *lopt = sl_adamw_new(l->params, &(sl_adamw_config){.weight_decay = 0.1});
    ck_assert_msg(sl_load_training(path, l->params, lopt), "%s", sl_error_message());
    ck_assert_int_eq(sl_optim_steps(lopt), 1);
    size_t n;
    unsigned char *s = snapshot(m->params, &n);
    assert_same(l->params, s, n);
    free(s);
    sl_optim_free(lopt);
    sl_optim_free(opt);
    sl_gpt_free(l);
    sl_gpt_free(m);
}
END_TEST

/* Rewrites path with `from` replaced by `to` (same length, so the offsets stay right). */
static void edit_file(const char *path, const char *out, const char *from, const char *to)
{
    ck_assert_uint_eq(strlen(from), strlen(to));
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    b[len] = 0;
    char *hit = NULL;
    for (size_t i = 8; i + strlen(from) <= len && !hit; i++)
        if (!memcmp(b + i, from, strlen(from))) hit = (char *)b + i;
    ck_assert_msg(hit != NULL, "'%s' not in the header", from);
    memcpy(hit, to, strlen(to));
    write_bytes(out, b, len);
    free(b);
}

START_TEST(gpt_config_errors)
{
    sl_gpt *m = sl_gpt_new(&tiny_gpt, SL_F32);
    const char *path = at("gpt.safetensors"), *bad = at("bad.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    static const struct {
        const char *from, *to, *message;
    } cases[] = {
        {"\"shortlong.dim\":\"8\"", "\"shortlong.dix\":\"8\"",
         "missing config key 'shortlong.dim'"},
        {"\"shortlong.n_heads\":\"2\"", "\"shortlong.n_heads\":\"x\"",
         "config key 'shortlong.n_heads' has the value 'x', which is not a valid integer"},
        {"\"shortlong.pos\":\"alibi\"", "\"shortlong.pos\":\"alibx\"",
         "config key 'shortlong.pos' has the value 'alibx', which is not a valid positional "
         "method"},
        {"\"shortlong.fused_qkv\":\"true\"", "\"shortlong.fused_qkv\":\"tru3\"",
         "config key 'shortlong.fused_qkv' has the value 'tru3', which is not a valid boolean "
         "(true or false)"},
        {"\"shortlong.dropout\":\"0.1", "\"shortlong.dropout\":\"0x1",
         "config key 'shortlong.dropout' has the value '0x10000000000000001', which is not a "
         "valid number"},
        {"\"shortlong.model\":\"gpt\"", "\"shortlong.model\":\"gpu\"",
         "not a shortlong GPT checkpoint (metadata 'shortlong.model' is 'gpu', expected 'gpt')"},
        {"\"shortlong.rng\":\"", "\"shortlong.rnh\":\"",
         "config key 'shortlong.rng' is absent, expected 64 hex digits"},
        {"\"shortlong.n_heads\":\"2\"", "\"shortlong.n_heads\":\"3\"",
         "its config does not make a model: dim 8 is not a multiple of n_heads 3"},
        {"\"shortlong.vocab_size\":\"16\"", "\"shortlong.vocab_size\":\"17\"",
         "tensor 'tok.weight' has shape [16,8] in the file, its config implies [17,8]"},
        {"\"shortlong.n_layers\":\"2\"", "\"shortlong.n_layers\":\"1\"",
         "unexpected tensor 'blocks.1."},
    };
    char want[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        edit_file(path, bad, cases[i].from, cases[i].to);
        sl_error_clear();
        ck_assert_ptr_null(sl_gpt_load(bad, SL_F32));
        ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
        snprintf(want, sizeof want, "sl_gpt_load: %s: %s", bad, cases[i].message);
        ck_assert_msg(!strncmp(sl_error_message(), want, strlen(want)), "case %zu: '%s'", i,
                      sl_error_message());
    }
    /* A file with no config at all (the registry's own configuration, which sl_save_params
     * would write, holds only the architectural keys: see params_config_*). */
    ck_assert(sl_save_tensors(bad, &(sl_named){"tok.weight", m->tok->weight}, 1, NULL, 0));
    ck_assert_ptr_null(sl_gpt_load(bad, SL_F32));
    snprintf(want, sizeof want, "sl_gpt_load: %s: not a shortlong GPT checkpoint (metadata "
             "'shortlong.model' is absent, expected 'gpt')", bad);
    ck_assert_str_eq(sl_error_message(), want);
    sl_gpt_config cfg;
    ck_assert(!sl_gpt_read_config(bad, &cfg));
    ck_assert_ptr_null(sl_gpt_load(at("absent"), SL_F32));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    /* the caller may not write shortlong's keys */
    ck_assert(!sl_gpt_save(bad, m, NULL, (sl_meta[]){{"shortlong.dim", "9"}}, 1));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_save: metadata key 'shortlong.dim' is reserved "
                                         "(shortlong uses the prefixes 'optim.' and 'shortlong.')");
    sl_gpt_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_train");
    TCase *tc = tcase_create("checkpoint_train");
    tu_fixture(tc, setup, teardown);
    tu_add_test(s, tc, training_resumes_bitwise);
    tu_add_test(s, tc, training_checkpoint_errors);
    tu_add_test(s, tc, gpt_round_trip);
    tu_add_test(s, tc, gpt_training_checkpoint);
    tu_add_test(s, tc, gpt_config_errors);
    return tu_run(s);
}
