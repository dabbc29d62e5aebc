/* ops/alibi_attention.c — ALiBi slopes and the fused, tiled sl_alibi_attention.
 *
 * Forward (FlashAttention-style): one task per (batch, head, tile of TILE queries) walks the
 * key tiles its queries may see, from the last back to the first (tiles wholly above the
 * causal diagonal, outside the window, past the row's key length or, by their ranges of
 * segment ids, in other documents are never computed): scores k q^T, the bias from integer
 * positions, and an online softmax (a running max and sum per query, the output accumulator
 * rescaled when the max grows). It writes the output and one log-sum-exp per query, the only
 * thing backward needs besides q, k, v and the output.
 *
 * Backward (FlashAttention-2-style), two passes that recompute the probabilities tile by tile
 * from the saved log-sum-exp, so that no thread writes where another does:
 *   1. one task per (batch, kv head, key tile): dK and dV of that tile, summed over the query
 *      heads of its group and the query tiles that see it;
 *   2. one task per (batch, head, query tile): dQ of that tile and its share of dL/dslope
 *      (and dL/dslope_after), kept in a per-task slot and summed in a fixed order afterwards.
 * Each task's arithmetic is fixed and tasks write disjoint memory, so the results do not
 * depend on the thread count or the schedule: they repeat bitwise.
 *
 * Masks. Key and query lengths cut each task's ranges short; causality and the window give the
 * range of key tiles a query tile may see (O(W) keys per query with a window of W); segment ids
 * skip the pairs of tiles whose ranges of ids do not meet. Only the tiles that straddle one of
 * these edges evaluate a mask, lane by lane; the others run without one. A query row with no
 * visible key gets the output 0 and the log-sum-exp +inf, which makes its probabilities, and so
 * every gradient through it, exactly 0 in backward.
 *
 * The tile products (alibi_attention_kernels.h) are register-blocked loops on GCC/Clang vector
 * types, AVX-512 when the build targets it: tiles this small run faster in registers here than
 * through calls to a BLAS (BENCHMARKS.md compares the rates). Tiles live in each thread's
 * scratch (tensor/pool.c): besides the output and the log-sum-exp (and, with masks, the
 * lengths and segment ids copied, O(B T)), the op's memory is O(threads * TILE * (D + Dv)),
 * never O(Tq * Tk). */
#include "alibi_attention.h"

#include <stdlib.h>
#include <string.h>


/* ---------------------------------------------------------------- slopes */

double sl_alibi_slope(int h, int n_heads)
{
    if (n_heads < 1 || h < 0 || h >= n_heads) {
        sl_set_error(SL_ERR_ARG, "sl_alibi_slope: head %d of %d heads", h, n_heads);
        return NAN;
    }
    int c = 1; /* the largest power of two <= n_heads */
    while (c <= n_heads / 2) c *= 2;
    if (h < c) return exp2(-8.0 * (h + 1) / c);
    return exp2(-4.0 * (2 * (h - c) + 1) / c); /* 2c heads' slopes, odd positions */
}

sl_tensor *sl_alibi_slopes(int n_heads)
{
    if (n_heads < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_alibi_slopes: n_heads is %d; it must be at least 1",
                       n_heads);
    sl_tensor *t = sl__new("sl_alibi_slopes", SL_F64, 1, (int64_t[]){n_heads});
    if (!t) return NULL;
    for (int h = 0; h < n_heads; h++) ((double *)t->data)[h] = sl_alibi_slope(h, n_heads);
    return t;
}

/* ---------------------------------------------------------------- running the tasks */

typedef enum { PHASE_FORWARD, PHASE_KV_GRAD, PHASE_Q_GRAD, PHASE_GROUP_GRAD } phase;

/* The running CPU's kernels for a dtype (tensor/isa.h). */
static const sl__attn_kernels *kernels(sl_dtype dtype)
{
    static const sl__attn_level *level; /* a benign race: every thread picks the same */
    if (!level) level = SL_ISA_PICK(sl__attn_level);
    return dtype == SL_F32 ? &level->f32 : &level->f64;
}

