/* bench/bench_attention_masks.c — what each option of the fused sl_alibi_attention costs
 * (sl_alibi_opts), as a ratio against plain causal ALiBi measured in the same run, and the
 * sliding window's O(T W) scaling.
 *
 * Part 1, at --T (default 4096): q, k, v f32 (B, H, T, D), forward and forward + backward
 * (dq, dk, dv; slopes too where learnable), every variant timed rep by rep in turn so that they
 * share the machine's load, medians of --reps after a warm-up:
 *   causal          the baseline: default slopes, no options
 *   bidirectional   no causal mask: twice the pairs, so about 2x is the expected cost
 *   bidir asym      bidirectional with slopes_after
 *   learned         causal with slopes that require grad (dL/dslope in pass 2)
 *   bidir asym lrn  bidirectional, slopes and slopes_after both learnable
 *   lengths = T     key and query lengths that mask nothing: the options' own overhead
 *   lengths = T/2   every row half padding: a quarter of the causal pairs remain
 *   one segment     segment ids all equal: the overhead of segments that mask nothing
 *   docs of 512     segment ids of documents of 512 tokens: pairs across documents skipped
 *   window 512      keys at p_i - j >= 512 masked: O(T W) instead of O(T^2 / 2)
 *   everything      lengths T - 100, documents of 1024, window 512 together
 * Part 2, at --window-T (default 16384), causal, forward + backward: no window, then
 * W = 256, 512, ..., 4096; time / (T W) should be about constant once W is a few tiles.
 *
 *     ./build/bin/bench_attention_masks [--T 4096] [--window-T 16384] [--B 1] [--H 8] [--D 64]
 *                                       [--reps 5] [--window-reps 3]
 *
 * Threads: the pool's (SL_NUM_THREADS, else the CPUs it may run on).
 */
#include <shortlong/shortlong.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_REPS = 51, MAX_VARIANTS = 16 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAX_REPS];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

typedef struct {
    const char *name;
    sl_alibi_opts opts;
    bool learn; /* slopes (and slopes_after) require grad */
} variant;

typedef struct {
    int64_t B, H, T, D;
    sl_tensor *q, *k, *v, *gout; /* leaves (B, H, T, D) */
    sl_tensor *slopes, *slopes_after, *slopes_lrn, *after_lrn;
    sl_arena *step;
} bench;

/* One forward + backward of variant v in the step arena: the times of both. */
static bool iteration(bench *b, const variant *v, double *t_fwd, double *t_fb)
{
    sl_zero_grad(b->q), sl_zero_grad(b->k), sl_zero_grad(b->v);
    sl_zero_grad(b->slopes_lrn), sl_zero_grad(b->after_lrn);
    sl_arena_reset(b->step);
    sl_arena *prev = sl_arena_set(b->step);
    sl_alibi_opts o = v->opts;
    if (o.slopes_after) o.slopes_after = v->learn ? b->after_lrn : b->slopes_after;
    double t0 = now();
    sl_tensor *out = sl_alibi_attention(b->q, b->k, b->v, v->learn ? b->slopes_lrn : b->slopes, &o);
    double t1 = now();
    bool ok = out && sl_backward_ex(out, b->gout, 0);
    double t2 = now();
    sl_arena_set(prev);
    *t_fwd = t1 - t0;
    *t_fb = t2 - t0;
    return ok;
}

/* Medians of reps of each variant, interleaved rep by rep after one warm-up each. */
static bool measure(bench *b, const variant *vs, int n, int reps, double *fwd, double *fb)
{
    static double tf[MAX_VARIANTS][MAX_REPS], tb[MAX_VARIANTS][MAX_REPS];
    for (int v = 0; v < n; v++)
        if (!iteration(b, &vs[v], &tf[v][0], &tb[v][0])) return false;
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < n; v++)
            if (!iteration(b, &vs[v], &tf[v][r], &tb[v][r])) return false;
    for (int v = 0; v < n; v++) {
        fwd[v] = 1e3 * median(tf[v], reps);
        fb[v] = 1e3 * median(tb[v], reps);
    }
    return true;
}

static bool setup(bench *b, sl_arena *data, int64_t T)
{
    sl_arena_set(data);
    sl_rng rng = sl_rng_seed(1);
    int64_t B = b->B, H = b->H, D = b->D;
    b->T = T;
    b->q = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
    b->k = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
    b->v = sl_requires_grad(sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1), true);
    b->gout = sl_rand_normal(&rng, SL_F32, sl_shape(B, H, T, D), 0, 1);
    b->slopes = sl_alibi_slopes((int)H);
    b->slopes_after = sl_alibi_slopes((int)H);
    b->slopes_lrn = sl_requires_grad(sl_alibi_slopes((int)H), true);
    b->after_lrn = sl_requires_grad(sl_alibi_slopes((int)H), true);
    return b->q && b->k && b->v && b->gout && b->slopes && b->after_lrn;
}

/* i32 [B] all n; i32 [B, T] ids of documents of doc tokens (one document when doc >= T). */
static sl_tensor *lengths(int64_t B, int64_t n)
{
    return sl_full(SL_I32, 1, (int64_t[]){B}, (double)n);
}

