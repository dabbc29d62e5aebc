/* bench/bench_gpt_step.c — one GPT training step: time, memory, heap allocations, and the
 * GEMM floor measured in the same run.
 *
 * The step is what examples/gpt trains with: zero the gradients, forward (sl_gpt_loss: the
 * model, then the mean cross-entropy), backward, one AdamW update, in a step arena reset after
 * every step. The model is the reference config of issue 6 unless flags say otherwise: byte
 * vocabulary 256, d_model 256, 4 layers, 8 heads, context 256, batch 8, pre-LN, GELU (tanh) with
 * a 4x MLP, tied embeddings, fused qkv, ALiBi, no dropout; AdamW (betas 0.9, 0.95, eps 1e-8,
 * weight decay 0.1 on the Linear weights), lr 1e-4. Tokens are uniform random bytes, one fixed
 * batch. bench/torch_gpt.py is the same model and step in PyTorch.
 *
 * Reported: the median step time over --steps steps after --warmup, tokens/s, peak RSS
 * (getrusage ru_maxrss), the heap allocations made during the timed steps (sl_heap_allocs;
 * 0 means a warm step never touches the heap), and the GEMM floor:
 *
 *   floor  Every matrix product one step would need, run as cblas_sgemm on the same threads
 *          (OpenBLAS on one thread, the products split in row blocks over shortlong's pool), in
 *          the same run, one floor measurement after each timed step:
 *          - per Linear (x (N, in), W (out, in), N = B T): y = x W^T, dx = dy W, dW = dy^T x;
 *          - attention, per (batch, head): S = Q K^T, O = P V; dV = P^T dO, dP = dO V^T,
 *            dQ = dS K, dK = dS^T Q, each (T, T, D), D = d_model / heads.
 *          Each Linear product runs the faster of two ways, chosen once by timing both: the
 *          output's rows cut in one block per thread, or the inner dim cut in one slab per
 *          thread, the partial products then added (that addition counted in the floor).
 *          floor_full_ms times all of it; floor_ms counts the attention products at half
 *          (causal attention needs only the lower triangle of each T x T product, and the fused
 *          kernel computes no more than that), which is the stricter floor. Both are medians.
 *          Where the CPU has a kernel of the library's own (AVX2, AVX-512), the same floor is
 *          measured through it too (kernel_floor_ms), and best_floor_ms takes each part of each
 *          measurement (the Linear products, the attention products) from the faster engine:
 *          the best floor, which neither engine alone reaches when each wins one part.
 *
 * --profile adds a per-op breakdown of extra steps run after the timed ones: the real step,
 * watched by an autograd observer (forward: the time up to each node's record; backward: each
 * node's backward function; see "profile" below). Op names map to families: matmul,
 * attention, elementwise, layernorm, softmax/cross-entropy, embedding, optimizer (AdamW and
 * zeroing the gradients, timed around their calls), other (views and the copies they make, the
 * autograd engine's own time). Figures are means per step over the profiled steps.
 *
 * --eval-T N: one no-grad forward at B = 1, T = N (ALiBi extrapolates past the context) in a
 * fresh arena: that arena's peak (without grad, sl_gpt_forward runs the blocks in scratch
 * arenas of its own, which peak RSS covers), the parameters' arena, peak RSS and the time.
 *
 *     ./build/bin/bench_gpt_step [--steps 10] [--warmup 2] [--threads N] [--json] [--profile]
 *         [--eval-T N] [--vocab 256] [--dim 256] [--layers 4] [--heads 8] [--context 256]
 *         [--batch 8] [--pos alibi|none] [--no-floor]
 *
 * Threads: --threads, else SL_NUM_THREADS, else the CPUs it may run on. --no-floor skips the
 * floor (to profile the steps alone with perf).
 */
#include <shortlong/shortlong.h>

#include "../ops/blas.h" /* which engine the library uses for f32 products */
#include "../ops/gemm.h" /* the library's own f32 kernel, for the second floor */
#include "bench_util.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_STEPS = 201 };
static const double LR = 1e-4, WEIGHT_DECAY = 0.1;

_Static_assert(MAX_STEPS <= BENCH_MAX_SAMPLES, "median() takes every step");

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_gpt_step: %s: %s\n", what, sl_error_message());
    return 1;
}

/* ================================================================ profile */

/* --profile times the real step (sl_gpt_loss, sl_backward, sl_optim_step as they are) through
 * an autograd observer (include/shortlong/autograd.h) that lives only for the profiled steps:
 *   forward   the time from the previous event (the previous node's record, or the start of the
 *             forward) to a node's record is booked as that op's forward, under node->op. Every
 *             op this step runs records its node as its last act, after its kernel (the
 *             reductions of ops/reduce.c record first: their kernel would go to the next op),
 *             and with grad on every op records, views included, as all inputs derive from
 *             parameters. What runs between two ops (the modules' own code) lands in the next
 *             op's figure; from the last record to sl_gpt_loss's return is "untaped forward".
 *   backward  node_begin / node_end bracket each node's backward function, booked under its op;
 *             the autograd engine's own time (the topological sort, the bookkeeping between
 *             nodes) is sl_backward's total, timed around the call, minus the nodes'.
 *   Work outside the tape is timed directly around its call: zeroing the gradients
 *   ("zero_grad") and the AdamW update ("adamw"), both optimizer, listed under bwd.
 * So the profile's sum is the profiled step's wall time, less only the clock reads at its
 * edges. */