typedef struct {
    const attn_job *job;
    phase ph;
    const sl__attn_kernels *k;
    size_t scratch_bytes;
    bool oom; /* a thread could not get its tiles */
} runner;

/* Task t of a phase, costliest first (causal: query tiles from the last, key tiles from the
 * first), so that the schedule ends with small tasks. */
static void run_task(const runner *rn, int64_t t, char *scratch)
{
    const attn_job *j = rn->job;
    if (rn->ph == PHASE_GROUP_GRAD) { /* (batch, kv head), all alike: any order */
        rn->k->group_grad_task(j, t / j->Hk, t % j->Hk, scratch);
        return;
    }
    if (rn->ph == PHASE_KV_GRAD) {
        int64_t bg = t % (j->B * j->Hk), kt = t / (j->B * j->Hk);
        rn->k->kv_grad_task(j, bg / j->Hk, bg % j->Hk, kt, scratch);
        return;
    }
    int64_t bh = t % (j->B * j->H), qt = j->nqt - 1 - t / (j->B * j->H);
    int64_t b = bh / j->H, h = bh % j->H;
    if (rn->ph == PHASE_FORWARD) rn->k->forward_task(j, b, h, qt, scratch);
    else rn->k->q_grad_task(j, b, h, qt, scratch);
}

/* Tasks [t0, t1) on one thread, with the thread's own tiles. */
static void run_tasks(void *ctx, int64_t t0, int64_t t1, int worker)
{
    (void)worker;
    runner *rn = ctx;
    char *scratch = sl__scratch(SL__SCRATCH_TILES, rn->scratch_bytes);
    if (!scratch) {
        rn->oom = true; /* a benign race: every writer stores true */
        return;
    }
    for (int64_t t = t0; t < t1; t++) run_task(rn, t, scratch);
}

static bool run_phase(const attn_job *j, phase ph, sl_dtype dtype)
{
    runner rn = {.job = j, .ph = ph, .k = kernels(dtype)};
    rn.scratch_bytes = rn.k->scratch_bytes(j->D, j->Dv);
    if (ph == PHASE_GROUP_GRAD) /* and the group's dQ */
        rn.scratch_bytes += sl_dtype_size(dtype) * (size_t)(j->group * j->Tq * j->D);
    int64_t n_tasks = ph == PHASE_GROUP_GRAD ? j->B * j->Hk
                      : ph == PHASE_KV_GRAD  ? j->B * j->Hk * j->nkt
                                             : j->B * j->H * j->nqt;
    sl__parallel_tasks(n_tasks, run_tasks, &rn, SL__SCRATCH_TILES, rn.scratch_bytes);
    if (rn.oom)
        return sl_set_error(SL_ERR_OOM, "sl_alibi_attention: out of memory for %zu bytes of tiles",
                            rn.scratch_bytes);
    return true;
}

typedef struct {
    const attn_job *job;
    const sl__attn_kernels *k;
} rows_ctx;

static void row_dots_range(void *ctx, int64_t r0, int64_t r1)
{
    const rows_ctx *c = ctx;
    c->k->row_dots(c->job, r0, r1);
}

/* ---------------------------------------------------------------- backward */

typedef struct {
    attn_job job; /* the forward's, lse included */
} attn_saved;

/* Whether the backward runs as one pass over (batch, kv head) (group_grad_task: five tile
 * products per pair of tiles) rather than two over tiles (kv_grad_task, then q_grad_task: seven,
 * but many more tasks of finer grain, for shapes with few (batch, kv head) pairs: decoding, a
 * single long sequence of few heads). Decided by the shape alone, so that results do not depend
 * on the thread count. */
enum { SINGLE_PASS_MIN_TASKS = 8 };

static bool single_pass(const attn_job *j)
{
    static int forced; /* SL_ATTENTION_BACKWARD=single|two, for tests and comparisons */
    if (!forced) {
        const char *e = getenv("SL_ATTENTION_BACKWARD");
        forced = e && !strcmp(e, "single") ? 1 : e && !strcmp(e, "two") ? -1 : 2;
    }
    if (forced != 2) return forced > 0;
    return j->B * j->Hk >= SINGLE_PASS_MIN_TASKS;
}