static sl_tensor *documents(int64_t B, int64_t T, int64_t doc)
{
    sl_tensor *s = sl_empty(SL_I32, 2, (int64_t[]){B, T});
    for (int64_t e = 0; s && e < B * T; e++) ((int32_t *)s->data)[e] = (int32_t)((e % T) / doc);
    return s;
}

int main(int argc, char **argv)
{
    int64_t T = 4096, WT = 16384, B = 1, H = 8, D = 64;
    int reps = 5, wreps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--window-T") && i + 1 < argc) WT = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--B") && i + 1 < argc) B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--H") && i + 1 < argc) H = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--D") && i + 1 < argc) D = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--window-reps") && i + 1 < argc) wreps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--T 4096] [--window-T 16384] [--B 1] [--H 8] [--D 64] "
                            "[--reps 5] [--window-reps 3]\n", argv[0]);
            return 2;
        }
    }
    if (T < 1024 || WT < 0 || B < 1 || H < 1 || D < 1 || reps < 1 || reps >= MAX_REPS ||
        wreps < 1 || wreps >= MAX_REPS) {
        fprintf(stderr, "bench_attention_masks: bad sizes (T >= 1024) or reps\n");
        return 2;
    }
    bench b = {.B = B, .H = H, .D = D, .step = sl_arena_new(0)};
    sl_arena *data = sl_arena_new(0);
    if (!setup(&b, data, T)) goto fail;
    sl_tensor *full = lengths(B, T), *half = lengths(B, T / 2), *most = lengths(B, T - 100);
    sl_tensor *one = documents(B, T, T), *docs = documents(B, T, 512);
    sl_tensor *kdocs = documents(B, T, 1024);
    const variant vs[] = {
        {"causal", {0}, false},
        {"bidirectional", {.bidirectional = true}, false},
        {"bidir asym", {.bidirectional = true, .slopes_after = SL_NONE}, false},
        {"learned", {0}, true},
        {"bidir asym lrn", {.bidirectional = true, .slopes_after = SL_NONE}, true},
        {"lengths = T", {.key_lengths = full, .query_lengths = full}, false},
        {"lengths = T/2", {.key_lengths = half, .query_lengths = half}, false},
        {"one segment", {.key_segments = one}, false},
        {"docs of 512", {.key_segments = docs}, false},
        {"window 512", {.window = 512}, false},
        {"everything", {.key_lengths = most, .query_lengths = most, .key_segments = kdocs,
                        .window = 512}, false},
    };
    /* slopes_after = SL_NONE above marks "asymmetric": iteration() puts the tensor in */
    const variant *vv = vs;
    int n = (int)(sizeof vs / sizeof *vs);
    double fwd[MAX_VARIANTS], fb[MAX_VARIANTS];
    printf("shortlong attention options: f32, B=%lld H=%lld D=%lld, T=%lld, %d threads, median of "
           "%d after a warm-up, variants interleaved\n",
           (long long)B, (long long)H, (long long)D, (long long)T, sl_get_num_threads(), reps);
    if (!measure(&b, vv, n, reps, fwd, fb)) goto fail;
    printf("  %-15s %10s %12s %10s %12s\n", "variant", "fwd ms", "fwd+bwd ms", "fwd x",
           "fwd+bwd x");
    for (int v = 0; v < n; v++)
        printf("  %-15s %10.2f %12.2f %10.2f %12.2f\n", vv[v].name, fwd[v], fb[v], fwd[v] / fwd[0],
               fb[v] / fb[0]);
    fflush(stdout);
    sl_arena_free(data);

    if (WT > 0) {
        data = sl_arena_new(0);
        if (!setup(&b, data, WT)) goto fail;
        const int64_t ws[] = {0, 256, 512, 1024, 2048, 4096};
        variant wv[6];
        int nw = 0;
        for (int i = 0; i < 6; i++)
            if (ws[i] < WT) wv[nw++] = (variant){"window", {.window = ws[i]}, false};
        if (!measure(&b, wv, nw, wreps, fwd, fb)) goto fail;
        printf("\nsliding window, causal, T=%lld, median of %d\n  %-8s %10s %12s %10s %18s\n",
               (long long)WT, wreps, "W", "fwd ms", "fwd+bwd ms", "x none", "fwd+bwd ns/(T W)");
        for (int i = 0; i < nw; i++) {
            if (ws[i] == 0)
                printf("  %-8s %10.2f %12.2f %10.2f %18s\n", "none", fwd[i], fb[i], 1.0, "-");
            else
                printf("  %-8lld %10.2f %12.2f %10.3f %18.3f\n", (long long)ws[i], fwd[i], fb[i],
                       fb[i] / fb[0], 1e6 * fb[i] / ((double)WT * (double)ws[i]));
        }
        sl_arena_free(data);
    }
    sl_arena_free(b.step);
    return 0;
fail:
    fprintf(stderr, "bench_attention_masks: %s\n", sl_error_message());
    return 1;
}
