/* nn/attention.c — self-attention, causal or bidirectional: projections, heads, the positional
 * method, masks, KV cache.
 *
 * x (B, T, C) is projected to queries (B, H, T, D) and keys and values (B, Hk, T, D), with
 * D = C / H and H a multiple of Hk (grouped-query attention: query head h reads kv head
 * h / (H / Hk), which the fused op does itself). The fused op sl_alibi_attention computes
 * softmax(q k^T / sqrt(D) - m_h (p_i - j), masked) v without materialising the scores; with
 * zero slopes it is plain attention, which is what SL_POS_NONE runs. Causality, the window and
 * the per-call masks (lengths, segments) are the op's options. The heads are then merged back
 * to (B, T, C) and projected.
 *
 * Positional methods act in one of three places: on the token embeddings (sinusoidal and
 * learned: the GPT adds them, and attention here is plain, zero slopes), on q and k before the
 * scores (rotary: sl_rotary, then the fused op with zero slopes), or inside the scores (ALiBi in
 * the fused op, with fixed or learned, symmetric or asymmetric slopes; T5's, KERPLE's,
 * Sandwich's and FIRE's biases through scores composed from primitive ops, in `attend_scores`,
 * with the masks as an i32 mask, whose memory is O(Tq Tk) per head, as in the T5 and ALiBi
 * papers; with grad off, a block of queries at a time in a scratch arena, so evaluation at long
 * lengths holds the scores of one block of one layer at a time).
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- positional methods */

static const char *const pos_names[] = {"none", "alibi",  "sinusoidal", "learned", "rotary",
                                        "t5",   "kerple", "sandwich",   "fire"};
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
    char known[160] = "";
    for (int i = 0; i < SL_POS_COUNT; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                 pos_names[i]);
    return sl_set_error(SL_ERR_ARG, "sl_pos_parse: unknown positional method '%s' (known: %s)",
                        name ? name : "(null)", known);
}

static const char *const slopes_names[] = {"fixed", "learned"};
_Static_assert(sizeof slopes_names / sizeof *slopes_names == SL_SLOPES_COUNT, "every kind named");

const char *sl_slopes_name(sl_slopes k)
{
    return k >= 0 && k < SL_SLOPES_COUNT ? slopes_names[k] : "?";
}

bool sl_slopes_parse(const char *name, sl_slopes *out)
{
    for (int i = 0; name && i < SL_SLOPES_COUNT; i++)
        if (!strcmp(name, slopes_names[i])) {
            if (out) *out = (sl_slopes)i;
            return true;
        }
    return sl_set_error(SL_ERR_ARG, "sl_slopes_parse: unknown slopes '%s' (known: fixed, learned)",
                        name ? name : "(null)");
}

/* The head whose paper's slope head h takes for the keys after its query (asymmetric): its
 * neighbour in the pair (0, 1), (2, 3), ...; with an odd count the last head keeps its own. */
static int after_head(int h, int H) { return (h ^ 1) < H ? h ^ 1 : h; }

/* The initial per-head slopes, a new (H) tensor in the current arena in dtype: ALiBi's (the
 * paper's times slope_scale; after: the pair-swapped ones, for the keys after the query), zeros
 * (no bias) for the other methods. */
static sl_tensor *initial_slopes(const sl_attention_config *c, bool after, sl_dtype dtype)
{
    int H = c->n_heads;
    sl_tensor *s = sl_zeros(dtype, 1, (int64_t[]){H});
    for (int h = 0; s && c->pos == SL_POS_ALIBI && h < H; h++)
        sl_set(s, h, c->slope_scale * sl_alibi_slope(after ? after_head(h, H) : h, H));
    return s;
}

/* The masks of one call as plain arrays: lengths [B] and segment ids (B, Tk), or NULL. */
typedef struct {
    int32_t *len, *seg;
    int64_t Tk;
} mask_arrays;

/* Whether the query at position p of batch row b may see key j (the scores' path: causality,
 * the window and the masks, as sl_alibi_opts has them). */
