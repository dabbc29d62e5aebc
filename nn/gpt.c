/* nn/gpt.c — the transformer block and the GPT: embeddings, blocks, final norm, LM head.
 *
 *   idx (B, T) -> tok (B, T, C) [+ positions, for the methods that add them] -> dropout
 *              -> n_layers x block -> ln_f -> head (B, T, V)
 *   block: x = x + drop(attn(ln1(x)));  x = x + drop(mlp(ln2(x)))      (pre-LN, GPT-2)
 *
 * Positions. Sinusoidal ones are computed for each forward (any length) and added to the token
 * embeddings scaled by sqrt(C), as in Vaswani et al. (section 3.4) and fairseq, whose models
 * the ALiBi paper compares: without the scale, embeddings initialised at GPT-2's 0.02 are
 * drowned by sinusoids of amplitude 1 (on a small byte model, validation loss 2.53 against
 * 1.67 with it after 1000 steps). Learned positions are a table of `context` rows, pos.weight,
 * initialised like the token embedding (and, as in GPT-2, added to it unscaled), that a forward
 * cannot go past. Rotary, ALiBi (with fixed slopes) and Sandwich act inside attention and have
 * no parameters; T5's bias has one table, pos.rel_bias (H, buckets), that every layer shares
 * (T5 shares its position parameters across layers: Raffel et al., section 2.1), and KERPLE's
 * one pair, pos.kerple_log_r1 and pos.kerple_log_r2 (H), shared the same way (the authors' code
 * gives every layer the same module); FIRE has an MLP, c and a threshold per layer
 * (blocks.<l>.attn.fire.*: the paper's FIRE, not its layer-shared variant FIRE-S).
 *
 * The model (struct, blocks, parameters, gradients) lives in its registry's arena, so
 * sl_gpt_free is one sl_params_free. Initialisation draws from one RNG seeded with cfg.seed,
 * in registration order, so a seed gives the same weights everywhere.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>

/* ---------------------------------------------------------------- block */

static const double LN_EPS = 1e-5;

sl_block *sl_block_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                       int64_t mlp_hidden, sl_rng *rng)
{
    if (!ps || !name) return SL_FAIL(SL_ERR_ARG, "sl_block_new: registry or name is NULL");
    if (!cfg) return SL_FAIL(SL_ERR_ARG, "sl_block_new: config is NULL");
    sl_block *m = sl_arena_alloc(sl_params_arena(ps), sizeof *m, 16);
    if (!m) return NULL;
    char sub[2 * SL_PARAM_NAME_MAX];
    const char *dot = name[0] ? "." : "";
    snprintf(sub, sizeof sub, "%s%sln1", name, dot);
    if (!(m->ln1 = sl_layer_norm_new(ps, sub, cfg->dim, LN_EPS))) return NULL;
    snprintf(sub, sizeof sub, "%s%sattn", name, dot);
    if (!(m->attn = sl_attention_new(ps, sub, cfg, rng))) return NULL;
    snprintf(sub, sizeof sub, "%s%sln2", name, dot);
    if (!(m->ln2 = sl_layer_norm_new(ps, sub, cfg->dim, LN_EPS))) return NULL;
    snprintf(sub, sizeof sub, "%s%smlp", name, dot);
    if (!(m->mlp = sl_mlp_new(ps, sub, cfg->dim, mlp_hidden, rng))) return NULL;
    return m;
}

/* A residual branch's output, through dropout when there is one. */
static sl_tensor *branch_drop(sl_tensor *h, const sl_dropout_module *drop, sl_rng *rng, bool train)
{
    return drop ? sl_dropout_forward(drop, h, rng, train) : h;
}

sl_tensor *sl_block_forward(const sl_block *m, sl_tensor *x, sl_kv_cache *cache,
                            const sl_dropout_module *drop, sl_rng *rng, bool train)
{
    return sl_block_forward_masked(m, x, cache, NULL, drop, rng, train);
}

