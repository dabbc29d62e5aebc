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
 * Layouts. The kernels read q, k, v and write the output and the gradients through strides
 * per (batch, head, position), so sl_alibi_attention_packed runs on the heads as one Linear
 * packs them, (B, T, (H + 2 Hk) D), and writes its output (B, T, H Dv) and qkv's gradient
 * where the heads lie: the split and merge views, and their copies in backward, never exist.
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
    bool flush; /* f32: the tasks run with denormals flushed to zero */
    bool oom;   /* a thread could not get its tiles */
} runner;

/* Denormals. ALiBi's bias drives the probabilities of far keys down to the bottom of the float
 * range (head 0's slope of 1/2 takes exp to 2^-126 at about 175 positions), and the products
 * of such probabilities with the small gradients of training (dS = P (dP - D), dK += dS^T q)
 * fall below it: subnormal floats, on which x86 cores take a microcode assist per operation
 * (about a third of the GPT's attention backward on an Intel Xeon, BENCHMARKS.md). So the f32
 * tasks run with the thread's MXCSR set to flush subnormal results to zero and read subnormal
 * inputs as zero (FTZ and DAZ), and put it back when done: a product or sum below 2^-126
 * (1.2e-38) becomes 0, so a result differs from IEEE arithmetic's by at most the few such
 * terms it adds (about Tk x 1.2e-38), the results stay bitwise repeatable, and the calling
 * threads keep their own floating-point modes. f64 (gradient checks) runs in IEEE arithmetic. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
static unsigned flush_denormals(void)
{
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* FTZ (bit 15) and DAZ (bit 6) */
    return csr;
}
static void restore_fp_mode(unsigned csr) { _mm_setcsr(csr); }
#else
static unsigned flush_denormals(void) { return 0; }
static void restore_fp_mode(unsigned csr) { (void)csr; }
#endif

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
    const unsigned csr = rn->flush ? flush_denormals() : 0;
    for (int64_t t = t0; t < t1; t++) run_task(rn, t, scratch);
    if (rn->flush) restore_fp_mode(csr);
}