static bool sees(const sl_attention_config *c, const mask_arrays *ma, int64_t b, int64_t p,
                 int64_t j)
{
    int64_t d = p - j;
    if (!c->bidirectional && d < 0) return false;
    if (c->window && (c->bidirectional ? llabs(d) : d) >= c->window) return false;
    if (ma->len && (j >= ma->len[b] || p >= ma->len[b])) return false;
    return !ma->seg || ma->seg[b * ma->Tk + j] == ma->seg[b * ma->Tk + p];
}

/* *mask: i32 (B', 1, 1, nq, nk), 1 where query row i (at position p0 + i) must not see key j;
 * B' = B with per-row masks, else 1; NULL when nothing is masked. A row that sees no key is
 * left unmasked (its softmax stays finite) and *keep (B', 1, 1, nq, 1), in dtype, is 0 there
 * and 1 elsewhere, to zero its output and gradient; NULL when every row sees a key. */
static bool scores_mask(const sl_attention_config *c, const mask_arrays *ma, int64_t B, int64_t p0,
                        int64_t nq, int64_t nk, sl_dtype dtype, sl_tensor **mask, sl_tensor **keep)
{
    *mask = *keep = NULL;
    if (c->bidirectional && !c->window && !ma->len && !ma->seg) return true;
    int64_t Bm = ma->len || ma->seg ? B : 1;
    if (!(*mask = sl_empty(SL_I32, 5, (int64_t[]){Bm, 1, 1, nq, nk}))) return false;
    for (int64_t b = 0; b < Bm; b++)
        for (int64_t i = 0; i < nq; i++) {
            int32_t *row = (int32_t *)(*mask)->data + (b * nq + i) * nk;
            int64_t seen = 0;
            for (int64_t j = 0; j < nk; j++) seen += !(row[j] = !sees(c, ma, b, p0 + i, j));
            if (seen) continue;
            memset(row, 0, sizeof(int32_t) * (size_t)nk);
            if (!*keep && !(*keep = sl_ones(dtype, 5, (int64_t[]){Bm, 1, 1, nq, 1}))) return false;
            sl_set(*keep, b * nq + i, 0);
        }
    return true;
}

/* softmax(q k^T / sqrt(D) + bias, masked) v * keep with a bias (H, Tq, Tk), composed from
 * primitive ops (their backwards give the gradient, the bias's parameters' included). The H
 * query heads are viewed as (Hk, G) groups so that each group's matmul broadcasts against its
 * kv head: query head h = g G + r reads kv head g, as in the fused op. mask and keep may be
 * NULL. */
static sl_tensor *scores_attend(sl_tensor *q, sl_tensor *k, sl_tensor *v, sl_tensor *bias,
                                sl_tensor *mask, sl_tensor *keep)
{
    int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3];
    int64_t Hk = k->shape[1], Tk = k->shape[2], G = H / Hk;
    sl_tensor *q5 = sl_reshape(sl_mul_scalar(q, 1 / sqrt((double)D)), 5,
                               (int64_t[]){B, Hk, G, Tq, D});               // (B, Hk, G, Tq, D)
    sl_tensor *kt = sl_transpose(sl_unsqueeze(k, 2), 3, 4);                 // (B, Hk, 1, D, Tk)
    sl_tensor *s = sl_matmul(q5, kt);                                       // (B, Hk, G, Tq, Tk)
    s = sl_add(s, sl_reshape(bias, 4, (int64_t[]){Hk, G, Tq, Tk}));         // + (Hk, G, Tq, Tk)
    if (mask) s = sl_masked_fill(s, mask, -INFINITY);
    sl_tensor *y = sl_matmul(sl_softmax(s, -1), sl_unsqueeze(v, 2));       // (B, Hk, G, Tq, D)
    if (keep) y = sl_mul(y, keep);
    return sl_reshape(y, 4, (int64_t[]){B, H, Tq, D});                     // (B, H, Tq, D)
}