sl_tensor *sl_block_forward_masked(const sl_block *m, sl_tensor *x, sl_kv_cache *cache,
                                   const sl_attention_mask *mask, const sl_dropout_module *drop,
                                   sl_rng *rng, bool train)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_block_forward: module is NULL");
    if (!drop || (drop->p >= 0 && drop->p < 1 && (!train || drop->p == 0))) {
        /* dropout (if any) passes the branches as they are (sl_dropout returns x): each
         * branch's last Linear adds the residual (sl_linear_residual, the same bits as the
         * sl_adds below) */
        x = sl__attention_forward_residual(m->attn, sl_layer_norm_forward(m->ln1, x), cache,
                                           mask, x);                            // (B, T, C)
        return sl__mlp_forward_residual(m->mlp, sl_layer_norm_forward(m->ln2, x), x);
    }
    sl_tensor *h =
        sl_attention_forward_masked(m->attn, sl_layer_norm_forward(m->ln1, x), cache, mask);
    x = sl_add(x, branch_drop(h, drop, rng, train));                       // (B, T, C)
    h = sl_mlp_forward(m->mlp, sl_layer_norm_forward(m->ln2, x));
    return sl_add(x, branch_drop(h, drop, rng, train));                    // (B, T, C)
}

/* ---------------------------------------------------------------- GPT */

/* The attention settings of a GPT config. */
static sl_attention_config attention_config(const sl_gpt_config *c)
{
    return (sl_attention_config){.dim = c->dim,
                                 .n_heads = c->n_heads,
                                 .n_kv_heads = c->n_kv_heads,
                                 .pos = c->pos,
                                 .fused_qkv = c->fused_qkv,
                                 .t5_buckets = c->t5_buckets,
                                 .t5_max_distance = c->t5_max_distance,
                                 .slopes = c->slopes,
                                 .sandwich_dim = c->sandwich_dim,
                                 .fire_width = c->fire_width,
                                 .fire_threshold = c->fire_threshold};
}

bool sl__gpt_config_resolve(const char *op, const sl_gpt_config *cfg, sl_gpt_config *out)
{
    if (!cfg) return sl_set_error(SL_ERR_ARG, "%s: config is NULL", op);
    sl_gpt_config c = *cfg;
    if (c.mlp_ratio == 0) c.mlp_ratio = 4;
    if (c.vocab_size < 1 || c.vocab_size > INT32_MAX)
        return sl_set_error(SL_ERR_ARG, "%s: vocab_size %lld outside [1, %d]", op,
                            (long long)c.vocab_size, INT32_MAX);
    if (c.context < 1 || c.context > SL_GPT_MAX_CONTEXT)
        return sl_set_error(SL_ERR_ARG, "%s: context %lld outside [1, %lld]", op,
                            (long long)c.context, (long long)SL_GPT_MAX_CONTEXT);
    if (c.dim < 1 || c.n_layers < 1 || c.n_heads < 1 || c.n_kv_heads < 0 || c.mlp_ratio < 1)
        return sl_set_error(SL_ERR_ARG, "%s: dim %lld, n_layers %d, n_heads %d, n_kv_heads %d "
                            "and mlp_ratio %d must be >= 1", op, (long long)c.dim, c.n_layers,
                            c.n_heads, cfg->n_kv_heads, cfg->mlp_ratio);
    if (c.pos == SL_POS_FIRE && c.fire_threshold == 0) c.fire_threshold = (double)c.context / 4;
    sl_attention_config a = attention_config(&c);
    if (!sl__attention_config_resolve(op, &a, &a)) return false;
    c.n_kv_heads = a.n_kv_heads;
    c.t5_buckets = a.t5_buckets;
    c.t5_max_distance = a.t5_max_distance;
    /* A method's own settings, resolved; those of other methods are 0 (unused). */
    c.sandwich_dim = c.pos == SL_POS_SANDWICH ? a.sandwich_dim : 0;
    c.fire_width = c.pos == SL_POS_FIRE ? a.fire_width : 0;
    c.fire_threshold = c.pos == SL_POS_FIRE ? a.fire_threshold : 0;
    if (!(c.dropout >= 0 && c.dropout < 1))
        return sl_set_error(SL_ERR_ARG, "%s: dropout %g outside [0, 1)", op, c.dropout);
    *out = c;
    return true;
}