typedef enum {
    FAM_MATMUL, FAM_ATTENTION, FAM_ELEMENTWISE, FAM_LAYERNORM, FAM_SOFTMAX_CE, FAM_EMBEDDING,
    FAM_OPTIMIZER, FAM_OTHER, FAM_COUNT
} family;
static const char *const family_name[FAM_COUNT] = {
    "matmul", "attention", "elementwise", "layernorm", "softmax/cross-entropy", "embedding",
    "optimizer", "other"};

/* Each family's ops by the names the library records (the sl_record calls in ops/); an op not
 * listed (views, copies, reductions, position encodings) is "other". */
static const char *const family_ops[FAM_OTHER][20] = {
    [FAM_MATMUL] = {"sl_matmul", "sl_linear", "sl_linear_heads", "sl_linear_residual"},
    [FAM_ATTENTION] = {"sl_alibi_attention", "sl_alibi_attention_packed"},
    [FAM_ELEMENTWISE] = {"sl_add", "sl_sub", "sl_mul", "sl_div", "sl_neg", "sl_add_scalar",
                         "sl_mul_scalar", "sl_pow_scalar", "sl_exp", "sl_log", "sl_sqrt",
                         "sl_tanh", "sl_sigmoid", "sl_relu", "sl_gelu", "sl_dropout", "sl_where",
                         "sl_masked_fill"},
    [FAM_LAYERNORM] = {"sl_layer_norm"},
    [FAM_SOFTMAX_CE] = {"sl_softmax", "sl_log_softmax", "sl_cross_entropy"},
    [FAM_EMBEDDING] = {"sl_embedding"},
    [FAM_OPTIMIZER] = {"adamw", "zero_grad"}, /* the bench's own names, timed around the calls */
};

static family family_of(const char *op)
{
    for (int f = 0; f < FAM_OTHER; f++)
        for (const char *const *n = family_ops[f]; *n; n++)
            if (!strcmp(op, *n)) return (family)f;
    return FAM_OTHER;
}

enum { MAX_OPS = 48, FWD = 0, BWD = 1 };

typedef struct {
    const char *op[MAX_OPS];
    double sec[MAX_OPS][2]; /* forward, backward: summed over the profiled steps */
    long calls[MAX_OPS][2];
    int n;
    /* the observer's state */
    bool forward;           /* between the start of the forward and sl_gpt_loss's return */
    double last;            /* forward: when the previous event was */
    double node_start;      /* backward: when the running node's backward started */
    double in_nodes;        /* backward: seconds inside the nodes' backward functions */
} profile;

static void prof_add(profile *p, const char *op, int dir, double sec)
{
    int i = 0;
    while (i < p->n && p->op[i] != op && strcmp(p->op[i], op)) i++;
    if (i == p->n) {
        if (p->n == MAX_OPS) return;
        p->op[p->n++] = op;
    }
    p->sec[i][dir] += sec;
    p->calls[i][dir]++;
}

static void on_recorded(void *user, const sl_node *node)
{
    profile *p = user;
    if (!p->forward) return;
    double t = now();
    prof_add(p, node->op, FWD, t - p->last);
    p->last = t;
}

static void on_node_begin(void *user, const sl_node *node)
{
    ((profile *)user)->node_start = now();
}

static void on_node_end(void *user, const sl_node *node)
{
    profile *p = user;
    double sec = now() - p->node_start;
    prof_add(p, node->op, BWD, sec);
    p->in_nodes += sec;
}

/* ================================================================ the step */

typedef struct {
    sl_gpt *m;
    sl_optim *opt;
    sl_tensor *idx, *tgt; /* (B, T) i32 */
    sl_arena *step;
} trainer;

static bool train_step(trainer *t, double *loss)
{
    sl_params_zero_grad(t->m->params);
    sl_arena *prev = sl_arena_set(t->step);
    sl_tensor *l = sl_gpt_loss(t->m, t->idx, t->tgt);
    bool ok = l && sl_backward(l) && sl_optim_step(t->opt, LR);
    if (ok) *loss = sl_item(l);
    sl_arena_set(prev);
    sl_arena_reset(t->step);
    return ok;
}

/* The same step with the profile's observer on; adds to P and *engine_sec and returns the
 * step's total seconds (< 0 on error). */
static double profiled_step(trainer *t, profile *P, double *engine_sec)
{
    const sl_autograd_observer obs = {.user = P, .recorded = on_recorded,
                                      .node_begin = on_node_begin, .node_end = on_node_end};
    if (!sl_autograd_add_observer(&obs)) return -1;
    double t0 = now();
    sl_params_zero_grad(t->m->params);
    double t1 = now();
    prof_add(P, "zero_grad", BWD, t1 - t0);
    sl_arena *prev = sl_arena_set(t->step);
    P->forward = true;
    P->last = t1;
    sl_tensor *loss = sl_gpt_loss(t->m, t->idx, t->tgt);
    double t2 = now();
    P->forward = false;
    prof_add(P, "untaped forward", FWD, t2 - P->last);
    P->in_nodes = 0;
    bool ok = loss && sl_backward(loss);
    double t3 = now();
    *engine_sec += (t3 - t2) - P->in_nodes;
    ok = ok && sl_optim_step(t->opt, LR);
    double t4 = now();
    prof_add(P, "adamw", BWD, t4 - t3);
    sl_arena_set(prev);
    sl_arena_reset(t->step);
    sl_autograd_remove_observer(&obs);
    return ok ? t4 - t0 : -1;
}