static bool run_phase(const attn_job *j, phase ph, sl_dtype dtype)
{
    runner rn = {.job = j, .ph = ph, .k = kernels(dtype), .flush = dtype == SL_F32};
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

/* ---------------------------------------------------------------- rows, head by head
 *
 * The tiles read rows of q, k, v and dO. When a tensor's rows are not contiguous (heads side by
 * side in rows of (B, T, .), as sl_alibi_attention_packed reads them or a permuted view has
 * them), consecutive positions of one head lie a whole row apart: (H + 2 Hk) D elements for a
 * packed qkv, a stride that maps a tile's rows to a few sets of the L1 cache and defeats the
 * prefetchers, so that the tiles' copies and products wait on memory (the packed layout ran
 * 1.3-1.5x slower than head-major inputs at the GPT's shape, BENCHMARKS.md). Such inputs are
 * copied head by head into the calling thread's scratch first, in one streaming pass split over
 * the pool, O(B T (H + 2 Hk) D) against the kernels' O(B H T^2 D). */

typedef struct {
    const char *src; /* element (0, 0, 0, 0) */
    int64_t s[3];    /* its element strides (batch, head, position) */
    char *dst;       /* (B, heads, T, d), contiguous */
    int64_t heads, T, d;
    size_t es;
} relayout;

static void relayout_range(void *ctx, int64_t u0, int64_t u1)
{
    const relayout *r = ctx;
    const size_t row = r->es * (size_t)r->d;
    for (int64_t u = u0; u < u1; u++) { /* u = b heads + h */
        const char *src =
            r->src + r->es * (size_t)(u / r->heads * r->s[0] + u % r->heads * r->s[1]);
        char *dst = r->dst + row * (size_t)(u * r->T);
        for (int64_t t = 0; t < r->T; t++)
            sl__copy_row(dst + row * (size_t)t, src + r->es * (size_t)(t * r->s[2]), row);
    }
}

typedef struct {
    const void **p; /* a job's pointer and strides, repointed at the copy */
    int64_t *s;
    int64_t heads, T, d;
} rows_of;

/* Copies the tensors whose rows are not contiguous into one scratch buffer, head-major, and
 * points the job at the copies. */
static bool contiguous_rows(const attn_job *j, rows_of *t, int n, size_t es)
{
    size_t need = 0;
    for (int i = 0; i < n; i++)
        if (t[i].s[2] != t[i].d && t[i].T > 1)
            need += (es * (size_t)(j->B * t[i].heads * t[i].T * t[i].d) + 63) & ~(size_t)63;
    if (!need) return true;
    char *buf = sl__scratch(SL__SCRATCH_ROWS, need);
    if (!buf)
        return sl_set_error(SL_ERR_OOM, "sl_alibi_attention: out of memory for %zu bytes of rows",
                            need);
    for (int i = 0; i < n; i++) {
        if (t[i].s[2] == t[i].d || t[i].T <= 1) continue;
        relayout r = {.src = *t[i].p, .s = {t[i].s[0], t[i].s[1], t[i].s[2]}, .dst = buf,
                      .heads = t[i].heads, .T = t[i].T, .d = t[i].d, .es = es};
        sl_parallel_for(j->B * t[i].heads, 1, relayout_range, &r);
        *t[i].p = buf;
        t[i].s[0] = t[i].heads * t[i].T * t[i].d;
        t[i].s[1] = t[i].T * t[i].d;
        t[i].s[2] = t[i].d;
        buf += (es * (size_t)(j->B * t[i].heads * t[i].T * t[i].d) + 63) & ~(size_t)63;
    }
    return true;
}

/* q, k, v with contiguous rows for the kernels (and dO too when dout is set). */
static bool inputs_for_tiles(attn_job *j, size_t es)
{
    rows_of t[4] = {{&j->q, j->qs, j->H, j->Tq, j->D},
                    {&j->k, j->ks, j->Hk, j->Tk, j->D},
                    {&j->v, j->vs, j->Hk, j->Tk, j->Dv},
                    {&j->dout, j->dos, j->H, j->Tq, j->Dv}};
    return contiguous_rows(j, t, j->dout ? 4 : 3, es);
}

/* ---------------------------------------------------------------- backward */

typedef struct {
    attn_job job; /* the forward's, lse included */
    /* sl_alibi_attention_packed: input 0 is qkv, whose gradient holds dq, dk, dv at these
     * element offsets (the job's dqs, dks, dvs are its strides), the slopes inputs 1 and 2 */
    bool packed;
    int64_t dk_at, dv_at;
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

/* A backward that fails after asking for new gradient buffers leaves them zeroed, not holding
 * garbage (sl_input_grad_overwrite); returns false. */
static bool unwritten(sl_tensor *const g[5], const bool fresh[3], sl_dtype dt)
{
    for (int i = 0; i < 3; i++)
        if (fresh[i] && g[i]) memset(sl_ptr(g[i]), 0, sl_dtype_size(dt) * (size_t)sl_numel(g[i]));
    return false;
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
    bool fresh[3] = {false, false, false}; /* dq, dk, dv (packed: qkv's) new, written whole */
    const int first_slope = s->packed ? 1 : 3;
    for (int i = 0; i < n->n_in; i++) {
        int slot = i < first_slope ? i : 3 + i - first_slope;
        if (!n->in[i] || !n->in[i]->requires_grad) continue;
        g[slot] = slot < 3 ? sl_input_grad_overwrite(n, i, &fresh[slot]) : sl_input_grad(n, i);
        if (!g[slot]) return unwritten(g, fresh, dt);
    }
    j.dout = sl_ptr(n->grad);
    if (!inputs_for_tiles(&j, sl_dtype_size(dt))) return unwritten(g, fresh, dt);
    if (s->packed && g[0]) { /* one gradient, qkv's, holds all three */
        char *base = sl_ptr(g[0]);
        size_t es = sl_dtype_size(dt);
        j.dq = base;
        j.dk = base + es * (size_t)s->dk_at;
        j.dv = base + es * (size_t)s->dv_at;
        j.set_q = j.set_k = j.set_v = fresh[0]; /* the three cover qkv's gradient */
    } else {
        j.set_q = fresh[0];
        j.set_k = fresh[1];
        j.set_v = fresh[2];
        j.dq = g[0] ? sl_ptr(g[0]) : NULL;
        j.dk = g[1] ? sl_ptr(g[1]) : NULL;
        j.dv = g[2] ? sl_ptr(g[2]) : NULL;
    }

    sl_arena *a = sl_arena_current();
    int64_t rows = j.B * j.H * j.Tq;
    j.drow = sl_arena_alloc(a, sl_dtype_size(dt) * (size_t)rows, 64);
    if (!j.drow) return unwritten(g, fresh, dt);
    rows_ctx rc = {&j, kernels(dt)};
    sl_parallel_for(rows, 1024, row_dots_range, &rc);

    bool want_slopes = g[3] || g[4];
    if (want_slopes) {
        size_t parts = (size_t)(j.H * j.B * j.nqt) * (j.asym ? 2 : 1);
        if (!(j.dslope_part = sl_arena_alloc(a, sizeof(double) * parts, 64)))
            return unwritten(g, fresh, dt);
        memset(j.dslope_part, 0, sizeof(double) * parts);
    }
    if (single_pass(&j)) {
        if (!run_phase(&j, PHASE_GROUP_GRAD, dt)) return unwritten(g, fresh, dt);
    } else {
        if ((j.dk || j.dv) && !run_phase(&j, PHASE_KV_GRAD, dt)) return unwritten(g, fresh, dt);
        if ((j.dq || want_slopes) && !run_phase(&j, PHASE_Q_GRAD, dt))
            return unwritten(g, fresh, dt);
    }
    if (g[3]) add_slope_grads(&j, 0, g[3]);
    if (g[4]) add_slope_grads(&j, 1, g[4]); /* asym: a slopes_after input is there */
    return true;
}

/* ---------------------------------------------------------------- the op */

static const char *const OP = "sl_alibi_attention", *const PACKED_OP = "sl_alibi_attention_packed";

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

/* s is [H] f32 or f64; `of` says what H was read from ("q [2,8,16,64]"). */
static bool check_slopes(const char *op, const char *name, const sl_tensor *s, int64_t H,
                         const char *of)
{
    if (s->dtype != SL_F32 && s->dtype != SL_F64)
        return sl_set_error(SL_ERR_DTYPE, "%s: %s must be f32 or f64, got %s %s", op, name,
                            sl_dtype_name(s->dtype), sl_shape_str(s));
    if (s->ndim != 1 || s->shape[0] != H)
        return sl_set_error(SL_ERR_SHAPE, "%s: %s %s for %s: need one per head, [%lld]", op, name,
                            sl_shape_str(s), of, (long long)H);
    return true;
}

/* The shape, dtype and option checks, in the order the header lists them. */
static bool check_args(const sl_tensor *q, const sl_tensor *k, const sl_tensor *v, bool causal)
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
    return true;
}

/* An option's tensor: NULL (absent) for NULL or SL_NONE; false if it is a released tensor. */
static bool opt_tensor(const char *op, sl_tensor *t, const char *name, sl_tensor **out)
{
    *out = t == SL_NONE ? NULL : t;
    return !*out || sl__check_live(op, *out, name);
}

/* An i32 option of the given shape (1-D [n0] when n1 < 0, else [n0, n1]), copied row-major into
 * the current arena, so that backward reads the values the forward used (NULL: absent). */
static bool int_option(const char *op, sl_tensor *t, const char *name, int64_t n0, int64_t n1,
                       int32_t **out)
{
    *out = NULL;
    if (!opt_tensor(op, t, name, &t)) return false;
    if (!t) return true;
    bool fits = n1 < 0 ? t->ndim == 1 && t->shape[0] == n0
                       : t->ndim == 2 && t->shape[0] == n0 && t->shape[1] == n1;
    if (t->dtype != SL_I32 || !fits) {
        char want[64];
        if (n1 < 0) snprintf(want, sizeof want, "[%lld]", (long long)n0);
        else snprintf(want, sizeof want, "[%lld,%lld]", (long long)n0, (long long)n1);
        return sl_set_error(t->dtype != SL_I32 ? SL_ERR_DTYPE : SL_ERR_SHAPE,
                            "%s: %s must be i32 %s, got %s %s", op, name, want,
                            sl_dtype_name(t->dtype), sl_shape_str(t));
    }
    *out = sl_arena_alloc(sl_arena_current(), sizeof(int32_t) * (size_t)sl_numel(t), 64);
    return *out && sl_copy_out(t, *out);
}

/* Lengths must be >= 0; one past Tk counts as Tk (every key, every query row valid). */
static bool check_lengths(const char *op, int32_t *len, const char *name, int64_t B, int64_t Tk)
{
    for (int64_t b = 0; len && b < B; b++) {
        if (len[b] < 0)
            return sl_set_error(SL_ERR_ARG, "%s: %s[%lld] is %d; it must be >= 0", op, name,
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
static bool job_masks(const char *op, attn_job *j, const sl_alibi_opts *o)
{
    int32_t *len_k, *len_q, *seg_k, *seg_q;
    if (o->window < 0)
        return sl_set_error(SL_ERR_ARG, "%s: window %lld must be >= 0 (0: no window)", op,
                            (long long)o->window);
    if (!int_option(op, o->key_lengths, "key_lengths", j->B, -1, &len_k) ||
        !int_option(op, o->query_lengths, "query_lengths", j->B, -1, &len_q) ||
        !int_option(op, o->key_segments, "key_segments", j->B, j->Tk, &seg_k) ||
        !int_option(op, o->query_segments, "query_segments", j->B, j->Tq, &seg_q))
        return false;
    if (!check_lengths(op, len_k, "key_lengths", j->B, j->Tk) ||
        !check_lengths(op, len_q, "query_lengths", j->B, j->Tk))
        return false;
    if (seg_q && !seg_k)
        return sl_set_error(SL_ERR_ARG, "%s: query_segments without key_segments", op);
    if (seg_k && !seg_q) { /* each query takes the segment of the key at its position */
        if (j->off < 0)
            return sl_set_error(SL_ERR_ARG,
                                "%s: key_segments without query_segments needs "
                                "Tq <= Tk (%lld queries, %lld keys)",
                                op, (long long)j->Tq, (long long)j->Tk);
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
static sl_tensor *rows_contiguous(const char *op, sl_tensor *t)
{
    int d = t->ndim - 1;
    return t->shape[d] == 1 || t->strides[d] == 1 ? t : sl__contig(op, t);
}

/* The slopes as doubles in the current arena: from the tensor, or the paper's when NULL. */
static double *slope_values(const sl_tensor *slopes, int64_t H)
{
    double *m = sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)H, 64);
    for (int64_t h = 0; m && h < H; h++)
        m[h] = slopes ? sl_get(slopes, h) : sl_alibi_slope((int)h, (int)H);
    return m;
}

/* Strides (b, head, position) of a contiguous (B, heads, T, d) tensor. */
static void heads_apart(int64_t heads, int64_t T, int64_t d, int64_t s[3])
{
    s[0] = heads * T * d;
    s[1] = T * d;
    s[2] = d;
}

/* Strides (b, head, position) of heads of d elements side by side in rows of `row` elements of a
 * contiguous (B, T, row) tensor. */
static void heads_packed(int64_t T, int64_t d, int64_t row, int64_t s[3])
{
    s[0] = T * row;
    s[1] = d;
    s[2] = row;
}

/* What the two entry points hand the common part: the inputs as (b, head, position, d) (q, k, v:
 * views of qkv when packed, with the strides the kernels read), what the node records, and for
 * packed calls the contiguous qkv the views are of. */
typedef struct {
    const char *op;
    sl_tensor *q, *k, *v;
    sl_tensor *packed; /* qkv as read (contiguous), or NULL */
    sl_tensor *in[5];  /* the recorded inputs */
    int n_in;
} call;

/* The options, the output, the forward and the node, for either entry point; the shapes are
 * checked. */
static sl_tensor *attend(call *c, sl_tensor *slopes, const sl_alibi_opts *opts)
{
    const char *op = c->op;
    sl_tensor *q = c->q, *k = c->k, *v = c->v;
    sl_alibi_opts o = opts ? *opts : (sl_alibi_opts){0};
    const int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3];
    const int64_t Hk = k->shape[1], Tk = k->shape[2], Dv = v->shape[3];
    char of[96];
    if (c->packed)
        snprintf(of, sizeof of, "qkv %s of %lld heads", sl_shape_str(c->packed), (long long)H);
    else
        snprintf(of, sizeof of, "q %s", sl_shape_str(q));
    if (slopes && !check_slopes(op, "slopes", slopes, H, of)) return NULL;
    sl_tensor *after;
    if (!opt_tensor(op, o.slopes_after, "slopes_after", &after)) return NULL;
    if (after && !o.bidirectional)
        return SL_FAIL(SL_ERR_ARG,
                       "%s: slopes_after needs bidirectional attention (causal "
                       "attention masks every key after its query)",
                       op);
    if (after && !check_slopes(op, "slopes_after", after, H, of)) return NULL;
    if (!isfinite(o.scale))
        return SL_FAIL(SL_ERR_ARG, "%s: scale %g is not finite", op, o.scale);
    if (slopes || after) c->in[c->n_in++] = slopes; /* NULL: the paper's, with slopes_after */
    if (after) c->in[c->n_in++] = after;
    bool need_grad = false;
    for (int i = 0; i < c->n_in; i++) need_grad |= c->in[i] && c->in[i]->requires_grad;
    need_grad &= sl_grad_enabled();

    sl_arena *a = sl_arena_current();
    attn_job j = {
        .B = B, .H = H, .Hk = Hk, .Tq = Tq, .Tk = Tk, .D = D, .Dv = Dv,
        .group = H / Hk, .off = Tk - Tq,
        .nqt = (Tq + TILE - 1) / TILE, .nkt = (Tk + TILE - 1) / TILE,
        .causal = !o.bidirectional, .asym = after != NULL,
        .scale = o.scale != 0 ? o.scale : 1 / sqrt((double)D),
    };
    if (!job_masks(op, &j, &o)) return NULL;
    sl_tensor *out = c->packed ? sl__new(op, q->dtype, 3, (int64_t[]){B, Tq, H * Dv})
                               : sl__new(op, q->dtype, 4, (int64_t[]){B, H, Tq, Dv});
    double *m = out ? slope_values(slopes, H) : NULL;
    double *m_after = m && after ? slope_values(after, H) : m;
    if (!m_after) return NULL;
    j.slopes = m;
    j.slopes_after = m_after;
    j.q = sl_ptr(q);
    j.k = sl_ptr(k);
    j.v = sl_ptr(v);
    for (int d = 0; d < 3; d++) {
        j.qs[d] = q->strides[d];
        j.ks[d] = k->strides[d];
        j.vs[d] = v->strides[d];
    }
    int64_t dk_at = 0, dv_at = 0;
    if (c->packed) {
        /* the output's heads side by side; qkv (contiguous) and its gradient share one layout,
         * so dq, dk, dv lie where the views q, k, v do */
        heads_packed(Tq, Dv, H * Dv, j.os);
        memcpy(j.dqs, j.qs, sizeof j.dqs);
        memcpy(j.dks, j.ks, sizeof j.dks);
        memcpy(j.dvs, j.vs, sizeof j.dvs);
        dk_at = k->offset - q->offset;
        dv_at = v->offset - q->offset;
    } else {
        heads_apart(H, Tq, Dv, j.os);
        heads_apart(H, Tq, D, j.dqs);
        heads_apart(Hk, Tk, D, j.dks);
        heads_apart(Hk, Tk, Dv, j.dvs);
    }
    memcpy(j.dos, j.os, sizeof j.dos); /* dL/dout: a contiguous gradient of out's shape */
    j.o = out->data;
    if (need_grad && !(j.lse = sl_arena_alloc(a, sl_dtype_size(q->dtype) * (size_t)(B * H * Tq), 64)))
        return NULL;
    attn_job run = j; /* the saved job reads the inputs where they are; this one may not */
    if (!inputs_for_tiles(&run, sl_dtype_size(q->dtype)) || !run_phase(&run, PHASE_FORWARD, q->dtype))
        return NULL;

    sl_node *n;
    if (!sl_record(&n, op, out, c->n_in, c->in, attention_backward, sizeof(attn_saved)))
        return NULL;
    if (!n) return out;
    attn_saved *sv = n->saved;
    sv->job = j;
    sv->packed = c->packed != NULL;
    sv->dk_at = dk_at;
    sv->dv_at = dv_at;
    /* what backward reads: q, k, v (or the copies read in their place) and the output; the
     * slopes, lengths and segment ids were copied above */
    bool kept = c->packed ? sl_save_for_backward(n, c->packed)
                          : sl_save_for_backward(n, q) && sl_save_for_backward(n, k) &&
                                sl_save_for_backward(n, v);
    return kept && sl_save_for_backward(n, out) ? out : NULL;
}

sl_tensor *sl_alibi_attention(sl_tensor *q, sl_tensor *k, sl_tensor *v, sl_tensor *slopes,
                              const sl_alibi_opts *opts)
{
    SL_CHECK_TENSOR(OP, q);
    SL_CHECK_TENSOR(OP, k);
    SL_CHECK_TENSOR(OP, v);
    SL_CHECK_OPTIONAL(OP, slopes);
    slopes = sl__opt(slopes); /* NULL: the paper's */
    bool causal = !(opts && opts->bidirectional);
    if (!check_args(q, k, v, causal)) return NULL;
    call c = {.op = OP, .in = {q, k, v}, .n_in = 3};
    c.q = rows_contiguous(OP, q);
    c.k = rows_contiguous(OP, k);
    c.v = rows_contiguous(OP, v);
    if (!c.q || !c.k || !c.v) return NULL;
    return attend(&c, slopes, opts);
}

/* A view (B, heads, T, d) of the heads at column `col` of qkv (B, T, row), rows contiguous. */
static sl_tensor *heads_view(const sl_tensor *qkv, int64_t heads, int64_t d, int64_t col)
{
    sl_tensor *t = sl__alias(PACKED_OP, qkv);
    if (!t) return NULL;
    t->ndim = 4;
    int64_t shape[4] = {qkv->shape[0], heads, qkv->shape[1], d};
    int64_t strides[4] = {qkv->strides[0], d, qkv->strides[1], 1};
    memcpy(t->shape, shape, sizeof shape);
    memcpy(t->strides, strides, sizeof strides);
    t->offset = qkv->offset + col;
    return t;
}

/* A view (B, heads, T, d) of heads [h0, h0 + heads) of a contiguous (B, P, T, d). */
static sl_tensor *heads_slice(const sl_tensor *qkv, int64_t heads, int64_t h0)
{
    sl_tensor *t = sl__alias(PACKED_OP, qkv);
    if (!t) return NULL;
    t->shape[1] = heads;
    t->offset = qkv->offset + h0 * qkv->strides[1];
    return t;
}

sl_tensor *sl_alibi_attention_packed(sl_tensor *qkv, int n_heads, int n_kv_heads,
                                     sl_tensor *slopes, const sl_alibi_opts *opts)
{
    const char *op = PACKED_OP;
    SL_CHECK_TENSOR(op, qkv);
    SL_CHECK_OPTIONAL(op, slopes);
    slopes = sl__opt(slopes);
    if (n_kv_heads == 0) n_kv_heads = n_heads;
    if (n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads)
        return SL_FAIL(SL_ERR_ARG,
                       "%s: n_heads %d, n_kv_heads %d: both must be >= 1 and n_heads a multiple "
                       "of n_kv_heads",
                       op, n_heads, n_kv_heads);
    if (!sl__check_float(op, qkv)) return NULL;
    const int64_t parts = (int64_t)n_heads + 2 * (int64_t)n_kv_heads;
    call c = {.op = op, .in = {qkv}, .n_in = 1};
    if (qkv->ndim == 4) { /* heads major, as sl_linear_heads makes them */
        for (int d = 0; d < 4; d++)
            if (qkv->shape[d] < 1)
                return SL_FAIL(SL_ERR_SHAPE, "%s: qkv %s is empty", op, sl_shape_str(qkv));
        if (qkv->shape[1] != parts)
            return SL_FAIL(SL_ERR_SHAPE,
                           "%s: qkv %s [B,H + 2 Hk,T,D] must have %lld heads (%d query heads "
                           "and twice %d kv heads)",
                           op, sl_shape_str(qkv), (long long)parts, n_heads, n_kv_heads);
        sl_tensor *p = sl__contig(op, qkv);
        c.packed = p;
        c.q = p ? heads_slice(p, n_heads, 0) : NULL;
        c.k = p ? heads_slice(p, n_kv_heads, n_heads) : NULL;
        c.v = p ? heads_slice(p, n_kv_heads, n_heads + n_kv_heads) : NULL;
        if (!c.q || !c.k || !c.v) return NULL;
        return attend(&c, slopes, opts);
    }
    if (qkv->ndim != 3 || qkv->shape[0] < 1 || qkv->shape[1] < 1 || qkv->shape[2] < 1 ||
        qkv->shape[2] % parts)
        return SL_FAIL(SL_ERR_SHAPE,
                       "%s: qkv %s must be 3-D [B,T,(H + 2 Hk) D], non-empty, its last dim a "
                       "multiple of %lld (%d query heads and twice %d kv heads)",
                       op, sl_shape_str(qkv), (long long)parts, n_heads, n_kv_heads);
    const int64_t D = qkv->shape[2] / parts;
    sl_tensor *p = sl__contig(op, qkv); /* rows of (H + 2 Hk) D, one after the other */
    c.packed = p;
    c.q = p ? heads_view(p, n_heads, D, 0) : NULL;
    c.k = p ? heads_view(p, n_kv_heads, D, n_heads * D) : NULL;
    c.v = p ? heads_view(p, n_kv_heads, D, (n_heads + n_kv_heads) * D) : NULL;
    if (!c.q || !c.k || !c.v) return NULL;
    return attend(&c, slopes, opts);
}