/* w *= s in place (initialisation only; no autograd). Parameters are contiguous. */
static void scale_inplace(sl_tensor *w, double s)
{
    int64_t n = sl_numel(w);
    if (w->dtype == SL_F32)
        for (float *p = sl_ptr(w), *e = p + n; p < e; p++) *p = (float)(*p * s);
    else
        for (double *p = sl_ptr(w), *e = p + n; p < e; p++) *p *= s;
    sl__bump(w);
}

static bool build(sl_gpt *m, sl_rng *rng)
{
    const sl_gpt_config *c = &m->cfg;
    sl_params *ps = m->params;
    if (!(m->tok = sl_embedding_new(ps, "tok", c->vocab_size, c->dim, rng))) return false;
    if (c->pos == SL_POS_LEARNED &&
        !(m->pos = sl_embedding_new(ps, "pos", c->context, c->dim, rng)))
        return false;
    if (c->pos == SL_POS_T5) {
        m->t5_table = sl_params_add(ps, "pos.rel_bias", 2,
                                    (int64_t[]){c->n_heads, c->t5_buckets}, false);
        if (!m->t5_table || !sl_init_normal(m->t5_table, rng, 0.02)) return false;
    }
    if (c->pos == SL_POS_KERPLE) {
        int64_t H = c->n_heads;
        m->kerple_log_r1 = sl_params_add(ps, "pos.kerple_log_r1", 1, &H, false);
        m->kerple_log_r2 =
            m->kerple_log_r1 ? sl_params_add(ps, "pos.kerple_log_r2", 1, &H, false) : NULL;
        if (!m->kerple_log_r2 || !sl__kerple_init(m->kerple_log_r1, m->kerple_log_r2, rng))
            return false;
    }
    m->blocks = sl_arena_alloc(sl_params_arena(ps), sizeof *m->blocks * (size_t)c->n_layers, 16);
    if (!m->blocks) return false;
    sl_attention_config ac = attention_config(c);
    ac.t5_table = m->t5_table;
    ac.kerple_log_r1 = m->kerple_log_r1, ac.kerple_log_r2 = m->kerple_log_r2;
    /* GPT-2: each residual projection's weights scaled by 1/sqrt(2 n_layers), so the residual
     * stream's variance does not grow with depth. */
    double residual_scale = 1 / sqrt(2.0 * c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        char name[32];
        snprintf(name, sizeof name, "blocks.%d", l);
        sl_block *b = sl_block_new(ps, name, &ac, (int64_t)c->mlp_ratio * c->dim, rng);
        if (!b) return false;
        scale_inplace(b->attn->proj->weight, residual_scale);
        scale_inplace(b->mlp->proj->weight, residual_scale);
        m->blocks[l] = b;
    }
    if (!(m->ln_f = sl_layer_norm_new(ps, "ln_f", c->dim, LN_EPS))) return false;
    if (!c->tie_embeddings && !(m->head = sl_linear_new(ps, "head", c->dim, c->vocab_size,
                                                        false, rng)))
        return false;
    return true;
}

/* The parameters build() registers, in its order: keep the two in step (tests/test_gpt.c
 * compares them for every method and layout). */