/* ================================================================ the GEMM floor */

typedef struct {
    int m, n, k;
    bool ta, tb;
    int count;           /* how many times a step runs it */
    bool ksplit[2];      /* per floor_impl: split along k (chosen in the first measurement) */
} gemm_shape;

enum { MAX_SHAPES = 32 };

typedef struct {
    gemm_shape s[MAX_SHAPES];
    int n;
    double linear_flops, attn_flops; /* per step; attention at full T x T */
    int64_t B, H, T, D;
    int threads;
} floor_plan;

static void add_linear(floor_plan *f, int64_t N, int64_t in, int64_t out, int count)
{
    int n = (int)N, i = (int)in, o = (int)out;
    f->s[f->n++] = (gemm_shape){n, o, i, false, true, count, {false, false}};  /* x W^T */
    f->s[f->n++] = (gemm_shape){n, i, o, false, false, count, {false, false}}; /* dy W */
    f->s[f->n++] = (gemm_shape){o, i, n, true, false, count, {false, false}};  /* dy^T x */
    f->linear_flops += 3 * 2.0 * (double)N * (double)in * (double)out * count;
}

static floor_plan plan_floor(const sl_gpt_config *c, int64_t B, int64_t T, int threads)
{
    floor_plan f = {.B = B, .H = c->n_heads, .T = T, .D = c->dim / c->n_heads,
                    .threads = threads};
    int64_t N = B * T, C = c->dim, kv = (c->n_kv_heads ? c->n_kv_heads : c->n_heads) * f.D;
    int64_t hidden = (c->mlp_ratio ? c->mlp_ratio : 4) * C;
    add_linear(&f, N, C, C + 2 * kv, c->n_layers); /* qkv */
    add_linear(&f, N, C, C, c->n_layers);          /* attention output */
    add_linear(&f, N, C, hidden, c->n_layers);     /* mlp fc */
    add_linear(&f, N, hidden, C, c->n_layers);     /* mlp proj */
    add_linear(&f, N, C, c->vocab_size, 1);        /* LM head */
    f.attn_flops = 6 * 2.0 * (double)(B * f.H) * (double)T * (double)T * (double)f.D *
                   c->n_layers;
    return f;
}

/* Which sgemm a floor runs: OpenBLAS's cblas_sgemm, or the kernel the library itself uses
 * for f32 products on CPUs with AVX2 or AVX-512 (ops/gemm_isa.c: b packed per call into `pack`,
 * which holds sl__sgemm_packed_floats(k, n) floats, as cblas_sgemm packs its own). */
typedef enum { FLOOR_CBLAS, FLOOR_KERNEL, N_FLOORS } floor_impl;

static void sgemm(floor_impl impl, bool ta, bool tb, int m, int n, int k, const float *a,
                  int lda, const float *b, int ldb, float *c, int ldc, float *pack)
{
    if (impl == FLOOR_CBLAS) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
        return;
    }
    sl__sgemm_pack(pack, b, tb, ldb, k, n, 0, sl__sgemm_panels(n));
    sl__sgemm_rows(a, ta, lda, pack, k, n, c, ldc, 0, m, false);
}

typedef struct {
    const gemm_shape *s;
    const float *a, *b;
    float *c;
    int64_t rows;    /* per block */
    float *partials; /* k split: (threads - 1) more outputs */
    int threads;
    floor_impl impl;
    float *pack;     /* per block: pack_floats each */
    size_t pack_floats;
} gemm_job;

/* Row blocks [b0, b1) of c = op(a) op(b). */
static void gemm_blocks(void *ctx, int64_t b0, int64_t b1)
{
    const gemm_job *j = ctx;
    const gemm_shape *s = j->s;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t r0 = blk * j->rows, r1 = r0 + j->rows < s->m ? r0 + j->rows : s->m;
        if (r0 >= r1) continue;
        int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
        const float *a = s->ta ? j->a + r0 : j->a + r0 * lda;
        sgemm(j->impl, s->ta, s->tb, (int)(r1 - r0), s->n, s->k, a, lda, j->b, ldb,
              j->c + r0 * s->n, s->n, j->pack + (size_t)blk * j->pack_floats);
    }
}

/* Slabs [t0, t1) of the inner dim, one per thread: slab 0 into c, slab t into partials[t - 1]. */
static void gemm_slabs(void *ctx, int64_t t0, int64_t t1)
{
    const gemm_job *j = ctx;
    const gemm_shape *s = j->s;
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    for (int64_t t = t0; t < t1; t++) {
        int64_t k0 = s->k * t / j->threads, k1 = s->k * (t + 1) / j->threads;
        const float *a = s->ta ? j->a + k0 * lda : j->a + k0;
        const float *b = s->tb ? j->b + k0 : j->b + k0 * ldb;
        float *c = t ? j->partials + (size_t)(t - 1) * (size_t)s->m * (size_t)s->n : j->c;
        sgemm(j->impl, s->ta, s->tb, s->m, s->n, (int)(k1 - k0), a, lda, b, ldb, c, s->n,
              j->pack + (size_t)t * j->pack_floats);
    }
}

/* Elements [e0, e1) of c += the partial products. */
static void add_partials(void *ctx, int64_t e0, int64_t e1)
{
    const gemm_job *j = ctx;
    size_t mn = (size_t)j->s->m * (size_t)j->s->n;
    for (int t = 1; t < j->threads; t++) {
        const float *p = j->partials + (size_t)(t - 1) * mn;
        for (int64_t e = e0; e < e1; e++) j->c[e] += p[e];
    }
}