/* Adds the per-task shares of dL/dm_h (part 0) or dL/dm'_h (part 1), in a fixed order, to gm. */
static void add_slope_grads(const attn_job *j, int part, sl_tensor *gm)
{
    const double *parts = j->dslope_part + part * j->H * j->B * j->nqt;
    for (int64_t h = 0; h < j->H; h++) {
        double s = 0;
        for (int64_t e = 0; e < j->B * j->nqt; e++) s += parts[h * j->B * j->nqt + e];
        if (gm->dtype == SL_F32) ((float *)sl_ptr(gm))[h] += (float)s;
        else ((double *)sl_ptr(gm))[h] += s;
    }
}

/* out = P v with P = softmax_j(x), x = scale q k^T + bias (-inf where masked), per (b, h), with
 * bias = -m_h (p_i - j) for j <= p_i and -m'_h (j - p_i) for j > p_i:
 *     dv = P^T dout                   (summed over the query heads that share the kv head)
 *     dP = dout v^T
 *     dx = dS = P * (dP - D),  D_i = sum_j P_ij dP_ij = dout_i . out_i
 *     dq = scale dS k,  dk = scale dS^T q   (dk summed over the group, like dv)
 *     dm_h = sum_{b,i,j} dS_ij dx_ij/dm_h = -sum_{b,i, j <= p_i} dS_ij (p_i - j)
 *     dm'_h = -sum_{b,i, j > p_i} dS_ij (j - p_i)   (symmetric slopes, m' = m: dm_h gets both)
 * Masked pairs have P = 0, so dS = 0: they pass nothing; a row with no visible key (lse = +inf)
 * has P = 0 everywhere and out = 0, so D = 0 and it passes nothing either.
 * P is recomputed tile by tile from q, k and the saved lse (pass 1: dk, dv per key tile; pass 2:
 * dq and dm per query tile). */
static bool attention_backward(sl_node *n)
{
    const attn_saved *s = n->saved;
    attn_job j = s->job;
    sl_dtype dt = n->out->dtype;
    sl_tensor *g[5] = {NULL, NULL, NULL, NULL, NULL}; /* dq, dk, dv, dslopes, dslopes_after */
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] && n->in[i]->requires_grad && !(g[i] = sl_input_grad(n, i))) return false;
    j.dout = n->grad->data;
    j.dq = g[0] ? sl_ptr(g[0]) : NULL;
    j.dk = g[1] ? sl_ptr(g[1]) : NULL;
    j.dv = g[2] ? sl_ptr(g[2]) : NULL;

    sl_arena *a = sl_arena_current();
    int64_t rows = j.B * j.H * j.Tq;
    j.drow = sl_arena_alloc(a, sl_dtype_size(dt) * (size_t)rows, 64);
    if (!j.drow) return false;
    rows_ctx rc = {&j, kernels(dt)};
    sl_parallel_for(rows, 1024, row_dots_range, &rc);

    bool want_slopes = g[3] || g[4];
    if (want_slopes) {
        size_t parts = (size_t)(j.H * j.B * j.nqt) * (j.asym ? 2 : 1);
        if (!(j.dslope_part = sl_arena_alloc(a, sizeof(double) * parts, 64))) return false;
        memset(j.dslope_part, 0, sizeof(double) * parts);
    }
    if (single_pass(&j)) {
        if (!run_phase(&j, PHASE_GROUP_GRAD, dt)) return false;
    } else {
        if ((g[1] || g[2]) && !run_phase(&j, PHASE_KV_GRAD, dt)) return false;
        if ((g[0] || want_slopes) && !run_phase(&j, PHASE_Q_GRAD, dt)) return false;
    }
    if (g[3]) add_slope_grads(&j, 0, g[3]);
    if (g[4]) add_slope_grads(&j, 1, g[4]); /* asym: a slopes_after input is there */
    return true;
}

/* ---------------------------------------------------------------- the op */

static const char *const OP = "sl_alibi_attention";

static bool check_4d(const char *name, const sl_tensor *t, const char *dims)
{
    if (t->ndim != 4)
        return sl_set_error(SL_ERR_SHAPE, "%s: %s must be 4-D %s, got %s", OP, name, dims,
                            sl_shape_str(t));
    for (int d = 0; d < 4; d++)
        if (t->shape[d] < 1)
            return sl_set_error(SL_ERR_SHAPE, "%s: %s %s is empty", OP, name, sl_shape_str(t));
    return true;
}