bool sl__gpt_each_param(const sl_gpt_config *c, sl__param_visitor fn, void *ctx)
{
    int64_t C = c->dim, V = c->vocab_size, H = c->n_heads, D = C / H;
    int64_t kv = c->n_kv_heads * D, hidden = (int64_t)c->mlp_ratio * C;
    char name[SL_PARAM_NAME_MAX];
#define VISIT(n, ...)                                                                              \
    do {                                                                                           \
        const int64_t shape_[] = {__VA_ARGS__};                                                    \
        if (!fn(ctx, n, (int)(sizeof shape_ / sizeof *shape_), shape_)) return false;              \
    } while (0)
#define LAYER(leaf, ...)                                                                           \
    do {                                                                                           \
        snprintf(name, sizeof name, "blocks.%d.%s", l, leaf);                                      \
        VISIT(name, __VA_ARGS__);                                                                  \
    } while (0)
    VISIT("tok.weight", V, C);
    if (c->pos == SL_POS_LEARNED) VISIT("pos.weight", c->context, C);
    if (c->pos == SL_POS_T5) VISIT("pos.rel_bias", H, c->t5_buckets);
    if (c->pos == SL_POS_KERPLE) {
        VISIT("pos.kerple_log_r1", H);
        VISIT("pos.kerple_log_r2", H);
    }
    for (int l = 0; l < c->n_layers; l++) {
        LAYER("ln1.weight", C);
        LAYER("ln1.bias", C);
        if (c->fused_qkv) {
            LAYER("attn.qkv.weight", C + 2 * kv, C);
            LAYER("attn.qkv.bias", C + 2 * kv);
        } else {
            LAYER("attn.q.weight", C, C);
            LAYER("attn.q.bias", C);
            LAYER("attn.k.weight", kv, C);
            LAYER("attn.k.bias", kv);
            LAYER("attn.v.weight", kv, C);
            LAYER("attn.v.bias", kv);
        }
        LAYER("attn.proj.weight", C, C);
        LAYER("attn.proj.bias", C);
        if (c->pos == SL_POS_FIRE) {
            int64_t W = c->fire_width;
            LAYER("attn.fire.fc1.weight", W, 1);
            LAYER("attn.fire.fc1.bias", W);
            LAYER("attn.fire.fc2.weight", H, W);
            LAYER("attn.fire.fc2.bias", H);
            LAYER("attn.fire.c", 1);
            LAYER("attn.fire.l_mult", 1);
        }
        if (c->pos == SL_POS_ALIBI && c->slopes == SL_SLOPES_LEARNED) LAYER("attn.log_slopes", H);
        LAYER("ln2.weight", C);
        LAYER("ln2.bias", C);
        LAYER("mlp.fc.weight", hidden, C);
        LAYER("mlp.fc.bias", hidden);
        LAYER("mlp.proj.weight", C, hidden);
        LAYER("mlp.proj.bias", C);
    }
    VISIT("ln_f.weight", C);
    VISIT("ln_f.bias", C);
    if (!c->tie_embeddings) VISIT("head.weight", V, C);
#undef LAYER
#undef VISIT
    return true;
}

sl_gpt *sl_gpt_new(const sl_gpt_config *cfg, sl_dtype dtype)
{
    sl_gpt_config c;
    if (!sl__gpt_config_resolve("sl_gpt_new", cfg, &c)) return NULL;
    sl_params *ps = sl_params_new(dtype);
    if (!ps) return NULL;
    sl_gpt *m = sl_arena_alloc(sl_params_arena(ps), sizeof *m, 16);
    if (!m) {
        sl_params_free(ps);
        return NULL;
    }
    memset(m, 0, sizeof *m);
    m->cfg = c;
    m->params = ps;
    m->drop.p = c.dropout;
    m->train = false;
    sl_rng init = sl_rng_seed(c.seed);
    if (!build(m, &init) || !sl__gpt_record_config(ps, &c)) {
        sl_params_free(ps);
        return NULL;
    }
    m->rng = sl_rng_seed(sl_rng_next(&init)); /* the dropout stream, also from the seed */
    return m;
}

