/* nn/attention.c — causal self-attention: projections, heads, the positional method, KV cache.
 *
 * x (B, T, C) is projected to queries (B, H, T, D) and keys and values (B, Hk, T, D), with
 * D = C / H and H a multiple of Hk (grouped-query attention: query head h reads kv head
 * h / (H / Hk), which the fused op does itself). The fused op sl_alibi_attention computes
 * softmax(q k^T / sqrt(D) - m_h (p_i - j), causal) v without materialising the scores; with
 * zero slopes it is plain causal attention, which is what SL_POS_NONE runs. The heads are then
 * merged back to (B, T, C) and projected.
 *
 * Positional methods act in one of three places: on the token embeddings (sinusoidal and
 * learned: the GPT adds them, and attention here is plain causal, zero slopes), on q and k
 * before the scores (rotary: sl_rotary, then the fused op with zero slopes), or inside the
 * scores (ALiBi in the fused op; T5's bias through scores composed from primitive ops, in
 * `attend_t5`, whose memory is O(Tq Tk) per head, as in the T5 and ALiBi papers; with grad
 * off, a block of queries at a time in a scratch arena, so evaluation at long lengths holds
 * the scores of one block of one layer at a time).
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>

/* ---------------------------------------------------------------- positional methods */

static const char *const pos_names[] = {"none", "alibi", "sinusoidal", "learned", "rotary",
                                        "t5"};
_Static_assert(sizeof pos_names / sizeof *pos_names == SL_POS_COUNT, "a name for every method");

const char *sl_pos_name(sl_pos pos)
{
    return pos >= 0 && pos < SL_POS_COUNT ? pos_names[pos] : "?";
}

bool sl_pos_parse(const char *name, sl_pos *out)
{
    for (int i = 0; name && i < SL_POS_COUNT; i++)
        if (!strcmp(name, pos_names[i])) {
            if (out) *out = (sl_pos)i;
            return true;
        }
    char known[128] = "";
    for (int i = 0; i < SL_POS_COUNT; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                 pos_names[i]);
    return sl_set_error(SL_ERR_ARG, "sl_pos_parse: unknown positional method '%s' (known: %s)",
                        name ? name : "(null)", known);
}

/* The fixed per-head slopes the fused op adds as -m_h (p_i - j): the paper's for ALiBi, zeros
 * (no bias) for the others. Made in the current arena, in dtype. */
static sl_tensor *pos_slopes(sl_pos pos, int n_heads, sl_dtype dtype)
{
    sl_tensor *s = sl_zeros(dtype, 1, (int64_t[]){n_heads});
    return pos == SL_POS_ALIBI && !sl_copy_into(s, sl_alibi_slopes(n_heads)) ? NULL : s;
}

/* i32 (Tq, Tk): 1 where key j is after query i's position Tk - Tq + i (masked). */
static sl_tensor *causal_mask(int64_t Tq, int64_t Tk)
{
    sl_tensor *mask = sl_empty(SL_I32, 2, (int64_t[]){Tq, Tk});
    if (!mask) return NULL;
    int32_t *mk = mask->data;
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) mk[i * Tk + j] = j > Tk - Tq + i;
    return mask;
}

/* softmax(q k^T / sqrt(D) + bias, causal) v with T5's bias (H, Tq, Tk) from the bucket table,
 * composed from primitive ops (their backwards give the gradient, the table's included). The
 * H query heads are viewed as (Hk, G) groups so that each group's matmul broadcasts against its
 * kv head: query head h = g G + r reads kv head g, as in the fused op. */