/* One run of a Linear product, `count` times, the way ksplit says; returns the seconds. */
static double run_gemm(const gemm_shape *s, gemm_job *j, bool ksplit)
{
    double t0 = now();
    for (int r = 0; r < s->count; r++) {
        if (ksplit) {
            sl_parallel_for(j->threads, 1, gemm_slabs, j);
            sl_parallel_for((int64_t)s->m * s->n, 1 << 14, add_partials, j);
        } else {
            sl_parallel_for((s->m + j->rows - 1) / j->rows, 1, gemm_blocks, j);
        }
    }
    return now() - t0;
}

typedef struct {
    const floor_plan *f;
    const float *q, *k, *v, *dout; /* (B H, T, D) */
    float *scratch;                /* per worker: two (T, T), four (T, D) and a packing */
    floor_impl impl;
    atomic_int_fast64_t next;
} attn_gemm_job;

/* Floats of the library kernel's packing of a (k x n) operand; 0 where the CPU has no kernel of
 * its own (the generic level, where its panel width is 0). */
static size_t kernel_packed_floats(int64_t k, int64_t n)
{
    return sl__sgemm_level() != SL__ISA_GENERIC ? sl__sgemm_packed_floats(k, n) : 0;
}

/* Floats of one attention worker's scratch. */
static size_t attn_scratch_floats(const floor_plan *f)
{
    size_t pack = kernel_packed_floats(f->T, f->T > f->D ? f->T : f->D);
    return (size_t)(2 * f->T * f->T + 4 * f->T * f->D) + pack;
}

static void attn_workers(void *ctx, int64_t w0, int64_t w1)
{
    attn_gemm_job *j = ctx;
    const floor_plan *f = j->f;
    int T = (int)f->T, D = (int)f->D;
    size_t per = attn_scratch_floats(f);
    for (int64_t w = w0; w < w1; w++) {
        float *p = j->scratch + (size_t)w * per, *dp = p + T * T, *o = dp + T * T;
        float *dv = o + T * D, *dq = dv + T * D, *dk = dq + T * D, *pk = dk + T * D;
        floor_impl im = j->impl;
        for (int64_t bh; (bh = atomic_fetch_add(&j->next, 1)) < f->B * f->H;) {
            const float *q = j->q + bh * T * D, *k = j->k + bh * T * D;
            const float *v = j->v + bh * T * D, *g = j->dout + bh * T * D;
            sgemm(im, false, true, T, T, D, q, D, k, D, p, T, pk);   /* S = Q K^T */
            sgemm(im, false, false, T, D, T, p, T, v, D, o, D, pk);  /* O = P V */
            sgemm(im, true, false, T, D, T, p, T, g, D, dv, D, pk);  /* dV = P^T dO */
            sgemm(im, false, true, T, T, D, g, D, v, D, dp, T, pk);  /* dP = dO V^T */
            sgemm(im, false, false, T, D, T, dp, T, k, D, dq, D, pk); /* dQ = dS K */
            sgemm(im, true, false, T, D, T, dp, T, q, D, dk, D, pk);  /* dK = dS^T Q */
        }
    }
}

/* Fills n floats with small values that keep every product normal. */
static void fill_small(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / (double)(1ull << 24) - 0.5) * 0.1f;
    }
}

/* One floor measurement through impl, buffers taken from `arena` and released after. choose:
 * pick each Linear product's faster way first (the first measurement). Sets the linear and
 * attention seconds; false on OOM. */
static bool run_floor(floor_plan *f, floor_impl impl, sl_arena *arena, bool choose,
                      double *lin_sec, double *attn_sec)
{
    size_t amax = 0, bmax = 0, cmax = 0, packmax = 0;
    for (int i = 0; i < f->n; i++) {
        const gemm_shape *s = &f->s[i];
        size_t a = (size_t)s->m * s->k, b = (size_t)s->k * s->n, c = (size_t)s->m * s->n;
        size_t pk = kernel_packed_floats(s->k, s->n);
        amax = a > amax ? a : amax;
        bmax = b > bmax ? b : bmax;
        cmax = c > cmax ? c : cmax;
        packmax = pk > packmax ? pk : packmax;
    }
    size_t qkv = (size_t)(f->B * f->H * f->T * f->D);
    size_t per = attn_scratch_floats(f), nt = (size_t)f->threads;
    float *a = sl_arena_alloc(arena, 4 * amax, 64), *b = sl_arena_alloc(arena, 4 * bmax, 64);
    float *c = sl_arena_alloc(arena, 4 * cmax, 64), *q = sl_arena_alloc(arena, 4 * 4 * qkv, 64);
    float *scratch = sl_arena_alloc(arena, 4 * per * nt, 64);
    float *partials = sl_arena_alloc(arena, 4 * cmax * nt, 64);
    float *pack = impl == FLOOR_KERNEL ? sl_arena_alloc(arena, 4 * packmax * nt, 64) : NULL;
    if (!a || !b || !c || !q || !scratch || !partials || (impl == FLOOR_KERNEL && !pack))
        return false;
    fill_small(a, amax, 1);
    fill_small(b, bmax, 2);
    fill_small(q, 4 * qkv, 3);

    double lin = 0;
    for (int i = 0; i < f->n; i++) {
        gemm_shape *s = &f->s[i];
        /* row blocks, one per thread, in multiples of 16 rows */
        int64_t rows = ((s->m + f->threads - 1) / f->threads + 15) / 16 * 16;
        gemm_job j = {s, a, b, c, rows, partials, f->threads, impl, pack, packmax};
        bool *ksplit = &s->ksplit[impl];
        if (choose && f->threads > 1) { /* the better of the two ways, best of 3 runs each */
            double best[2] = {INFINITY, INFINITY};
            for (int rep = 0; rep < 3; rep++)
                for (int way = 0; way < 2; way++) {
                    double t = run_gemm(s, &j, way);
                    best[way] = t < best[way] ? t : best[way];
                }
            *ksplit = best[1] < best[0];
        }
        lin += run_gemm(s, &j, *ksplit);
    }
    double t1 = now();
    attn_gemm_job aj = {.f = f, .q = q, .k = q + qkv, .v = q + 2 * qkv, .dout = q + 3 * qkv,
                        .scratch = scratch, .impl = impl};
    int layers = (int)llround(f->attn_flops / (12.0 * (double)(f->B * f->H) * (double)f->T *
                                               (double)f->T * (double)f->D));
    for (int l = 0; l < layers; l++) {
        atomic_init(&aj.next, 0);
        sl_parallel_for(f->threads, 1, attn_workers, &aj);
    }
    double t2 = now();
    sl_arena_reset(arena);
    *lin_sec = lin;
    *attn_sec = t2 - t1;
    return true;
}