void sl_gpt_free(sl_gpt *m)
{
    if (m) sl_params_free(m->params); /* m itself lives in the registry's arena */
}

sl_kv_cache **sl_gpt_kv_caches_new(const sl_gpt *m, int64_t batch, int64_t capacity)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_gpt_kv_caches_new: model is NULL");
    const sl_gpt_config *c = &m->cfg;
    sl_kv_cache **caches =
        sl_arena_alloc(sl_arena_current(), sizeof *caches * (size_t)c->n_layers, 16);
    for (int l = 0; caches && l < c->n_layers; l++)
        if (!(caches[l] = sl_kv_cache_new(sl_params_dtype(m->params), batch, c->n_kv_heads,
                                          capacity, c->dim / c->n_heads)))
            return NULL;
    return caches;
}

/* Adds position information to the token embeddings x (B, T, C) of positions start.. for
 * the methods that do it there; the others act in attention (or, none, not at all). */
static sl_tensor *add_positions(const sl_gpt *m, sl_tensor *x, int64_t start)
{
    if (!x) return NULL;
    int64_t T = x->shape[1], C = x->shape[2], L = m->cfg.context;
    switch (m->cfg.pos) {
    case SL_POS_SINUSOIDAL: /* sqrt(C) tok + PE */
        return sl_add(sl_mul_scalar(x, sqrt((double)C)), sl_sinusoidal(x->dtype, start, T, C));
    case SL_POS_LEARNED:
        if (start + T > L)
            return SL_FAIL(SL_ERR_INDEX, "sl_gpt_forward: position %lld is past the learned "
                           "position table (%lld positions); a learned-position model cannot "
                           "run longer than its training context", (long long)(start + T - 1),
                           (long long)L);
        return sl_add(x, sl_narrow(m->pos->weight, 0, start, T));                   // + (T, C)
    case SL_POS_NONE:
    case SL_POS_ALIBI:
    case SL_POS_ROTARY:
    case SL_POS_T5:
    case SL_POS_KERPLE:
    case SL_POS_SANDWICH:
    case SL_POS_FIRE: return x;
    case SL_POS_COUNT: break;
    }
    return SL_FAIL(SL_ERR_ARG, "sl_gpt_forward: unknown positional method %d", (int)m->cfg.pos);
}

/* A contiguous copy of t in the current arena. */
static sl_tensor *copy_here(const sl_tensor *t)
{
    sl_tensor *c = t ? sl_empty(t->dtype, t->ndim, t->shape) : NULL;
    return c && sl_copy_into(c, t) ? c : NULL;
}

/* The blocks without grad (evaluation): nothing a block makes outlives it but its output, so
 * each block runs in a scratch arena reset before it, and its output is copied to a second one
 * (reset too: the block's input died with the block); the last output is copied back to the
 * caller's arena. A forward then holds one block's intermediates at a time instead of all
 * n_layers', which is what bounds evaluation at long lengths (bench_gpt_step --eval-T). */
static sl_tensor *blocks_without_grad(sl_gpt *m, sl_tensor *x)
{
    sl_arena *home = sl_arena_current(), *work = sl_arena_new(0), *keep = sl_arena_new(0);
    for (int l = 0; x && work && keep && l < m->cfg.n_layers; l++) {
        sl_arena_reset(work);
        sl_arena_set(work);
        sl_tensor *y = sl_block_forward(m->blocks[l], x, NULL, &m->drop, &m->rng, m->train);
        sl_arena_reset(keep);
        sl_arena_set(keep);
        x = copy_here(y);
    }
    sl_arena_set(home);
    x = work && keep ? copy_here(x) : NULL;
    sl_arena_free(work);
    sl_arena_free(keep);
    return x;
}