/* The bias (H, nq, nk) of the scores' methods for nq queries aligned bottom-right to nk keys.
 *
 * Which of them a fused, tiled kernel could compute from a per-head table, the way it computes
 * ALiBi's -m_h (p_i - j) from positions (keeping O(T) memory and giving the table a gradient
 * by summing dS over each tile's diagonals): T5 (a bucket per distance: the table is the
 * bucket table read through a distance -> bucket map), KERPLE (-r1 log(1 + r2 d)) and
 * Sandwich (a fixed function of d) depend on the distance d = |p_i - j| alone, so one table
 * (H, n) of the n distances, made once per call (n = Tk; what sl_kerple_bias and
 * sl_sandwich_bias already make, ops/distance.c), is exact, and its gradient (H, n) chains to
 * the parameters outside the kernel (sl_kerple_bias's backward does exactly that from the
 * per-distance sums). FIRE cannot be such a table exactly: its normaliser
 * psi(max(L, p_i)) depends on the query's position, so the queries past the threshold L each
 * read a different function of distance. It could still run fused and exact with more work per
 * score: psi(d) from a table of distance, 1 / psi(max(L, p_i)) one number per query row, and
 * the MLP, which has one input and ReLUs, as at most W + 1 linear pieces per head (what
 * sl_fire_bias's forward evaluates): a search among W breakpoints and a multiply-add per score,
 * with a backward that accumulates per piece. A table indexed by (query row, distance) would
 * be O(T^2) again, and a table of distance alone, exact only while p_i <= L, is FIRE only
 * inside the training length. */
static sl_tensor *bias_of(const sl_attention *m, int64_t nq, int64_t nk)
{
    const sl_attention_config *c = &m->cfg;
    switch (c->pos) {
    case SL_POS_T5:
        return c->bidirectional ? sl_t5_bias_bidirectional(m->t5_table, nq, nk, c->t5_max_distance)
                                : sl_t5_bias(m->t5_table, nq, nk, c->t5_max_distance);
    case SL_POS_KERPLE:
        return sl_kerple_bias(sl_exp(m->kerple_log_r1), sl_exp(m->kerple_log_r2), nq, nk);
    case SL_POS_SANDWICH:
        return sl_sandwich_bias(m->proj->weight->dtype, c->n_heads, c->sandwich_dim, nq, nk);
    case SL_POS_FIRE: return sl_fire_bias(&m->fire, c->fire_threshold, nq, nk);
    default: break;
    }
    return SL_FAIL(SL_ERR_ARG, "sl_attention_forward: %s has no bias", sl_pos_name(c->pos));
}

enum { QUERY_BLOCK = 256 }; /* queries per block when nothing needs the scores kept */

/* Attention through materialised scores with the method's bias. With grad on, the scores of
 * all queries at once: backward needs them. With grad off (evaluation, decoding), nothing
 * outlives the call but the output, so long inputs go a block of queries at a time through a
 * scratch arena that is reset after each block: memory O(QUERY_BLOCK Tk) per head. Causal:
 * block [i0, end) needs only the keys up to its last query, position Tk - Tq + end - 1; with
 * those keys the block's queries are bottom-right aligned, so each block is the same
 * computation, without the keys the mask would hide (the bias's positions are absolute: key j
 * is at j, query i at Tk - Tq + i, in every block). Bidirectional: every block needs every
 * key, and its bias is rows of the whole (H, Tq, Tk) bias, made once (in an arena of its own,
 * freed at the end). The blocks go from the last (the most keys) to the first, so that each
 * block's allocations fit in the scratch blocks the one before it left (growing sizes would
 * add new ones every time). */
