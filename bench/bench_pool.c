/* bench/bench_pool.c — does shortlong's thread pool get along with OpenBLAS?
 *
 * One iteration is what a training step is made of at its coarsest: one large matmul
 * (a (N, N) @ (N, N) f32 product through sl_matmul, hence cblas_sgemm) followed by a parallel
 * elementwise op over a large tensor (sl_gelu, erf form, on E floats). Both run on 1 thread and
 * on 2 threads (sl_set_num_threads), interleaved rep by rep so that both thread counts see the
 * same machine load, and the medians are reported with the 2-thread speedup of each part.
 * Outputs go to a step arena that is reset every iteration; the heap allocations made during
 * the timed iterations are counted (sl_heap_allocs) to show there is no malloc/free churn.
 *
 * A control measures the machine's own ceiling for the elementwise part: the same GELU loop
 * over the same data, cut in equal parts by raw pthreads (no pool, no shortlong), so the pool's
 * speedup can be read against what that many threads can get at all.
 *
 *     ./build/bin/bench_pool [--json] [--reps R] [--n N] [--elems E] [--threads T]
 *
 * Defaults: R = 7, N = 2048, E = 16777216 (16M), T = 2 (compares 1 and T threads).
 */
#include <shortlong/shortlong.h>

#include "bench_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_REPS = 101, MAX_THREADS = 64 };

_Static_assert(MAX_REPS <= BENCH_MAX_SAMPLES, "median() takes every rep");

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--json] [--reps R] [--n N] [--elems E] [--threads T]\n", prog);
    return 2;
}

/* The control: y = x Phi(x) as ops/elementwise_kernels.h computes it in f32, on [begin, end). */
typedef struct {
    const float *x;
    float *y;
    int64_t begin, end;
} gelu_job;

static void *gelu_plain(void *arg)
{
    const gelu_job *j = arg;
    for (int64_t i = j->begin; i < j->end; i++)
        j->y[i] = 0.5f * j->x[i] * (1 + erff(j->x[i] * (float)M_SQRT1_2));
    return NULL;
}

/* The control on `threads` raw threads, the range cut in equal parts; returns the seconds
 * taken, or -1 if a thread could not be started. */