sl_tensor *sl_gpt_forward(sl_gpt *m, sl_tensor *idx, sl_kv_cache **caches)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_gpt_forward: model is NULL");
    SL_CHECK_TENSOR("sl_gpt_forward", idx);
    if (idx->dtype != SL_I32 || idx->ndim != 2 || idx->shape[0] < 1 || idx->shape[1] < 1)
        return SL_FAIL(SL_ERR_SHAPE, "sl_gpt_forward: idx must be i32 (B, T) with B, T >= 1, "
                       "got %s %s", sl_dtype_name(idx->dtype), sl_shape_str(idx));
    const sl_gpt_config *c = &m->cfg;
    int64_t start = 0;
    if (caches) {
        if (sl_grad_enabled())
            return SL_FAIL(SL_ERR_STATE, "sl_gpt_forward: decoding with KV caches needs grad "
                           "mode off (sl_set_grad_enabled(false))");
        for (int l = 0; l < c->n_layers; l++)
            if (!caches[l] || caches[l]->len != caches[0]->len)
                return SL_FAIL(SL_ERR_ARG, "sl_gpt_forward: caches must be %d KV caches of equal "
                               "length (cache %d is %s)", c->n_layers, l,
                               caches[l] ? "at another length" : "NULL");
        start = caches[0]->len;
    }
    sl_tensor *x = add_positions(m, sl_embedding_forward(m->tok, idx), start); // (B, T, C)
    x = sl_dropout_forward(&m->drop, x, &m->rng, m->train);
    if (!caches && !sl_grad_enabled()) x = blocks_without_grad(m, x);
    else
        for (int l = 0; l < c->n_layers; l++)
            x = sl_block_forward(m->blocks[l], x, caches ? caches[l] : NULL, &m->drop, &m->rng,
                                 m->train);
    x = sl_layer_norm_forward(m->ln_f, x);
    if (m->head) return sl_linear_forward(m->head, x);                   // (B, T, V)
    sl_linear_module tied = {m->tok->weight, NULL};
    return sl_linear_forward(&tied, x);                                  // (B, T, V)
}

sl_tensor *sl_gpt_loss(sl_gpt *m, sl_tensor *idx, sl_tensor *targets)
{
    SL_CHECK_TENSOR("sl_gpt_loss", idx);
    SL_CHECK_TENSOR("sl_gpt_loss", targets);
    if (!sl__same_shape(idx, targets) || targets->dtype != SL_I32)
        return SL_FAIL(SL_ERR_SHAPE, "sl_gpt_loss: targets %s %s do not match idx %s %s",
                       sl_dtype_name(targets->dtype), sl_shape_str(targets),
                       sl_dtype_name(idx->dtype), sl_shape_str(idx));
    return sl_cross_entropy(sl_gpt_forward(m, idx, NULL), targets, -1);   // 0-d
}

bool sl_gpt_set_window(sl_gpt *m, int64_t window)
{
    if (!m) return sl_set_error(SL_ERR_ARG, "sl_gpt_set_window: model is NULL");
    if (window < 0)
        return sl_set_error(SL_ERR_ARG, "sl_gpt_set_window: window %lld must be >= 0 (0: none)",
                            (long long)window);
    for (int l = 0; l < m->cfg.n_layers; l++) m->blocks[l]->attn->cfg.window = window;
    return true;
}

bool sl_gpt_scale_slopes(sl_gpt *m, double factor)
{
    if (!m) return sl_set_error(SL_ERR_ARG, "sl_gpt_scale_slopes: model is NULL");
    if (m->cfg.pos != SL_POS_ALIBI)
        return sl_set_error(SL_ERR_ARG,
                            "sl_gpt_scale_slopes: the model's positions are %s; only "
                            "ALiBi has slopes",
                            sl_pos_name(m->cfg.pos));
    if (!(isfinite(factor) && factor > 0))
        return sl_set_error(SL_ERR_ARG, "sl_gpt_scale_slopes: factor %g must be finite and > 0",
                            factor);
    for (int l = 0; l < m->cfg.n_layers; l++) m->blocks[l]->attn->slope_factor = factor;
    return true;
}