static sl_tensor *t5_scores_attend(const sl_attention *m, sl_tensor *q, sl_tensor *k,
                                   sl_tensor *v)
{
    const sl_attention_config *c = &m->cfg;
    int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3];
    int64_t Hk = k->shape[1], Tk = k->shape[2], G = H / Hk;
    sl_tensor *q5 = sl_reshape(sl_mul_scalar(q, 1 / sqrt((double)D)), 5,
                               (int64_t[]){B, Hk, G, Tq, D});               // (B, Hk, G, Tq, D)
    sl_tensor *kt = sl_transpose(sl_unsqueeze(k, 2), 3, 4);                 // (B, Hk, 1, D, Tk)
    sl_tensor *s = sl_matmul(q5, kt);                                       // (B, Hk, G, Tq, Tk)
    sl_tensor *bias = sl_reshape(sl_t5_bias(m->t5_table, Tq, Tk, c->t5_max_distance), 4,
                                 (int64_t[]){Hk, G, Tq, Tk});               // (Hk, G, Tq, Tk)
    s = sl_masked_fill(sl_add(s, bias), causal_mask(Tq, Tk), -INFINITY);
    sl_tensor *y = sl_matmul(sl_softmax(s, -1), sl_unsqueeze(v, 2));       // (B, Hk, G, Tq, D)
    return sl_reshape(y, 4, (int64_t[]){B, H, Tq, D});                     // (B, H, Tq, D)
}

enum { T5_QUERY_BLOCK = 256 }; /* queries per block when nothing needs the scores kept */

/* T5 attention. With grad on, the scores of all queries at once: backward needs them. With grad
 * off (evaluation, decoding), nothing outlives the call but the output, so long inputs go a
 * block of queries at a time through a scratch arena that is reset after each block: memory
 * O(T5_QUERY_BLOCK Tk) per head. Block [i0, end) needs only the keys up to its last query,
 * position Tk - Tq + end - 1: with those keys the block's queries are bottom-right aligned, so
 * each block is the same computation, without the keys the mask would hide. The blocks go from
 * the last (the most keys) to the first, so that each block's allocations fit in the scratch
 * blocks the one before it left (growing sizes would add new ones every time). */
static sl_tensor *attend_t5(const sl_attention *m, sl_tensor *q, sl_tensor *k, sl_tensor *v)
{
    int64_t Tq = q->shape[2], Tk = k->shape[2];
    if (sl_grad_enabled() || Tq <= T5_QUERY_BLOCK) return t5_scores_attend(m, q, k, v);
    sl_tensor *y = sl__new("sl_attention_forward", q->dtype, 4,
                           (int64_t[]){q->shape[0], q->shape[1], Tq, v->shape[3]});
    sl_arena *scratch = y ? sl_arena_new(0) : NULL;
    if (!scratch) return NULL;
    sl_arena *prev = sl_arena_set(scratch);
    bool ok = true;
    for (int64_t end = Tq; ok && end > 0; end -= T5_QUERY_BLOCK) {
        int64_t i0 = end > T5_QUERY_BLOCK ? end - T5_QUERY_BLOCK : 0, keys = Tk - Tq + end;
        sl_tensor *yb = t5_scores_attend(m, sl_narrow(q, 2, i0, end - i0),
                                         sl_narrow(k, 2, 0, keys), sl_narrow(v, 2, 0, keys));
        ok = yb && sl_copy_into(sl_narrow(y, 2, i0, end - i0), yb); // (B, H, end - i0, Dv)
        sl_arena_reset(scratch);
    }
    sl_arena_set(prev);
    sl_arena_free(scratch);
    return ok ? y : NULL;
}

/* q (B, H, Tq, D), k and v (B, Hk, Tk, D) -> (B, H, Tq, D), query i at position Tk - Tq + i. */
static sl_tensor *attend(const sl_attention *m, sl_tensor *q, sl_tensor *k, sl_tensor *v)
{
    switch (m->cfg.pos) {
    case SL_POS_NONE:
    case SL_POS_SINUSOIDAL:
    case SL_POS_LEARNED:
    case SL_POS_ROTARY: /* zero slopes: plain causal attention */
    case SL_POS_ALIBI: return sl_alibi_attention(q, k, v, m->slopes, NULL);
    case SL_POS_T5: return attend_t5(m, q, k, v);
    case SL_POS_COUNT: break;
    }
    return SL_FAIL(SL_ERR_ARG, "sl_attention_forward: unknown positional method %d",
                   (int)m->cfg.pos);
}