/* ---------------------------------------------------------------- the floor's own process */
/* The floors run in a child process forked before anything else starts, one measurement on
 * each command the parent sends after a step: the same run and moment, a pool of the same
 * size, and buffers (tens of MB) that stay out of the parent's peak RSS and arenas. */
typedef struct {
    int cmd, res; /* pipe ends: commands to the child, results from it */
    pid_t pid;
} floor_server;

static void floor_child(int cmd, int res, const sl_gpt_config *cfg, int64_t B, int threads)
{
    if (threads) sl_set_num_threads(threads);
    floor_plan fp = plan_floor(cfg, B, cfg->context, sl_get_num_threads());
    sl_arena *arena = sl_arena_new(0);
    unsigned char c;
    while (arena && read(cmd, &c, 1) == 1) { /* bit 0: kernel, bit 1: choose the ways */
        double r[2] = {NAN, NAN};
        if (!run_floor(&fp, (floor_impl)(c & 1), arena, c & 2, &r[0], &r[1])) r[0] = r[1] = NAN;
        if (write(res, r, sizeof r) != (ssize_t)sizeof r) break;
    }
}

static bool floor_start(floor_server *fs, const sl_gpt_config *cfg, int64_t B, int threads)
{
    int to[2], from[2];
    if (pipe(to) || pipe(from)) return false;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        close(to[1]);
        close(from[0]);
        floor_child(to[0], from[1], cfg, B, threads);
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    *fs = (floor_server){to[1], from[0], pid};
    return true;
}

/* One floor measurement in the child; false if it failed. */
static bool floor_measure(floor_server *fs, floor_impl impl, bool choose, double *lin,
                          double *att)
{
    unsigned char c = (unsigned char)(impl | (choose ? 2 : 0));
    double r[2];
    if (write(fs->cmd, &c, 1) != 1 || read(fs->res, r, sizeof r) != (ssize_t)sizeof r ||
        isnan(r[0]))
        return false;
    *lin = r[0];
    *att = r[1];
    return true;
}

static void floor_stop(floor_server *fs)
{
    close(fs->cmd);
    close(fs->res);
    waitpid(fs->pid, NULL, 0);
}

/* ================================================================ eval mode */

static int eval_forward(const sl_gpt_config *cfg, int64_t T, bool json)
{
    sl_gpt *m = sl_gpt_new(cfg, SL_F32);
    if (!m) return fail("sl_gpt_new");
    sl_arena *data = sl_arena_new(0), *step = sl_arena_new(0);
    if (!data || !step) return fail("sl_arena_new");
    sl_arena_set(data);
    sl_tensor *idx = sl_empty(SL_I32, sl_shape(1, T));
    if (!idx) return fail("tokens");
    sl_rng rng = sl_rng_seed(7);
    int32_t *p = idx->data;
    for (int64_t i = 0; i < T; i++) p[i] = (int32_t)sl_rng_below(&rng, (uint64_t)cfg->vocab_size);
    sl_set_grad_enabled(false);
    double rss0 = peak_rss_mib();
    sl_arena_set(step);
    double t0 = now();
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL);
    double sec = now() - t0;
    if (!logits) return fail("forward");
    double rss = peak_rss_mib(), arena_mib = (double)sl_arena_peak(step) / (1 << 20);
    double params_mib = (double)sl_arena_reserved(sl_params_arena(m->params)) / (1 << 20);
    if (json)
        printf("{\"bench\": \"gpt_eval\", \"impl\": \"shortlong\", \"B\": 1, \"T\": %lld, "
               "\"threads\": %d, \"forward_ms\": %.2f, \"caller_arena_peak_mib\": %.2f, "
               "\"params_arena_mib\": %.2f, \"rss_before_mib\": %.1f, \"peak_rss_mib\": %.1f}\n",
               (long long)T, sl_get_num_threads(), 1e3 * sec, arena_mib, params_mib, rss0, rss);
    else
        printf("shortlong eval forward, B = 1, T = %lld, no grad, %d threads: %.1f ms\n"
               "  the caller's arena at its peak %.1f MiB (embeddings, the last activations, the "
               "logits; without grad the\n  blocks run in scratch arenas of sl_gpt_forward's "
               "own), parameters' arena %.1f MiB\n"
               "  peak RSS %.1f MiB (%.1f MiB before the forward)\n",
               (long long)T, sl_get_num_threads(), 1e3 * sec, arena_mib, params_mib, rss, rss0);
    sl_arena_set(NULL);
    sl_arena_free(step);
    sl_arena_free(data);
    sl_gpt_free(m);
    return 0;
}

