/* bench/bench_attention.c — the fused ALiBi attention: speed, and memory beyond its output.
 *
 * For each sequence length T, causal, q, k, v f32 (B, H, T, D) with default slopes, four
 * variants measured in the same run, rep by rep in turn so that they share the machine's load:
 *   fused     sl_alibi_attention, forward and forward + backward (dq, dk, dv);
 *   packed    sl_alibi_attention_packed on one qkv (B, T, 3 H D) leaf, out (B, T, H D): the
 *             heads read and their gradients written where a Linear puts them; the same FLOPs;
 *   heads     the same on a heads-major qkv (B, 3 H, T, D) leaf, as sl_linear_heads makes it
 *             (the GPT's path: nn/attention.c), out (B, T, H D);
 *   views     the same from the same leaf through views, as a model without the packed op
 *             would do it: sl_narrow, sl_reshape and sl_permute to (B, H, T, D) heads,
 *             sl_alibi_attention, and sl_permute + sl_reshape (a copy) back to (B, T, H D);
 *   nobias    the same kernel with zero slopes (the kernel then skips the bias): ALiBi's cost;
 *   composed  the same math from primitive ops through autograd, scores materialised:
 *             softmax(masked_fill(scale q k^T + bias, j > i, -inf)) v, with the (H, T, T) bias
 *             and the (T, T) mask built once, outside the timing (a GiB limit skips large T);
 *   sgemm     cblas_sgemm on the scores' shape, (T, D) @ (D, T) per (b, h), split over the
 *             same threads: the rate a kernel made only of such products could reach. Its
 *             fwd_ms / fwdbwd_ms are the times the useful FLOPs below would take at that rate.
 * Useful FLOPs: 6 products of 2 B H T^2 D (2 forward, 4 backward), halved for causal; the
 * backward's recomputation is not counted. Times are medians of --reps runs after a warm-up.
 * extra_bytes: the peak of a fresh arena over one forward + backward, minus the output and its
 * gradient (what any implementation produces); the leaves' gradients live elsewhere. For
 * composed it includes the bias and mask tensors.
 *
 *     ./build/bin/bench_attention [--T N] [--B 1] [--H 8] [--D 64] [--reps 5] [--json]
 *                                 [--composed-limit-gib 6]
 *
 * Without --T: T = 512, 1024, ..., 16384. Threads: the pool's (SL_NUM_THREADS, else the CPUs
 * it may run on).
 */
#include <shortlong/shortlong.h>

#include "bench_util.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_REPS = 51, N_VARIANTS = 7 };
typedef enum { FUSED, PACKED, HEADS, VIEWS, NOBIAS, COMPOSED, SGEMM } variant;
static const char *const variant_name[N_VARIANTS] = {"fused",  "packed",   "heads", "views",
                                                     "nobias", "composed", "sgemm"};

_Static_assert(MAX_REPS <= BENCH_MAX_SAMPLES, "median() takes every rep");

typedef struct {
    int64_t B, H, T, D;
    sl_tensor *q, *k, *v, *gout;  /* (B, H, T, D) f32; q, k, v leaves requiring grad */
    sl_tensor *qkv, *gout_packed; /* (B, T, 3 H D) leaf, (B, T, H D) */
    sl_tensor *qkv_heads;         /* (B, 3 H, T, D) leaf */
    sl_tensor *zero_slopes;       /* [H] */
    sl_tensor *bias, *mask;       /* composed only: (H, T, T) f32, (T, T) i32 */
    sl_arena *step[N_VARIANTS];   /* one per variant, reset every iteration */
    float *gemm_buf;              /* sgemm: rows of scores, one block per thread */
    int threads;
} bench;

/* ---------------------------------------------------------------- attention variants */

static sl_tensor *composed(bench *b)
{
    double scale = 1 / sqrt((double)b->D);
    sl_tensor *s = sl_matmul(b->q, sl_transpose(b->k, 2, 3));           // (B, H, T, T)
    sl_tensor *x = sl_add(sl_mul_scalar(s, scale), b->bias);            // (B, H, T, T)
    sl_tensor *p = sl_softmax(sl_masked_fill(x, b->mask, -INFINITY), -1); // (B, H, T, T)
    return sl_matmul(p, b->v);                                          // (B, H, T, D)
}