/* ---------------------------------------------------------------- construction */

bool sl__attention_config_resolve(const char *op, const sl_attention_config *cfg,
                                  sl_attention_config *out)
{
    if (!cfg) return sl_set_error(SL_ERR_ARG, "%s: config is NULL", op);
    sl_attention_config c = *cfg;
    if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
    if (c.dim < 1 || c.n_heads < 1 || c.n_kv_heads < 1)
        return sl_set_error(SL_ERR_ARG, "%s: dim %lld, n_heads %d, n_kv_heads %d must be >= 1",
                            op, (long long)c.dim, c.n_heads, cfg->n_kv_heads);
    if (c.dim % c.n_heads)
        return sl_set_error(SL_ERR_ARG, "%s: dim %lld is not a multiple of n_heads %d", op,
                            (long long)c.dim, c.n_heads);
    if (c.n_heads % c.n_kv_heads)
        return sl_set_error(SL_ERR_ARG, "%s: n_heads %d is not a multiple of n_kv_heads %d", op,
                            c.n_heads, c.n_kv_heads);
    if (c.pos < 0 || c.pos >= SL_POS_COUNT)
        return sl_set_error(SL_ERR_ARG, "%s: unknown positional method %d", op, (int)c.pos);
    if (c.pos == SL_POS_ROTARY && (c.dim / c.n_heads) % 2)
        return sl_set_error(SL_ERR_ARG, "%s: rotary needs an even head dim, not %lld (dim %lld "
                            "/ %d heads)", op, (long long)(c.dim / c.n_heads), (long long)c.dim,
                            c.n_heads);
    if (c.t5_buckets == 0) c.t5_buckets = 32;
    if (c.t5_max_distance == 0) c.t5_max_distance = 128;
    if (c.pos == SL_POS_T5 && (c.t5_buckets < 2 || c.t5_max_distance <= c.t5_buckets / 2))
        return sl_set_error(SL_ERR_ARG, "%s: T5 needs t5_buckets >= 2 (got %d) and "
                            "t5_max_distance > t5_buckets / 2 (got %d)", op, c.t5_buckets,
                            c.t5_max_distance);
    *out = c;
    return true;
}

static sl_linear_module *sub_linear(sl_params *ps, const char *name, const char *leaf, int64_t in,
                                    int64_t out, sl_rng *rng)
{
    char sub[2 * SL_PARAM_NAME_MAX];
    snprintf(sub, sizeof sub, "%s%s%s", name, name[0] ? "." : "", leaf);
    return sl_linear_new(ps, sub, in, out, true, rng);
}

/* A shared T5 table must be (H, buckets) in the registry's dtype. */
static bool check_t5_table(const sl_params *ps, const sl_attention_config *c)
{
    const sl_tensor *t = c->t5_table;
    if (c->pos != SL_POS_T5 || !t) return true;
    if (t->ndim != 2 || t->shape[0] != c->n_heads || t->shape[1] != c->t5_buckets ||
        t->dtype != sl_params_dtype(ps))
        return sl_set_error(SL_ERR_ARG, "sl_attention_new: t5_table %s %s is not (H, buckets) = "
                            "%s [%d,%d]", sl_dtype_name(t->dtype), sl_shape_str(t),
                            sl_dtype_name(sl_params_dtype(ps)), c->n_heads, c->t5_buckets);
    return true;
}

/* T5: the shared table, or a new parameter "<name>.rel_bias". */
static sl_tensor *t5_table(sl_params *ps, const char *name, const sl_attention_config *c,
                           sl_rng *rng)
{
    if (c->t5_table) return c->t5_table;
    char sub[2 * SL_PARAM_NAME_MAX];
    snprintf(sub, sizeof sub, "%s%srel_bias", name, name[0] ? "." : "");
    sl_tensor *w = sl_params_add(ps, sub, 2, (int64_t[]){c->n_heads, c->t5_buckets}, false);
    return w && sl_init_normal(w, rng, 0.02) ? w : NULL;
}