/* ================================================================ main */

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--steps 10] [--warmup 2] [--threads N] [--json] [--profile] "
            "[--eval-T N]\n"
            "       [--vocab 256] [--dim 256] [--layers 4] [--heads 8] [--context 256] "
            "[--batch 8] [--pos alibi|none]\n",
            prog);
    return 2;
}

/* step_ms: the profiled steps' median; prof_mean_ms their mean, timed_ms the timed (unprofiled)
 * steps' median, both for the text's check of the sum. */
static void print_profile(const profile *P, int steps, double engine, double step_ms,
                          double prof_mean_ms, double timed_ms, bool json)
{
    double fam[FAM_COUNT][2] = {{0}};
    for (int i = 0; i < P->n; i++)
        for (int d = 0; d < 2; d++) fam[family_of(P->op[i])][d] += 1e3 * P->sec[i][d] / steps;
    fam[FAM_OTHER][BWD] += 1e3 * engine / steps;
    if (json) {
        printf(", \"profile\": {\"step_ms\": %.2f, \"families\": {", step_ms);
        for (int f = 0; f < FAM_COUNT; f++)
            printf("%s\"%s\": {\"fwd_ms\": %.2f, \"bwd_ms\": %.2f}", f ? ", " : "",
                   family_name[f], fam[f][FWD], fam[f][BWD]);
        printf("}, \"ops\": {");
        for (int i = 0; i < P->n; i++)
            printf("%s\"%s\": {\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"calls\": %ld}", i ? ", " : "",
                   P->op[i], 1e3 * P->sec[i][FWD] / steps, 1e3 * P->sec[i][BWD] / steps,
                   (P->calls[i][FWD] + P->calls[i][BWD]) / steps);
        printf("}, \"autograd_engine_ms\": %.3f}", 1e3 * engine / steps);
        return;
    }
    printf("\nprofile: mean per step over %d profiled steps (profiled step median %.1f ms)\n",
           steps, step_ms);
    printf("  %-24s %10s %10s %10s %7s\n", "family", "fwd ms", "bwd ms", "total ms", "share");
    double total = 0;
    for (int f = 0; f < FAM_COUNT; f++) total += fam[f][FWD] + fam[f][BWD];
    for (int f = 0; f < FAM_COUNT; f++)
        printf("  %-24s %10.2f %10.2f %10.2f %6.1f%%\n", family_name[f], fam[f][FWD], fam[f][BWD],
               fam[f][FWD] + fam[f][BWD], 100 * (fam[f][FWD] + fam[f][BWD]) / total);
    printf("  %-24s %10s %10s %10.2f\n", "sum", "", "", total);
    printf("  sum / the profiled steps' mean (%.2f ms) = %.1f%%; / the timed steps' median "
           "(%.1f ms) = %.1f%%\n", prof_mean_ms, 100 * total / prof_mean_ms, timed_ms,
           100 * total / timed_ms);
    printf("  by op (calls per step; zero_grad and adamw are listed under bwd):\n");
    for (int i = 0; i < P->n; i++)
        printf("    %-22s %10.2f %10.2f %10.2f %5ld calls  [%s]\n", P->op[i],
               1e3 * P->sec[i][FWD] / steps, 1e3 * P->sec[i][BWD] / steps,
               1e3 * (P->sec[i][FWD] + P->sec[i][BWD]) / steps,
               (P->calls[i][FWD] + P->calls[i][BWD]) / steps, family_name[family_of(P->op[i])]);
    printf("    %-22s %10s %10.2f %10.2f  (backward time outside the ops' backward functions)\n",
           "autograd engine", "", 1e3 * engine / steps, 1e3 * engine / steps);
}