/* The packed variant's math through views of the heads. */
static sl_tensor *by_views(bench *b)
{
    int64_t B = b->B, T = b->T, C = b->H * b->D;
    sl_tensor *h[3];
    for (int i = 0; i < 3; i++) {
        sl_tensor *x = sl_reshape(sl_narrow(b->qkv, 2, i * C, C), 4,
                                  (int64_t[]){B, T, b->H, b->D});
        h[i] = sl_permute(x, (int[]){0, 2, 1, 3});
    }
    sl_tensor *y = sl_alibi_attention(h[0], h[1], h[2], SL_NONE, NULL);
    return sl_reshape(sl_permute(y, (int[]){0, 2, 1, 3}), 3, (int64_t[]){B, T, C});
}

/* One forward + backward in the variant's step arena. */
static bool attention_iteration(bench *b, variant v, double *t_fwd, double *t_fb)
{
    sl_zero_grad(b->q);
    sl_zero_grad(b->k);
    sl_zero_grad(b->v);
    sl_zero_grad(b->qkv);
    sl_zero_grad(b->qkv_heads);
    sl_arena_reset(b->step[v]);
    sl_arena *prev = sl_arena_set(b->step[v]);
    sl_tensor *slopes = v == NOBIAS ? b->zero_slopes : SL_NONE; /* SL_NONE: the paper's */
    double t0 = now();
    sl_tensor *out = v == COMPOSED ? composed(b)
                     : v == PACKED ? sl_alibi_attention_packed(b->qkv, (int)b->H, 0, slopes, NULL)
                     : v == HEADS
                         ? sl_alibi_attention_packed(b->qkv_heads, (int)b->H, 0, slopes, NULL)
                     : v == VIEWS ? by_views(b)
                                  : sl_alibi_attention(b->q, b->k, b->v, slopes, NULL);
    double t1 = now();
    const sl_tensor *gout = v == PACKED || v == HEADS || v == VIEWS ? b->gout_packed : b->gout;
    bool ok = out && sl_backward_ex(out, gout, 0);
    double t2 = now();
    sl_arena_set(prev);
    *t_fwd = t1 - t0;
    *t_fb = t2 - t0;
    return ok;
}

/* ---------------------------------------------------------------- sgemm */

enum { GEMM_ROWS = 256 };

typedef struct {
    bench *b;
    atomic_int_fast64_t next;
} gemm_job;

/* Worker w: (b, h) products S = Q K^T in blocks of GEMM_ROWS rows into its own buffer. */
static void gemm_workers(void *ctx, int64_t w0, int64_t w1)
{
    gemm_job *j = ctx;
    bench *b = j->b;
    const float *q = sl_ptr(b->q), *k = sl_ptr(b->k);
    int64_t T = b->T, D = b->D, per = T * D;
    for (int64_t w = w0; w < w1; w++) {
        float *c = b->gemm_buf + w * GEMM_ROWS * T;
        for (int64_t t; (t = atomic_fetch_add(&j->next, 1)) < b->B * b->H * (T / GEMM_ROWS);) {
            int64_t bh = t / (T / GEMM_ROWS), r0 = (t % (T / GEMM_ROWS)) * GEMM_ROWS;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, GEMM_ROWS, (int)T, (int)D, 1.0f,
                        q + bh * per + r0 * D, (int)D, k + bh * per, (int)D, 0.0f, c, (int)T);
        }
    }
}

static double gemm_iteration(bench *b)
{
    gemm_job j = {.b = b};
    atomic_init(&j.next, 0);
    double t0 = now();
    sl_parallel_for(b->threads, 1, gemm_workers, &j);
    return now() - t0;
}

/* ---------------------------------------------------------------- one T */

typedef struct {
    bool run;
    const char *skipped;
    double fwd_ms, fwdbwd_ms, gflops, fwd_gflops;
    double extra_bytes; /* < 0: not applicable */
} result;