static sl_tensor *attend_scores(const sl_attention *m, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                                const mask_arrays *ma)
{
    const sl_attention_config *c = &m->cfg;
    int64_t B = q->shape[0], Tq = q->shape[2], Tk = k->shape[2], off = Tk - Tq;
    sl_tensor *mask, *keep;
    if (sl_grad_enabled() || Tq <= QUERY_BLOCK)
        return scores_mask(c, ma, B, off, Tq, Tk, q->dtype, &mask, &keep)
                   ? scores_attend(q, k, v, bias_of(m, Tq, Tk), mask, keep)
                   : NULL;
    sl_tensor *y =
        sl__new("sl_attention_forward", q->dtype, 4, (int64_t[]){B, q->shape[1], Tq, v->shape[3]});
    sl_arena *scratch = y ? sl_arena_new(0) : NULL, *hold = scratch ? sl_arena_new(0) : NULL;
    if (!hold) {
        sl_arena_free(scratch);
        return NULL;
    }
    sl_arena *prev = sl_arena_set(hold);
    sl_tensor *whole = c->bidirectional ? bias_of(m, Tq, Tk) : NULL; // (H, Tq, Tk)
    bool ok = !c->bidirectional || whole;
    sl_arena_set(scratch);
    for (int64_t end = Tq; ok && end > 0; end -= QUERY_BLOCK) {
        int64_t i0 = end > QUERY_BLOCK ? end - QUERY_BLOCK : 0, nq = end - i0;
        int64_t keys = c->bidirectional ? Tk : off + end;
        sl_tensor *bias = whole ? sl_narrow(whole, 1, i0, nq) : bias_of(m, nq, keys);
        ok = scores_mask(c, ma, B, off + i0, nq, keys, q->dtype, &mask, &keep);
        sl_tensor *yb = ok ? scores_attend(sl_narrow(q, 2, i0, nq), sl_narrow(k, 2, 0, keys),
                                           sl_narrow(v, 2, 0, keys), bias, mask, keep)
                           : NULL;
        ok = yb && sl_copy_into(sl_narrow(y, 2, i0, nq), yb); // (B, H, nq, Dv)
        sl_arena_reset(scratch);
    }
    sl_arena_set(prev);
    sl_arena_free(scratch);
    sl_arena_free(hold);
    return ok ? y : NULL;
}

/* The fused kernel's options and slopes (exp of the parameters when learned) for the module;
 * NULL if making the slopes failed. */
static sl_tensor *fused_args(const sl_attention *m, const sl_attention_mask *mask,
                             sl_alibi_opts *opts)
{
    const sl_attention_config *c = &m->cfg;
    sl_alibi_opts o = {.bidirectional = c->bidirectional, .window = c->window};
    if (mask) {
        o.key_lengths = o.query_lengths = mask->lengths;
        o.key_segments = mask->segments;
    }
    sl_tensor *slopes = m->log_slopes ? sl_exp(m->log_slopes) : m->slopes;
    if (c->asymmetric)
        o.slopes_after = m->log_slopes_after ? sl_exp(m->log_slopes_after) : m->slopes_after;
    if (m->slope_factor != 1) { /* inference-time scaling (sl_gpt_scale_slopes) */
        slopes = sl_mul_scalar(slopes, m->slope_factor);
        if (c->asymmetric) o.slopes_after = sl_mul_scalar(o.slopes_after, m->slope_factor);
    }
    if (!slopes || (c->asymmetric && !o.slopes_after)) return NULL;
    *opts = o;
    return slopes;
}

static sl_tensor *attend_fused(const sl_attention *m, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                               const sl_attention_mask *mask)
{
    sl_alibi_opts o;
    sl_tensor *slopes = fused_args(m, mask, &o);
    return slopes ? sl_alibi_attention(q, k, v, slopes, &o) : NULL;
}