static double gelu_control(const float *x, float *y, int64_t n, int threads)
{
    pthread_t tid[MAX_THREADS];
    gelu_job job[MAX_THREADS];
    for (int t = 0; t < threads; t++)
        job[t] = (gelu_job){x, y, n * t / threads, n * (t + 1) / threads};
    double t0 = now();
    int started = 1;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, gelu_plain, &job[started])) break;
    gelu_plain(&job[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    return started == threads ? now() - t0 : -1;
}

/* One iteration: times the matmul and the gelu separately. False on error. */
static bool iteration(sl_tensor *a, sl_tensor *b, sl_tensor *x, sl_arena *step, double *t_mm,
                      double *t_gelu)
{
    double t0 = now();
    sl_tensor *c = sl_matmul(a, b);
    double t1 = now();
    sl_tensor *g = sl_gelu(x, SL_GELU_ERF);
    double t2 = now();
    sl_arena_reset(step);
    *t_mm = t1 - t0;
    *t_gelu = t2 - t1;
    return c && g;
}

int main(int argc, char **argv)
{
    bool json = false;
    int reps = 7, max_threads = 2;
    int64_t n = 2048, elems = 16 << 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--elems") && i + 1 < argc) elems = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) max_threads = atoi(argv[++i]);
        else return usage(argv[0]);
    }
    if (reps < 1 || reps > MAX_REPS || n < 1 || elems < 1 || max_threads < 2 ||
        max_threads > MAX_THREADS)
        return usage(argv[0]);
    const int threads[2] = {1, max_threads};

    sl_arena *data = sl_arena_new(0), *step = sl_arena_new(0);
    if (!data || !step) goto fail;
    sl_set_grad_enabled(false);
    sl_rng rng = sl_rng_seed(1);
    sl_arena_set(data);
    sl_tensor *a = sl_rand_normal(&rng, SL_F32, sl_shape(n, n), 0, 1); // (N, N)
    sl_tensor *b = sl_rand_normal(&rng, SL_F32, sl_shape(n, n), 0, 1); // (N, N)
    sl_tensor *x = sl_rand_normal(&rng, SL_F32, sl_shape(elems), 0, 1); // (E)
    if (!a || !b || !x) goto fail;
    sl_arena_set(step);

    float *control_out = sl_arena_alloc(data, sizeof(float) * (size_t)elems, 64);
    if (!control_out) goto fail;
    double t_mm[2][MAX_REPS], t_gelu[2][MAX_REPS], t_iter[2][MAX_REPS], t_ctl[2][MAX_REPS];
    uint64_t heap_allocs = 0;
    for (int k = 0; k < 2; k++) { /* warm up: starts the pool, fills the step arena's blocks */
        sl_set_num_threads(threads[k]);
        double u, v;
        if (!iteration(a, b, x, step, &u, &v)) goto fail;
    }
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            sl_set_num_threads(threads[k]);
            uint64_t h0 = sl_heap_allocs();
            if (!iteration(a, b, x, step, &t_mm[k][r], &t_gelu[k][r])) goto fail;
            heap_allocs += sl_heap_allocs() - h0;
            t_iter[k][r] = t_mm[k][r] + t_gelu[k][r];
            t_ctl[k][r] = gelu_control(sl_ptr(x), control_out, elems, threads[k]);
            if (t_ctl[k][r] < 0) {
                fprintf(stderr, "bench_pool: pthread_create failed\n");
                return 1;
            }
        }
    }

    double mm[2], ge[2], it[2], ctl[2];
    for (int k = 0; k < 2; k++) {
        mm[k] = median(t_mm[k], reps);
        ge[k] = median(t_gelu[k], reps);
        it[k] = median(t_iter[k], reps);
        ctl[k] = median(t_ctl[k], reps);
    }
    double gflops = 2.0 * (double)n * (double)n * (double)n * 1e-9;
    if (json) {
        printf("{\"bench\": \"pool\", \"n\": %lld, \"elems\": %lld, \"reps\": %d, "
               "\"heap_allocs_timed\": %llu, \"runs\": [",
               (long long)n, (long long)elems, reps, (unsigned long long)heap_allocs);
        for (int k = 0; k < 2; k++)
            printf("%s{\"threads\": %d, \"matmul_ms\": %.3f, \"gelu_ms\": %.3f, "
                   "\"iter_ms\": %.3f, \"matmul_gflops\": %.2f}",
                   k ? ", " : "", threads[k], 1e3 * mm[k], 1e3 * ge[k], 1e3 * it[k],
                   gflops / mm[k]);
        printf("], \"speedup\": {\"matmul\": %.3f, \"gelu\": %.3f, \"iter\": %.3f}, "
               "\"control_gelu_pthreads\": {\"ms_1\": %.3f, \"ms_n\": %.3f, \"speedup\": %.3f}}\n",
               mm[0] / mm[1], ge[0] / ge[1], it[0] / it[1], 1e3 * ctl[0], 1e3 * ctl[1],
               ctl[0] / ctl[1]);
    } else {
        printf("shortlong pool bench: sl_matmul f32 [%lld,%lld] @ [%lld,%lld], then sl_gelu "
               "(erf) on %lld f32; median of %d\n",
               (long long)n, (long long)n, (long long)n, (long long)n, (long long)elems, reps);
        printf("%8s %12s %10s %12s %10s\n", "threads", "matmul ms", "GFLOP/s", "gelu ms",
               "iter ms");
        for (int k = 0; k < 2; k++)
            printf("%8d %12.1f %10.1f %12.1f %10.1f\n", threads[k], 1e3 * mm[k],
                   gflops / mm[k], 1e3 * ge[k], 1e3 * it[k]);
        printf("speedup %d vs 1 thread: matmul %.2fx, gelu %.2fx, iteration %.2fx\n",
               threads[1], mm[0] / mm[1], ge[0] / ge[1], it[0] / it[1]);
        printf("control, the same gelu loop on raw pthreads: 1 thread %.1f ms, %d threads %.1f ms, "
               "speedup %.2fx\n",
               1e3 * ctl[0], threads[1], 1e3 * ctl[1], ctl[0] / ctl[1]);
        printf("heap allocations during the %d timed iterations: %llu\n", 2 * reps,
               (unsigned long long)heap_allocs);
    }
    sl_arena_set(NULL);
    sl_arena_free(step);
    sl_arena_free(data);
    return 0;

fail:
    fprintf(stderr, "bench_pool: %s\n", sl_error_message());
    return 1;
}