static bool measure(bench *b, int reps, double composed_limit, result *res)
{
    int64_t B = b->B, H = b->H, T = b->T, D = b->D;
    double score_bytes = 4.0 * (double)(B * H) * (double)T * (double)T;
    double useful = 6 * 2.0 * (double)(B * H) * (double)T * (double)T * (double)D / 2;
    double out_bytes = 4.0 * (double)(B * H * T * D);
    memset(res, 0, sizeof(result) * N_VARIANTS);
    for (int v = 0; v < N_VARIANTS; v++) res[v].run = true;
    /* composed keeps about a dozen (B, H, T, T) tensors alive at its peak (measured) */
    if (12 * score_bytes > composed_limit) {
        res[COMPOSED].run = false;
        res[COMPOSED].skipped = "scores would need more memory than --composed-limit-gib";
    }
    if (T % GEMM_ROWS) {
        res[SGEMM].run = false;
        res[SGEMM].skipped = "T is not a multiple of 256";
    }

    if (res[COMPOSED].run) {
        b->bias = sl_empty(SL_F32, sl_shape(H, T, T));
        b->mask = sl_empty(SL_I32, sl_shape(T, T));
        if (!b->bias || !b->mask) return false;
        float *bias = b->bias->data;
        int32_t *mask = b->mask->data;
        for (int64_t h = 0; h < H; h++) {
            float m = (float)sl_alibi_slope((int)h, (int)H);
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++) bias[(h * T + i) * T + j] = -m * (float)(i - j);
        }
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) mask[i * T + j] = j > i;
    }
    if (res[SGEMM].run) {
        b->gemm_buf = malloc(sizeof(float) * (size_t)(b->threads * GEMM_ROWS * T));
        if (!b->gemm_buf) return false;
    }

    /* Warm-up, each attention variant in a fresh arena whose peak is its memory. */
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!res[v].run) continue;
        if (v == SGEMM) {
            gemm_iteration(b);
            res[v].extra_bytes = -1;
            continue;
        }
        b->step[v] = sl_arena_new(0);
        double tf, tb;
        if (!b->step[v] || !attention_iteration(b, v, &tf, &tb)) return false;
        res[v].extra_bytes = (double)sl_arena_peak(b->step[v]) - 2 * out_bytes;
        if (v == COMPOSED)
            res[v].extra_bytes += (double)(sl_numel(b->bias) * 4 + sl_numel(b->mask) * 4);
    }
    double t_fwd[N_VARIANTS][MAX_REPS], t_fb[N_VARIANTS][MAX_REPS];
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < N_VARIANTS; v++) {
            if (!res[v].run) continue;
            if (v == SGEMM) t_fwd[v][r] = t_fb[v][r] = gemm_iteration(b);
            else if (!attention_iteration(b, v, &t_fwd[v][r], &t_fb[v][r])) return false;
        }
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!res[v].run) continue;
        double tf = median(t_fwd[v], reps), tb = median(t_fb[v], reps);
        if (v == SGEMM) { /* one full product = the useful FLOPs of the causal forward */
            double rate = 2.0 * (double)(B * H) * (double)T * (double)T * (double)D / tf;
            res[v].gflops = res[v].fwd_gflops = 1e-9 * rate;
            res[v].fwd_ms = 1e3 * useful / 3 / rate;
            res[v].fwdbwd_ms = 1e3 * useful / rate;
        } else {
            res[v].fwd_ms = 1e3 * tf;
            res[v].fwdbwd_ms = 1e3 * tb;
            res[v].gflops = 1e-9 * useful / tb;
            res[v].fwd_gflops = 1e-9 * useful / 3 / tf;
        }
        if (b->step[v]) sl_arena_free(b->step[v]);
        b->step[v] = NULL;
    }
    free(b->gemm_buf);
    b->gemm_buf = NULL;
    b->bias = b->mask = NULL; /* in the data arena, released with it */
    return true;
}

static void print_json(const bench *b, const result *res)
{
    for (int v = 0; v < N_VARIANTS; v++) {
        const result *r = &res[v];
        printf("{\"bench\": \"attention\", \"variant\": \"%s\", \"causal\": true, \"T\": %lld, "
               "\"B\": %lld, \"H\": %lld, \"D\": %lld, \"threads\": %d",
               variant_name[v], (long long)b->T, (long long)b->B, (long long)b->H,
               (long long)b->D, b->threads);
        if (!r->run) {
            printf(", \"fwd_ms\": null, \"fwdbwd_ms\": null, \"gflops\": null, "
                   "\"extra_bytes\": null, \"skipped\": \"%s\"}\n",
                   r->skipped);
            continue;
        }
        printf(", \"fwd_ms\": %.3f, \"fwdbwd_ms\": %.3f, \"gflops\": %.2f, \"fwd_gflops\": %.2f",
               r->fwd_ms, r->fwdbwd_ms, r->gflops, r->fwd_gflops);
        if (r->extra_bytes >= 0) printf(", \"extra_bytes\": %.0f}\n", r->extra_bytes);
        else printf(", \"extra_bytes\": null}\n");
    }
    fflush(stdout);
}