/* mask's tensors as arrays in the current arena (checked by check_mask). */
static bool read_mask(const sl_attention_mask *mask, int64_t Tk, mask_arrays *ma)
{
    *ma = (mask_arrays){.Tk = Tk};
    sl_tensor *len = mask ? sl__opt(mask->lengths) : NULL,
              *seg = mask ? sl__opt(mask->segments) : NULL;
    sl_arena *a = sl_arena_current();
    if (len && (!(ma->len = sl_arena_alloc(a, sizeof(int32_t) * (size_t)sl_numel(len), 16)) ||
                !sl_copy_out(len, ma->len)))
        return false;
    if (seg && (!(ma->seg = sl_arena_alloc(a, sizeof(int32_t) * (size_t)sl_numel(seg), 16)) ||
                !sl_copy_out(seg, ma->seg)))
        return false;
    return true;
}

/* q (B, H, Tq, D), k and v (B, Hk, Tk, D) -> (B, H, Tq, D), query i at position Tk - Tq + i. */
static sl_tensor *attend(const sl_attention *m, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                         const sl_attention_mask *mask)
{
    mask_arrays ma;
    switch (m->cfg.pos) {
    case SL_POS_NONE:
    case SL_POS_SINUSOIDAL:
    case SL_POS_LEARNED:
    case SL_POS_ROTARY: /* zero slopes: plain attention */
    case SL_POS_ALIBI: return attend_fused(m, q, k, v, mask);
    case SL_POS_T5:
    case SL_POS_KERPLE:
    case SL_POS_SANDWICH:
    case SL_POS_FIRE:
        return read_mask(mask, k->shape[2], &ma) ? attend_scores(m, q, k, v, &ma) : NULL;
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
    if (c.pos == SL_POS_T5 && c.bidirectional &&
        (c.t5_buckets < 4 || c.t5_max_distance <= c.t5_buckets / 4))
        return sl_set_error(SL_ERR_ARG,
                            "%s: bidirectional T5 splits the buckets in two halves "
                            "and needs t5_buckets >= 4 (got %d) and t5_max_distance > "
                            "t5_buckets / 4 (got %d)",
                            op, c.t5_buckets, c.t5_max_distance);
    if (c.pos == SL_POS_SANDWICH) {
        if (c.sandwich_dim == 0) c.sandwich_dim = c.dim / c.n_heads;
        if (c.sandwich_dim < 2 || c.sandwich_dim % 2 || c.sandwich_dim > 1 << 16)
            return sl_set_error(SL_ERR_ARG, "%s: sandwich_dim %lld must be even and in [2, 65536] "
                                "(0: the head dimension, here %lld)", op,
                                (long long)c.sandwich_dim, (long long)(c.dim / c.n_heads));
    }
    if (c.pos == SL_POS_FIRE) {
        if (c.fire_width == 0) c.fire_width = 32;
        if (c.fire_threshold == 0) c.fire_threshold = 512;
        if (c.fire_width < 1 || c.fire_width > 4096)
            return sl_set_error(SL_ERR_ARG, "%s: fire_width %d outside [1, 4096]", op,
                                c.fire_width);
        if (!(isfinite(c.fire_threshold) && c.fire_threshold > 0))
            return sl_set_error(SL_ERR_ARG, "%s: fire_threshold %g must be finite and > 0", op,
                                c.fire_threshold);
    }
    if (c.pos != SL_POS_KERPLE && (c.kerple_log_r1 || c.kerple_log_r2))
        return sl_set_error(SL_ERR_ARG, "%s: kerple_log_r1 and kerple_log_r2 are KERPLE's, "
                            "and pos is %s", op, sl_pos_name(c.pos));
    if (!c.kerple_log_r1 != !c.kerple_log_r2)
        return sl_set_error(SL_ERR_ARG, "%s: give both kerple_log_r1 and kerple_log_r2, or "
                            "neither", op);
    if (c.window < 0)
        return sl_set_error(SL_ERR_ARG, "%s: window %lld must be >= 0 (0: none)", op,
                            (long long)c.window);
    if (c.slope_scale == 0) c.slope_scale = 1;
    if (!(isfinite(c.slope_scale) && c.slope_scale > 0))
        return sl_set_error(SL_ERR_ARG, "%s: slope_scale %g must be finite and > 0", op,
                            c.slope_scale);
    if (c.slopes < 0 || c.slopes >= SL_SLOPES_COUNT)
        return sl_set_error(SL_ERR_ARG, "%s: unknown slopes %d", op, (int)c.slopes);
    if (c.pos != SL_POS_ALIBI &&
        (c.slopes != SL_SLOPES_FIXED || c.asymmetric || c.slope_scale != 1))
        return sl_set_error(SL_ERR_ARG,
                            "%s: slopes, asymmetric and slope_scale are ALiBi's "
                            "settings, and pos is %s",
                            op, sl_pos_name(c.pos));
    if (c.asymmetric && !c.bidirectional)
        return sl_set_error(SL_ERR_ARG,
                            "%s: asymmetric slopes need bidirectional attention "
                            "(causal attention sees no key after its query)",
                            op);
    *out = c;
    return true;
}

/* Learned slopes: the parameter "<name>.<leaf>" (H) = log of the initial slopes (no decay). */
static sl_tensor *learned_slopes(sl_params *ps, const char *name, const char *leaf,
                                 const sl_attention_config *c, bool after)
{
    char sub[2 * SL_PARAM_NAME_MAX];
    snprintf(sub, sizeof sub, "%s%s%s", name, name[0] ? "." : "", leaf);
    int H = c->n_heads;
    sl_tensor *w = sl_params_add(ps, sub, 1, (int64_t[]){H}, false);
    for (int h = 0; w && h < H; h++)
        sl_set(w, h, log(c->slope_scale * sl_alibi_slope(after ? after_head(h, H) : h, H)));
    return w;
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

/* KERPLE's shared parameters must be (H) in the registry's dtype. */
static bool check_kerple(const sl_params *ps, const sl_attention_config *c)
{
    const sl_tensor *t[2] = {c->kerple_log_r1, c->kerple_log_r2};
    for (int i = 0; c->pos == SL_POS_KERPLE && t[0] && i < 2; i++)
        if (t[i]->ndim != 1 || t[i]->shape[0] != c->n_heads || t[i]->dtype != sl_params_dtype(ps))
            return sl_set_error(SL_ERR_ARG, "sl_attention_new: %s %s %s is not (H) = %s [%d]",
                                i ? "kerple_log_r2" : "kerple_log_r1", sl_dtype_name(t[i]->dtype),
                                sl_shape_str(t[i]), sl_dtype_name(sl_params_dtype(ps)), c->n_heads);
    return true;
}

/* A new parameter "<name>.<leaf>" of the given shape, without weight decay. */
static sl_tensor *sub_param(sl_params *ps, const char *name, const char *leaf, int ndim,
                            const int64_t *shape)
{
    char sub[2 * SL_PARAM_NAME_MAX];
    snprintf(sub, sizeof sub, "%s%s%s", name, name[0] ? "." : "", leaf);
    return sl_params_add(ps, sub, ndim, shape, false);
}

bool sl__kerple_init(sl_tensor *log_r1, sl_tensor *log_r2, sl_rng *rng)
{
    /* The authors' initialisation: r1 ~ U(0, 2), r2 ~ U(0, 1), clamped at 0.01. */
    for (int64_t h = 0; h < sl_numel(log_r1); h++)
        sl_set(log_r1, h, log(fmax(2 * sl_rng_uniform(rng), 0.01)));
    for (int64_t h = 0; h < sl_numel(log_r2); h++)
        sl_set(log_r2, h, log(fmax(sl_rng_uniform(rng), 0.01)));
    return true;
}

/* FIRE's parameters "<name>.fire.*" (see sl_attention.fire), initialised from rng. */
static bool fire_params(sl_params *ps, const char *name, const sl_attention_config *c, sl_rng *rng,
                        sl_fire_weights *w)
{
    int64_t W = c->fire_width, H = c->n_heads;
    if (!(w->fc1_weight = sub_param(ps, name, "fire.fc1.weight", 2, (int64_t[]){W, 1})) ||
        !(w->fc1_bias = sub_param(ps, name, "fire.fc1.bias", 1, (int64_t[]){W})) ||
        !(w->fc2_weight = sub_param(ps, name, "fire.fc2.weight", 2, (int64_t[]){H, W})) ||
        !(w->fc2_bias = sub_param(ps, name, "fire.fc2.bias", 1, (int64_t[]){H})) ||
        !(w->c = sub_param(ps, name, "fire.c", 1, (int64_t[]){1})) ||
        !(w->l_mult = sub_param(ps, name, "fire.l_mult", 1, (int64_t[]){1})))
        return false;
    /* PyTorch's nn.Linear: weight and bias uniform in +-1/sqrt(fan in) */
    sl_tensor *lin[4] = {w->fc1_weight, w->fc1_bias, w->fc2_weight, w->fc2_bias};
    for (int i = 0; i < 4; i++) {
        double bound = 1 / sqrt(i < 2 ? 1.0 : (double)W);
        for (int64_t e = 0; e < sl_numel(lin[i]); e++)
            sl_set(lin[i], e, bound * (2 * sl_rng_uniform(rng) - 1));
    }
    sl_set(w->c, 0, 0.1);
    sl_set(w->l_mult, 0, 1.0);
    return true;
}

sl_attention *sl_attention_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                               sl_rng *rng)
{
    sl_attention_config c;
    if (!sl__attention_config_resolve("sl_attention_new", cfg, &c)) return NULL;
    if (!ps || !name) return SL_FAIL(SL_ERR_ARG, "sl_attention_new: registry or name is NULL");
    if (!check_t5_table(ps, &c) || !check_kerple(ps, &c)) return NULL;
    sl_attention *m = sl_arena_alloc(sl_params_arena(ps), sizeof *m, 16);
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    m->cfg = c;
    m->slope_factor = 1;
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
    if (c.pos == SL_POS_KERPLE) {
        m->kerple_log_r1 = c.kerple_log_r1, m->kerple_log_r2 = c.kerple_log_r2;
        int64_t H = c.n_heads;
        if (!m->kerple_log_r1 &&
            (!(m->kerple_log_r1 = sub_param(ps, name, "kerple_log_r1", 1, &H)) ||
             !(m->kerple_log_r2 = sub_param(ps, name, "kerple_log_r2", 1, &H)) ||
             !sl__kerple_init(m->kerple_log_r1, m->kerple_log_r2, rng)))
            return NULL;
    }
    if (c.pos == SL_POS_FIRE && !fire_params(ps, name, &c, rng, &m->fire)) return NULL;
    if (c.slopes == SL_SLOPES_LEARNED)
        return (m->log_slopes = learned_slopes(ps, name, "log_slopes", &c, false)) &&
                       (!c.asymmetric || (m->log_slopes_after = learned_slopes(
                                              ps, name, "log_slopes_after", &c, true)))
                   ? m
                   : NULL;
    sl_arena *prev = sl_arena_set(sl_params_arena(ps));
    m->slopes = initial_slopes(&c, false, sl_params_dtype(ps));
    if (c.asymmetric) m->slopes_after = initial_slopes(&c, true, sl_params_dtype(ps));
    sl_arena_set(prev);
    return m->slopes && (!c.asymmetric || m->slopes_after) ? m : NULL;
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

/* The mask fits x's batch and Tk positions (errors name the field); lengths past Tk count as
 * Tk. */
static bool check_mask(const sl_attention_mask *mask, int64_t B, int64_t Tk)
{
    static const char *op = "sl_attention_forward";
    sl_tensor *len = mask ? sl__opt(mask->lengths) : NULL,
              *seg = mask ? sl__opt(mask->segments) : NULL;
    if (len && !sl__check_live(op, len, "mask->lengths")) return false;
    if (seg && !sl__check_live(op, seg, "mask->segments")) return false;
    if (len && (len->dtype != SL_I32 || len->ndim != 1 || len->shape[0] != B))
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: mask lengths %s %s must be i32 [%lld] (one per "
                            "batch row)",
                            op, sl_dtype_name(len->dtype), sl_shape_str(len), (long long)B);
    for (int64_t b = 0; len && b < B; b++)
        if (sl_get(len, b) < 0)
            return sl_set_error(SL_ERR_ARG, "%s: mask lengths[%lld] is %.0f; it must be >= 0", op,
                                (long long)b, sl_get(len, b));
    if (seg &&
        (seg->dtype != SL_I32 || seg->ndim != 2 || seg->shape[0] != B || seg->shape[1] != Tk))
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: mask segments %s %s must be i32 [%lld,%lld] "
                            "(batch rows, positions attended over)",
                            op, sl_dtype_name(seg->dtype), sl_shape_str(seg), (long long)B,
                            (long long)Tk);
    return true;
}

sl_tensor *sl_attention_forward(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache)
{
    return sl_attention_forward_masked(m, x, cache, NULL);
}

sl_tensor *sl_attention_forward_masked(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                       const sl_attention_mask *mask)
{
    return sl__attention_forward_residual(m, x, cache, mask, NULL);
}

sl_tensor *sl_attention_forward_residual(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                         const sl_attention_mask *mask, sl_tensor *residual)
{
    SL_CHECK_TENSOR("sl_attention_forward_residual", residual);
    return sl__attention_forward_residual(m, x, cache, mask, residual);
}

sl_tensor *sl__attention_forward_residual(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                          const sl_attention_mask *mask, sl_tensor *residual)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_attention_forward: module is NULL");
    SL_CHECK_TENSOR("sl_attention_forward", x);
    const sl_attention_config *c = &m->cfg;
    int64_t C = c->dim, D = C / c->n_heads, kv = c->n_kv_heads * D;
    if (x->ndim != 3 || x->shape[2] != C)
        return SL_FAIL(SL_ERR_SHAPE, "sl_attention_forward: input %s is not (B, T, %lld)",
                       sl_shape_str(x), (long long)C);
    if (cache && c->bidirectional)
        return SL_FAIL(SL_ERR_STATE,
                       "sl_attention_forward: a KV cache needs causal attention "
                       "(bidirectional attention lets earlier positions see later ones, which "
                       "the cache has not seen)");
    if (cache && sl_grad_enabled())
        return SL_FAIL(SL_ERR_STATE, "sl_attention_forward: a KV cache needs grad mode off "
                       "(sl_set_grad_enabled(false)): cache writes are not recorded for backward");
    if (!check_mask(mask, x->shape[0], (cache ? cache->len : 0) + x->shape[1])) return NULL;
    if (c->fused_qkv && !cache && (c->pos == SL_POS_ALIBI || c->pos == SL_POS_NONE ||
                                   c->pos == SL_POS_SINUSOIDAL || c->pos == SL_POS_LEARNED)) {
        /* the projection writes the heads head by head, where the fused kernel reads them in
         * place: no split, no merge, no copy */
        sl_alibi_opts o;
        sl_tensor *qkv = sl_linear_heads(x, m->qkv->weight, m->qkv->bias ? m->qkv->bias : SL_NONE,
                                         D); // (B, H + 2 Hk, T, D)
        sl_tensor *slopes = qkv ? fused_args(m, mask, &o) : NULL;
        sl_tensor *y = slopes ? sl_alibi_attention_packed(qkv, c->n_heads, c->n_kv_heads,
                                                          slopes, &o)
                              : NULL;       // (B, T, C)
        return sl__linear_forward_residual(m->proj, y, residual);
    }
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
    sl_tensor *y = attend(m, q, k, v, mask);                // (B, H, T, D)
    y = sl_permute(y, (int[]){0, 2, 1, 3});                 // (B, T, H, D)
    y = sl_reshape(y, 3, x->shape);                         // (B, T, C), a copy
    return sl__linear_forward_residual(m->proj, y, residual);
}