static bool check_slopes(const char *name, const sl_tensor *s, const sl_tensor *q)
{
    if (s->dtype != SL_F32 && s->dtype != SL_F64)
        return sl_set_error(SL_ERR_DTYPE, "%s: %s must be f32 or f64, got %s %s", OP, name,
                            sl_dtype_name(s->dtype), sl_shape_str(s));
    if (s->ndim != 1 || s->shape[0] != q->shape[1])
        return sl_set_error(SL_ERR_SHAPE, "%s: %s %s for q %s: need one per head, [%lld]", OP, name,
                            sl_shape_str(s), sl_shape_str(q), (long long)q->shape[1]);
    return true;
}

/* The shape, dtype and option checks, in the order the header lists them. */
static bool check_args(const sl_tensor *q, const sl_tensor *k, const sl_tensor *v,
                       const sl_tensor *slopes, bool causal, double scale)
{
    if (!check_4d("q", q, "[B,H,Tq,D]") || !check_4d("k", k, "[B,Hk,Tk,D]") ||
        !check_4d("v", v, "[B,Hk,Tk,Dv]"))
        return false;
    if (!sl__check_float(OP, q) || !sl__check_same_dtype(OP, q, k) ||
        !sl__check_same_dtype(OP, q, v))
        return false;
    const char *qs = sl_shape_str(q), *ks = sl_shape_str(k), *vs = sl_shape_str(v);
    if (q->shape[0] != k->shape[0] || q->shape[3] != k->shape[3])
        return sl_set_error(SL_ERR_SHAPE, "%s: q %s and k %s: batch sizes or head dims differ",
                            OP, qs, ks);
    if (k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2])
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: k %s and v %s: batch sizes, kv heads or key counts differ", OP,
                            ks, vs);
    if (q->shape[1] % k->shape[1])
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: q %s and k %s: %lld query heads are not a multiple of %lld kv "
                            "heads",
                            OP, qs, ks, (long long)q->shape[1], (long long)k->shape[1]);
    if (causal && q->shape[2] > k->shape[2])
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: q %s and k %s: causal attention needs Tq <= Tk (%lld queries, "
                            "%lld keys)",
                            OP, qs, ks, (long long)q->shape[2], (long long)k->shape[2]);
    if (slopes && !check_slopes("slopes", slopes, q)) return false;
    if (!isfinite(scale))
        return sl_set_error(SL_ERR_ARG, "%s: scale %g is not finite", OP, scale);
    return true;
}

/* An option's tensor: NULL (absent) for NULL or SL_NONE; false if it is a released tensor. */
static bool opt_tensor(sl_tensor *t, const char *name, sl_tensor **out)
{
    *out = t == SL_NONE ? NULL : t;
    return !*out || sl__check_live(OP, *out, name);
}

/* An i32 option of the given shape (1-D [n0] when n1 < 0, else [n0, n1]), copied row-major into
 * the current arena, so that backward reads the values the forward used (NULL: absent). */
static bool int_option(sl_tensor *t, const char *name, int64_t n0, int64_t n1, int32_t **out)
{
    *out = NULL;
    if (!opt_tensor(t, name, &t)) return false;
    if (!t) return true;
    bool fits = n1 < 0 ? t->ndim == 1 && t->shape[0] == n0
                       : t->ndim == 2 && t->shape[0] == n0 && t->shape[1] == n1;
    if (t->dtype != SL_I32 || !fits) {
        char want[64];
        if (n1 < 0) snprintf(want, sizeof want, "[%lld]", (long long)n0);
        else snprintf(want, sizeof want, "[%lld,%lld]", (long long)n0, (long long)n1);
        return sl_set_error(t->dtype != SL_I32 ? SL_ERR_DTYPE : SL_ERR_SHAPE,
                            "%s: %s must be i32 %s, got %s %s", OP, name, want,
                            sl_dtype_name(t->dtype), sl_shape_str(t));
    }
    *out = sl_arena_alloc(sl_arena_current(), sizeof(int32_t) * (size_t)sl_numel(t), 64);
    return *out && sl_copy_out(t, *out);
}

