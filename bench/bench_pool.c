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
 *     ./build/bin/bench_pool [--json] [--reps R] [--n N] [--elems E] [--threads T]
 *
 * Defaults: R = 7, N = 2048, E = 16777216 (16M), T = 2 (compares 1 and T threads).
 */
#include <shortlong/shortlong.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_REPS = 101 };

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

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--json] [--reps R] [--n N] [--elems E] [--threads T]\n", prog);
    return 2;
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
    if (reps < 1 || reps > MAX_REPS || n < 1 || elems < 1 || max_threads < 2) return usage(argv[0]);
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

    double t_mm[2][MAX_REPS], t_gelu[2][MAX_REPS], t_iter[2][MAX_REPS];
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
        }
    }

    double mm[2], ge[2], it[2];
    for (int k = 0; k < 2; k++) {
        mm[k] = median(t_mm[k], reps);
        ge[k] = median(t_gelu[k], reps);
        it[k] = median(t_iter[k], reps);
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
        printf("], \"speedup\": {\"matmul\": %.3f, \"gelu\": %.3f, \"iter\": %.3f}}\n",
               mm[0] / mm[1], ge[0] / ge[1], it[0] / it[1]);
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