sl_attention *sl_attention_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                               sl_rng *rng)
{
    sl_attention_config c;
    if (!sl__attention_config_resolve("sl_attention_new", cfg, &c)) return NULL;
    if (!ps || !name) return SL_FAIL(SL_ERR_ARG, "sl_attention_new: registry or name is NULL");
    if (!check_t5_table(ps, &c)) return NULL;
    sl_attention *m = sl_arena_alloc(sl_params_arena(ps), sizeof *m, 16);
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    m->cfg = c;
    int64_t C = c.dim, kv = c.n_kv_heads * (C / c.n_heads); /* Hk D */
    if (c.fused_qkv) {
        if (!(m->qkv = sub_linear(ps, name, "qkv", C, C + 2 * kv, rng))) return NULL;
    } else {
        if (!(m->q = sub_linear(ps, name, "q", C, C, rng))) return NULL;
        if (!(m->k = sub_linear(ps, name, "k", C, kv, rng))) return NULL;
        if (!(m->v = sub_linear(ps, name, "v", C, kv, rng))) return NULL;
    }
    if (!(m->proj = sub_linear(ps, name, "proj", C, C, rng))) return NULL;
    if (c.pos == SL_POS_T5 && !(m->t5_table = t5_table(ps, name, &c, rng))) return NULL;
    sl_arena *prev = sl_arena_set(sl_params_arena(ps));
    m->slopes = pos_slopes(c.pos, c.n_heads, sl_params_dtype(ps));
    sl_arena_set(prev);
    return m->slopes ? m : NULL;
}

sl_kv_cache *sl_kv_cache_new(sl_dtype dtype, int64_t batch, int n_kv_heads, int64_t capacity,
                             int64_t head_dim)
{
    if (dtype != SL_F32 && dtype != SL_F64)
        return SL_FAIL(SL_ERR_DTYPE, "sl_kv_cache_new: dtype must be f32 or f64, not %s",
                       sl_dtype_name(dtype));
    if (batch < 1 || n_kv_heads < 1 || capacity < 1 || head_dim < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_kv_cache_new: batch %lld, n_kv_heads %d, capacity %lld, "
                       "head_dim %lld must be >= 1", (long long)batch, n_kv_heads,
                       (long long)capacity, (long long)head_dim);
    sl_kv_cache *c = sl_arena_alloc(sl_arena_current(), sizeof *c, 16);
    if (!c) return NULL;
    const int64_t shape[4] = {batch, n_kv_heads, capacity, head_dim};
    c->k = sl_zeros(dtype, 4, shape);
    c->v = c->k ? sl_zeros(dtype, 4, shape) : NULL;
    c->len = 0;
    return c->v ? c : NULL;
}

/* ---------------------------------------------------------------- forward */

/* (B, T, n D) -> (B, n, T, D), a view. */
static sl_tensor *split_heads(sl_tensor *x, int n, int64_t D)
{
    if (!x) return NULL;
    sl_tensor *h = sl_reshape(x, 4, (int64_t[]){x->shape[0], x->shape[1], n, D});
    return sl_permute(h, (int[]){0, 2, 1, 3});
}

/* Appends k, v (B, Hk, T, D) at [len, len + T) of the cache and returns views of the first
 * len + T positions through *k, *v. The copy is not recorded on the tape: decoding runs with
 * grad mode off, and the caller has checked that it is. */