/* Lengths must be >= 0; one past Tk counts as Tk (every key, every query row valid). */
static bool check_lengths(int32_t *len, const char *name, int64_t B, int64_t Tk)
{
    for (int64_t b = 0; len && b < B; b++) {
        if (len[b] < 0)
            return sl_set_error(SL_ERR_ARG, "%s: %s[%lld] is %d; it must be >= 0", OP, name,
                                (long long)b, len[b]);
        if (len[b] > Tk) len[b] = (int32_t)Tk;
    }
    return true;
}

/* range (B, n_tiles, 2): the min and max of seg (B, T) over each tile of TILE positions. */
static int32_t *tile_ranges(const int32_t *seg, int64_t B, int64_t T)
{
    int64_t nt = (T + TILE - 1) / TILE;
    int32_t *range = sl_arena_alloc(sl_arena_current(), sizeof(int32_t) * (size_t)(B * nt * 2), 64);
    for (int64_t b = 0; range && b < B; b++)
        for (int64_t t = 0; t < nt; t++) {
            int32_t lo = INT32_MAX, hi = INT32_MIN;
            for (int64_t i = t * TILE; i < T && i < (t + 1) * TILE; i++) {
                int32_t x = seg[b * T + i];
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
            }
            range[2 * (b * nt + t)] = lo;
            range[2 * (b * nt + t) + 1] = hi;
        }
    return range;
}

/* The masks of the options into the job: lengths, segments (with their tile ranges), window. */
static bool job_masks(attn_job *j, const sl_alibi_opts *o)
{
    int32_t *len_k, *len_q, *seg_k, *seg_q;
    if (o->window < 0)
        return sl_set_error(SL_ERR_ARG, "%s: window %lld must be >= 0 (0: no window)", OP,
                            (long long)o->window);
    if (!int_option(o->key_lengths, "key_lengths", j->B, -1, &len_k) ||
        !int_option(o->query_lengths, "query_lengths", j->B, -1, &len_q) ||
        !int_option(o->key_segments, "key_segments", j->B, j->Tk, &seg_k) ||
        !int_option(o->query_segments, "query_segments", j->B, j->Tq, &seg_q))
        return false;
    if (!check_lengths(len_k, "key_lengths", j->B, j->Tk) ||
        !check_lengths(len_q, "query_lengths", j->B, j->Tk))
        return false;
    if (seg_q && !seg_k)
        return sl_set_error(SL_ERR_ARG, "%s: query_segments without key_segments", OP);
    if (seg_k && !seg_q) { /* each query takes the segment of the key at its position */
        if (j->off < 0)
            return sl_set_error(SL_ERR_ARG,
                                "%s: key_segments without query_segments needs "
                                "Tq <= Tk (%lld queries, %lld keys)",
                                OP, (long long)j->Tq, (long long)j->Tk);
        seg_q = sl_arena_alloc(sl_arena_current(), sizeof(int32_t) * (size_t)(j->B * j->Tq), 64);
        if (!seg_q) return false;
        for (int64_t b = 0; b < j->B; b++)
            memcpy(seg_q + b * j->Tq, seg_k + b * j->Tk + j->off, sizeof(int32_t) * (size_t)j->Tq);
    }
    j->len_k = len_k;
    j->len_q = len_q;
    j->seg_k = seg_k;
    j->seg_q = seg_q;
    if (seg_k && (!(j->segk_range = tile_ranges(seg_k, j->B, j->Tk)) ||
                  !(j->segq_range = tile_ranges(seg_q, j->B, j->Tq))))
        return false;
    /* a window no distance reaches is no window (and keeps W exact in f32) */
    j->window = o->window > j->Tk + j->Tq ? 0 : o->window;
    return true;
}

/* t itself when its last dim is contiguous (the kernels take any other strides), else a
 * contiguous copy. */
static sl_tensor *rows_contiguous(sl_tensor *t)
{
    return t->shape[3] == 1 || t->strides[3] == 1 ? t : sl__contig(OP, t);
}