static void print_table(const bench *b, const result *res)
{
    printf("T = %lld\n", (long long)b->T);
    for (int v = 0; v < N_VARIANTS; v++) {
        const result *r = &res[v];
        if (!r->run) {
            printf("  %-9s skipped: %s\n", variant_name[v], r->skipped);
            continue;
        }
        printf("  %-9s %10.2f %12.2f %10.1f %10.1f", variant_name[v], r->fwd_ms, r->fwdbwd_ms,
               r->fwd_gflops, r->gflops);
        if (r->extra_bytes >= 0) printf(" %12.2f\n", r->extra_bytes / (1 << 20));
        else printf(" %12s\n", "-");
    }
    const result *f = &res[FUSED], *n = &res[NOBIAS], *s = &res[SGEMM], *c = &res[COMPOSED];
    printf("  ALiBi over nobias: fwd %+.1f%%, fwd+bwd %+.1f%%", 100 * (f->fwd_ms / n->fwd_ms - 1),
           100 * (f->fwdbwd_ms / n->fwdbwd_ms - 1));
    if (s->run) printf("; fused fwd+bwd at %.0f%% of the sgemm rate", 100 * f->gflops / s->gflops);
    if (c->run) printf("; %.1fx faster than composed", c->fwdbwd_ms / f->fwdbwd_ms);
    printf("\n");
    fflush(stdout);
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--T N] [--B 1] [--H 8] [--D 64] [--reps 5] [--json] "
            "[--composed-limit-gib 6]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    bool json = false;
    int reps = 5;
    int64_t only_T = 0, B = 1, H = 8, D = 64;
    double limit_gib = 6;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--T") && i + 1 < argc) only_T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--B") && i + 1 < argc) B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--H") && i + 1 < argc) H = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--D") && i + 1 < argc) D = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--composed-limit-gib") && i + 1 < argc)
            limit_gib = atof(argv[++i]);
        else return usage(argv[0]);
    }
    if (reps < 1 || reps > MAX_REPS || only_T < 0 || B < 1 || H < 1 || D < 1) return usage(argv[0]);
    int64_t sizes[] = {512, 1024, 2048, 4096, 8192, 16384};
    int n_sizes = 6;
    if (only_T) {
        sizes[0] = only_T;
        n_sizes = 1;
    }

    bench b = {.B = B, .H = H, .D = D, .threads = sl_get_num_threads()};
    if (!json)
        printf("shortlong attention bench: causal, f32, B=%lld H=%lld D=%lld, %d threads, "
               "median of %d after a warm-up\n"
               "  %-9s %10s %12s %10s %10s %12s\n",
               (long long)B, (long long)H, (long long)D, b.threads, reps, "variant", "fwd ms",
               "fwd+bwd ms", "fwd GF/s", "GFLOP/s", "extra MiB");
    for (int s = 0; s < n_sizes; s++) {
        int64_t T = sizes[s];
        sl_arena *data = sl_arena_new(0);
        sl_arena *prev = sl_arena_set(data);
        sl_rng rng = sl_rng_seed(1);
        b.T = T;
        b.q = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
        b.k = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
        b.v = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
        b.gout = sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1);
        b.zero_slopes = sl_zeros(SL_F32, sl_shape(H));
        b.qkv = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, T, 3 * H * D), 0, 1), true);
        b.qkv_heads =
            sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, 3 * H, T, D), 0, 1), true);
        b.gout_packed = sl_rand_normal(&rng, SL_F32, sl_shape(B, T, H * D), 0, 1);
        result res[N_VARIANTS];
        bool ok = b.q && b.k && b.v && b.gout && b.zero_slopes && b.qkv && b.qkv_heads &&
                  b.gout_packed && measure(&b, reps, limit_gib * (1 << 30), res);
        if (ok && json) print_json(&b, res);
        else if (ok) print_table(&b, res);
        sl_arena_set(prev);
        sl_arena_free(data);
        if (!ok) {
            fprintf(stderr, "bench_attention: T = %lld: %s\n", (long long)T, sl_error_message());
            return 1;
        }
    }
    return 0;
}