int main(int argc, char **argv)
{
    sl_gpt_config cfg = {.vocab_size = 256, .context = 256, .dim = 256, .n_layers = 4,
                         .n_heads = 8, .mlp_ratio = 4, .pos = SL_POS_ALIBI,
                         .tie_embeddings = true, .fused_qkv = true, .seed = 1};
    int64_t B = 8, eval_T = 0;
    int steps = 10, warmup = 2, threads = 0;
    bool json = false, profiling = false, floor = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--profile")) profiling = true;
        else if (!strcmp(a, "--no-floor")) floor = false; /* for perf: the steps alone */
        else if (!v) return usage(argv[0]);
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) warmup = atoi(v), i++;
        else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(a, "--eval-T")) eval_T = atoll(v), i++;
        else if (!strcmp(a, "--vocab")) cfg.vocab_size = atoll(v), i++;
        else if (!strcmp(a, "--dim")) cfg.dim = atoll(v), i++;
        else if (!strcmp(a, "--layers")) cfg.n_layers = atoi(v), i++;
        else if (!strcmp(a, "--heads")) cfg.n_heads = atoi(v), i++;
        else if (!strcmp(a, "--context")) cfg.context = atoll(v), i++;
        else if (!strcmp(a, "--batch")) B = atoll(v), i++;
        else if (!strcmp(a, "--pos")) {
            if (!sl_pos_parse(v, &cfg.pos) || (cfg.pos != SL_POS_ALIBI && cfg.pos != SL_POS_NONE))
                return usage(argv[0]);
            i++;
        } else return usage(argv[0]);
    }
    if (steps < 1 || steps > MAX_STEPS || warmup < 0 || threads < 0 || B < 1 || eval_T < 0)
        return usage(argv[0]);
    /* before anything starts threads: the floor's process, which starts its own */
    floor_server fs;
    if (!eval_T && floor && !floor_start(&fs, &cfg, B, threads)) {
        fprintf(stderr, "bench_gpt_step: cannot start the floor's process\n");
        return 1;
    }
    if (threads) sl_set_num_threads(threads);
    threads = sl_get_num_threads();
    if (eval_T) return eval_forward(&cfg, eval_T, json);

    const int64_t T = cfg.context;
    trainer t = {0};
    t.m = sl_gpt_new(&cfg, SL_F32);
    if (!t.m) return fail("sl_gpt_new");
    t.m->train = true;
    t.opt = sl_adamw_new(t.m->params, &(sl_adamw_config){0.9, 0.95, 1e-8, WEIGHT_DECAY});
    sl_arena *data = sl_arena_new(0);
    t.step = sl_arena_new(0);
    if (!t.opt || !data || !t.step) return fail("setup");
    sl_arena_set(data);
    t.idx = sl_empty(SL_I32, sl_shape(B, T));
    t.tgt = sl_empty(SL_I32, sl_shape(B, T));
    if (!t.idx || !t.tgt) return fail("tokens");
    sl_rng rng = sl_rng_seed(7);
    int32_t *ip = t.idx->data, *tp = t.tgt->data;
    for (int64_t i = 0; i < B * T; i++) {
        ip[i] = (int32_t)sl_rng_below(&rng, (uint64_t)cfg.vocab_size);
        tp[i] = (int32_t)sl_rng_below(&rng, (uint64_t)cfg.vocab_size);
    }
    sl_arena_set(NULL);

    floor_plan fp = plan_floor(&t.m->cfg, B, T, threads);
    /* the library's own kernel's floor wherever the CPU has one (AVX2 or AVX-512), to compare
     * the two engines in the same run; the step uses the one sl_matmul_engine names */
    int n_floors = floor ? (sl__sgemm_level() != SL__ISA_GENERIC ? 2 : 1) : 0;
    double loss0 = NAN, loss = NAN, lin, att;
    for (int w = 0; w < warmup || w < 1; w++) {
        if (!train_step(&t, w ? &loss : &loss0)) return fail("warm-up step");
        for (int f = 0; f < n_floors; f++)
            if (!floor_measure(&fs, (floor_impl)f, w == 0, &lin, &att))
                return fail("warm-up floor");
    }

    double step_s[MAX_STEPS], lin_s[N_FLOORS][MAX_STEPS], att_s[N_FLOORS][MAX_STEPS];
    double floor_s[N_FLOORS][MAX_STEPS], floor_full_s[N_FLOORS][MAX_STEPS], best_s[MAX_STEPS];
    uint64_t heap = 0;
    long faults = 0;
    profile P = {0};
    double engine = 0;
    for (int s = 0; s < steps; s++) {
        uint64_t h0 = sl_heap_allocs();
        long f0 = minor_faults();
        double t0 = now();
        bool ok = train_step(&t, &loss);
        step_s[s] = now() - t0;
        heap += sl_heap_allocs() - h0;
        faults += minor_faults() - f0;
        if (!ok) return fail("step");
        for (int f = 0; f < N_FLOORS; f++) {
            lin_s[f][s] = att_s[f][s] = NAN;
            if (f < n_floors && !floor_measure(&fs, (floor_impl)f, false, &lin_s[f][s],
                                               &att_s[f][s]))
                return fail("floor");
            floor_full_s[f][s] = lin_s[f][s] + att_s[f][s];
            floor_s[f][s] = lin_s[f][s] + 0.5 * att_s[f][s];
        }
        /* each part on its faster engine in this measurement */
        best_s[s] = fmin(lin_s[0][s], lin_s[1][s]) + 0.5 * fmin(att_s[0][s], att_s[1][s]);
    }
    double prof_step[MAX_STEPS];
    if (profiling)
        for (int s = 0; s < steps; s++)
            if ((prof_step[s] = profiled_step(&t, &P, &engine)) < 0) return fail("profiled step");

    double step_ms = 1e3 * median(step_s, steps);
    double floor_ms[N_FLOORS], floor_full_ms[N_FLOORS], lin_ms[N_FLOORS], att_ms[N_FLOORS];
    for (int f = 0; f < N_FLOORS; f++) {
        floor_ms[f] = 1e3 * median(floor_s[f], steps);
        floor_full_ms[f] = 1e3 * median(floor_full_s[f], steps);
        lin_ms[f] = 1e3 * median(lin_s[f], steps);
        att_ms[f] = 1e3 * median(att_s[f], steps);
    }
    const double best_ms = n_floors == 2 ? 1e3 * median(best_s, steps) : floor_ms[0];
    double tok_s = (double)(B * T) / (step_ms * 1e-3);
    double gflop = (fp.linear_flops + 0.5 * fp.attn_flops) * 1e-9;
    double gflop_full = (fp.linear_flops + fp.attn_flops) * 1e-9;
    double rss = peak_rss_mib();
    double arena_mib = (double)sl_arena_peak(t.step) / (1 << 20);
    double params_mib = (double)sl_arena_reserved(sl_params_arena(t.m->params)) / (1 << 20);
    static const char *const floor_key[N_FLOORS] = {"", "kernel_"};
    if (json) {
        printf("{\"bench\": \"gpt_step\", \"impl\": \"shortlong\", \"vocab\": %lld, \"dim\": %lld, "
               "\"layers\": %d, \"heads\": %d, \"context\": %lld, \"batch\": %lld, "
               "\"pos\": \"%s\", "
               "\"threads\": %d, \"steps\": %d, \"warmup\": %d, \"params\": %lld, "
               "\"sgemm\": \"%s\", \"isa\": \"%s\", \"step_ms\": %.2f, \"step_ms_min\": %.2f, "
               "\"tokens_per_s\": %.0f, \"peak_rss_mib\": %.1f, \"step_arena_peak_mib\": %.1f, "
               "\"params_arena_mib\": %.1f, \"heap_allocs_timed\": %llu, "
               "\"page_faults_per_step\": %.1f, \"gemm_gflop\": %.2f, \"gemm_gflop_full\": %.2f, "
               "\"loss_first\": %.6f, \"loss_last\": %.6f",
               (long long)cfg.vocab_size, (long long)cfg.dim, cfg.n_layers, cfg.n_heads,
               (long long)T, (long long)B, sl_pos_name(cfg.pos), threads, steps, warmup,
               (long long)sl_params_numel(t.m->params),
               sl_matmul_engine(), sl_cpu_isa(), step_ms,
               1e3 * min_of(step_s, steps), tok_s, rss, arena_mib, params_mib,
               (unsigned long long)heap, (double)faults / steps, gflop, gflop_full, loss0, loss);
        for (int f = 0; f < n_floors; f++)
            printf(", \"%sfloor_ms\": %.2f, \"%sfloor_full_ms\": %.2f, "
                   "\"%sfloor_linear_ms\": %.2f, "
                   "\"%sfloor_attention_full_ms\": %.2f, \"%sratio_to_floor\": %.3f, "
                   "\"%sratio_to_floor_full\": %.3f",
                   floor_key[f], floor_ms[f], floor_key[f], floor_full_ms[f], floor_key[f],
                   lin_ms[f], floor_key[f], att_ms[f], floor_key[f], step_ms / floor_ms[f],
                   floor_key[f], step_ms / floor_full_ms[f]);
        if (n_floors)
            printf(", \"best_floor_ms\": %.2f, \"ratio_to_best_floor\": %.3f", best_ms,
                   step_ms / best_ms);
        if (profiling) print_profile(&P, steps, engine, 1e3 * median(prof_step, steps),
                          1e3 * mean_of(prof_step, steps), step_ms, true);
        printf("}\n");
    } else {
        printf("shortlong GPT training step: vocab %lld, d_model %lld, %d layers, %d heads, "
               "T %lld, batch %lld, pos %s, %lld parameters, %d threads\n"
               "  kernels: %s; matrix products: %s\n",
               (long long)cfg.vocab_size, (long long)cfg.dim, cfg.n_layers, cfg.n_heads,
               (long long)T, (long long)B, sl_pos_name(cfg.pos),
               (long long)sl_params_numel(t.m->params), threads, sl_cpu_isa(),
               sl_matmul_engine());
        printf("  step (zero grad, forward, loss, backward, AdamW): median %.1f ms over %d steps "
               "-> %.0f tokens/s\n", step_ms, steps, tok_s);
        char own[64];
        snprintf(own, sizeof own, "shortlong's own %s kernel", sl__isa_name(sl__sgemm_level()));
        const char *const floor_name[N_FLOORS] = {"cblas_sgemm (OpenBLAS)", own};
        for (int f = 0; f < n_floors; f++) {
            printf("  GEMM floor through %s, same run: %.1f ms (linear %.1f + attention %.1f / 2; "
                   "%.1f GFLOP); step / floor = %.2fx\n", floor_name[f], floor_ms[f], lin_ms[f],
                   att_ms[f], gflop, step_ms / floor_ms[f]);
            printf("    with full (non-causal) attention products: %.1f ms (%.1f GFLOP); "
                   "step / floor = %.2fx\n", floor_full_ms[f], gflop_full,
                   step_ms / floor_full_ms[f]);
        }
        if (n_floors == 2)
            printf("  the best of both, each part (linear, attention) on its faster engine in "
                   "each measurement: %.1f ms; step / floor = %.2fx\n",
                   best_ms, step_ms / best_ms);
        printf("  peak RSS %.1f MiB (step arena peak %.1f MiB, parameters' arena %.1f MiB)\n",
               rss, arena_mib, params_mib);
        printf("  heap allocations during the %d timed steps: %llu; page faults per step: %.1f\n",
               steps, (unsigned long long)heap, (double)faults / steps);
        printf("  loss: %.4f at the first step, %.4f at the last\n", loss0, loss);
        if (profiling) print_profile(&P, steps, engine, 1e3 * median(prof_step, steps),
                          1e3 * mean_of(prof_step, steps), step_ms, false);
    }
    if (floor) floor_stop(&fs);
    sl_optim_free(t.opt);
    sl_gpt_free(t.m);
    sl_arena_free(t.step);
    sl_arena_free(data);
    return 0;
}