/* The slopes as doubles in the current arena: from the tensor, or the paper's when NULL. */
static double *slope_values(const sl_tensor *slopes, int64_t H)
{
    double *m = sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)H, 64);
    for (int64_t h = 0; m && h < H; h++)
        m[h] = slopes ? sl_get(slopes, h) : sl_alibi_slope((int)h, (int)H);
    return m;
}

sl_tensor *sl_alibi_attention(sl_tensor *q, sl_tensor *k, sl_tensor *v, sl_tensor *slopes,
                              const sl_alibi_opts *opts)
{
    SL_CHECK_TENSOR(OP, q);
    SL_CHECK_TENSOR(OP, k);
    SL_CHECK_TENSOR(OP, v);
    SL_CHECK_OPTIONAL(OP, slopes);
    slopes = sl__opt(slopes); /* NULL: the paper's */
    sl_alibi_opts o = opts ? *opts : (sl_alibi_opts){0};
    if (!check_args(q, k, v, slopes, !o.bidirectional, o.scale)) return NULL;
    sl_tensor *after;
    if (!opt_tensor(o.slopes_after, "slopes_after", &after)) return NULL;
    if (after && !o.bidirectional)
        return SL_FAIL(SL_ERR_ARG,
                       "%s: slopes_after needs bidirectional attention (causal "
                       "attention masks every key after its query)",
                       OP);
    if (after && !check_slopes("slopes_after", after, q)) return NULL;

    const int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3];
    const int64_t Hk = k->shape[1], Tk = k->shape[2], Dv = v->shape[3];
    sl_tensor *in[5] = {q, k, v, slopes, after};
    bool need_grad = false;
    for (int i = 0; i < 5; i++) need_grad |= in[i] && in[i]->requires_grad;
    need_grad &= sl_grad_enabled();

    sl_arena *a = sl_arena_current();
    attn_job j = {
        .B = B, .H = H, .Hk = Hk, .Tq = Tq, .Tk = Tk, .D = D, .Dv = Dv,
        .group = H / Hk, .off = Tk - Tq,
        .nqt = (Tq + TILE - 1) / TILE, .nkt = (Tk + TILE - 1) / TILE,
        .causal = !o.bidirectional, .asym = after != NULL,
        .scale = o.scale != 0 ? o.scale : 1 / sqrt((double)D),
    };
    if (!job_masks(&j, &o)) return NULL;
    sl_tensor *qc = rows_contiguous(q), *kc = rows_contiguous(k), *vc = rows_contiguous(v);
    sl_tensor *out = qc && kc && vc ? sl__new(OP, q->dtype, 4, (int64_t[]){B, H, Tq, Dv}) : NULL;
    double *m = out ? slope_values(slopes, H) : NULL;
    double *m_after = m && after ? slope_values(after, H) : m;
    if (!m_after) return NULL;
    j.slopes = m;
    j.slopes_after = m_after;
    j.q = sl_ptr(qc);
    j.k = sl_ptr(kc);
    j.v = sl_ptr(vc);
    for (int d = 0; d < 3; d++) {
        j.qs[d] = qc->strides[d];
        j.ks[d] = kc->strides[d];
        j.vs[d] = vc->strides[d];
    }
    j.o = out->data;
    if (need_grad && !(j.lse = sl_arena_alloc(a, sl_dtype_size(q->dtype) * (size_t)(B * H * Tq), 64)))
        return NULL;
    if (!run_phase(&j, PHASE_FORWARD, q->dtype)) return NULL;

    sl_node *n;
    if (!sl_record(&n, OP, out,
                   after    ? 5
                   : slopes ? 4
                            : 3,
                   in, attention_backward, sizeof(attn_saved)))
        return NULL;
    if (!n) return out;
    ((attn_saved *)n->saved)->job = j;
    /* what backward reads: q, k, v (or the copies read in their place) and the output; the
     * slopes, lengths and segment ids were copied above */
    if (!sl_save_for_backward(n, qc) || !sl_save_for_backward(n, kc) ||
        !sl_save_for_backward(n, vc) || !sl_save_for_backward(n, out))
        return NULL;
    return out;
}