static bool cache_append(sl_kv_cache *c, sl_tensor **k, sl_tensor **v)
{
    const sl_tensor *kn = *k;
    int64_t B = kn->shape[0], Hk = kn->shape[1], T = kn->shape[2], D = kn->shape[3];
    if (!c->k || !c->v || c->k->ndim != 4 || !sl__same_shape(c->k, c->v) ||
        c->k->shape[0] != B || c->k->shape[1] != Hk || c->k->shape[3] != D)
        return sl_set_error(SL_ERR_SHAPE, "sl_attention_forward: KV cache %s does not fit keys "
                            "(B, Hk, T, D) = %s", c->k ? sl_shape_str(c->k) : "(null)",
                            sl_shape_str(kn));
    if (c->k->dtype != kn->dtype || c->v->dtype != kn->dtype)
        return sl_set_error(SL_ERR_DTYPE, "sl_attention_forward: KV cache is %s, keys are %s",
                            sl_dtype_name(c->k->dtype), sl_dtype_name(kn->dtype));
    int64_t cap = c->k->shape[2];
    if (c->len < 0 || c->len > cap - T)
        return sl_set_error(SL_ERR_ARG, "sl_attention_forward: KV cache full: %lld + %lld "
                            "positions > capacity %lld", (long long)c->len, (long long)T,
                            (long long)cap);
    if (!sl_copy_into(sl_narrow(c->k, 2, c->len, T), *k) ||
        !sl_copy_into(sl_narrow(c->v, 2, c->len, T), *v))
        return false;
    c->len += T;
    *k = sl_narrow(c->k, 2, 0, c->len);
    *v = sl_narrow(c->v, 2, 0, c->len);
    return *k && *v;
}

sl_tensor *sl_attention_forward(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_attention_forward: module is NULL");
    SL_CHECK_TENSOR("sl_attention_forward", x);
    const sl_attention_config *c = &m->cfg;
    int64_t C = c->dim, D = C / c->n_heads, kv = c->n_kv_heads * D;
    if (x->ndim != 3 || x->shape[2] != C)
        return SL_FAIL(SL_ERR_SHAPE, "sl_attention_forward: input %s is not (B, T, %lld)",
                       sl_shape_str(x), (long long)C);
    if (cache && sl_grad_enabled())
        return SL_FAIL(SL_ERR_STATE, "sl_attention_forward: a KV cache needs grad mode off "
                       "(sl_set_grad_enabled(false)): cache writes are not recorded for backward");
    sl_tensor *q, *k, *v; // (B, T, C), (B, T, Hk D), (B, T, Hk D)
    if (c->fused_qkv) {
        sl_tensor *qkv = sl_linear_forward(m->qkv, x); // (B, T, C + 2 Hk D)
        q = sl_narrow(qkv, 2, 0, C);
        k = sl_narrow(qkv, 2, C, kv);
        v = sl_narrow(qkv, 2, C + kv, kv);
    } else {
        q = sl_linear_forward(m->q, x);
        k = sl_linear_forward(m->k, x);
        v = sl_linear_forward(m->v, x);
    }
    q = split_heads(q, c->n_heads, D);    // (B, H, T, D)
    k = split_heads(k, c->n_kv_heads, D); // (B, Hk, T, D)
    v = split_heads(v, c->n_kv_heads, D); // (B, Hk, T, D)
    if (!q || !k || !v) return NULL;
    if (c->pos == SL_POS_ROTARY) { /* at positions len, len + 1, ...; keys cached rotated */
        int64_t pos0 = cache ? cache->len : 0;
        q = sl_rotary(q, pos0, SL_ROTARY_BASE);
        k = sl_rotary(k, pos0, SL_ROTARY_BASE);
        if (!q || !k) return NULL;
    }
    if (cache && !cache_append(cache, &k, &v)) return NULL; // (B, Hk, len + T, D)
    sl_tensor *y = attend(m, q, k, v);                      // (B, H, T, D)
    y = sl_permute(y, (int[]){0, 2, 1, 3});                 // (B, T, H, D)
    y = sl_reshape(y, 3, x->shape);                         // (B, T, C), a copy
    return sl_linear_forward(m->proj, y);
}
