/* bench/bench_sgemm.c — shortlong's own f32 matrix product (ops/gemm_isa.c) against
 * cblas_sgemm, one thread, on the products of the GPT reference step (bench_gpt_step).
 *
 * For each Linear of the reference model (d 256: qkv 256 -> 768, attention output 256 -> 256,
 * MLP 256 -> 1024 and 1024 -> 256), the three products of a training step on one thread's share
 * of the batch's 2048 rows: y = x W^T (1024 rows), dx = dy W (1024 rows), dW = dy^T x (a 1024-row
 * slab of the inner dim, as sl_linear cuts it). The two engines alternate within every
 * repetition; the figures are medians:
 *   own   the library's kernel at the running CPU's level, b packed once before (sl_linear packs
 *         the operand once per product and its row chunks share it), rows in calls of --rows;
 *   pack  packing b for it (sl__sgemm_pack), once per product;
 *   blas  cblas_sgemm (OpenBLAS on one thread, as the library sets it), the whole product in one
 *         call, which packs both operands itself.
 * The last column checks the two agree (max |own - blas| / (1 + |blas|)).
 *
 *     ./build/bin/bench_sgemm [--reps 15] [--rows 256]
 */
#include <shortlong/shortlong.h>

#include "../ops/blas.h" /* cblas, as the library includes it */
#include "../ops/gemm.h" /* internal: the library's own f32 kernel */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int m, n, k;
    bool ta, tb;
} shape;

static float *filled(size_t n, uint64_t seed)
{
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; x && i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / (double)(1ull << 24) - 0.5);
    }
    return x;
}

int main(int argc, char **argv)
{
    int reps = 15, rows_per_call = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows_per_call = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps 15] [--rows 256]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > BENCH_MAX_SAMPLES || rows_per_call < 1) {
        fprintf(stderr, "%s: --reps must be 1 to %d and --rows at least 1\n", argv[0],
                BENCH_MAX_SAMPLES);
        return 2;
    }
    if (!sl__sgemm_level()) {
        printf("bench_sgemm: this CPU has no kernel of shortlong's own (%s): cblas only\n",
               sl_cpu_isa());
        return 0;
    }
    const shape shapes[] = {
        {"qkv y", 1024, 768, 256, false, true},     {"qkv dx", 1024, 256, 768, false, false},
        {"qkv dW", 768, 256, 1024, true, false},    {"out y", 1024, 256, 256, false, true},
        {"out dx", 1024, 256, 256, false, false},   {"out dW", 256, 256, 1024, true, false},
        {"fc y", 1024, 1024, 256, false, true},     {"fc dx", 1024, 256, 1024, false, false},
        {"fc dW", 1024, 256, 1024, true, false},    {"proj y", 1024, 256, 1024, false, true},
        {"proj dx", 1024, 1024, 256, false, false}, {"proj dW", 256, 1024, 1024, true, false},
    };
    const int ns = (int)(sizeof shapes / sizeof *shapes);
    size_t amax = 0, bmax = 0, cmax = 0, pmax = 0;
    for (int s = 0; s < ns; s++) {
        const shape *p = &shapes[s];
        size_t a = (size_t)p->m * p->k, b = (size_t)p->k * p->n, c = (size_t)p->m * p->n;
        size_t pk = sl__sgemm_packed_floats(p->k, p->n);
        amax = a > amax ? a : amax;
        bmax = b > bmax ? b : bmax;
        cmax = c > cmax ? c : cmax;
        pmax = pk > pmax ? pk : pmax;
    }
    float *a = filled(amax, 1), *b = filled(bmax, 2), *c0 = malloc(sizeof(float) * cmax);
    float *c1 = malloc(sizeof(float) * cmax), *bp = malloc(sizeof(float) * pmax);
    if (!a || !b || !c0 || !c1 || !bp) {
        fprintf(stderr, "bench_sgemm: out of memory\n");
        return 1;
    }
    printf("shortlong's own f32 kernel against cblas_sgemm, one thread, %d reps, own rows in "
           "calls of %d\n  kernels: %s; the kernel's level: %s; OpenBLAS core: %s\n",
           reps, rows_per_call, sl_cpu_isa(), sl__isa_name(sl__sgemm_level()), sl__blas_core());
    printf("  %-8s %5s %5s %5s %2s %9s %9s %9s %10s %9s %8s\n", "product", "m", "n", "k", "op",
           "blas ms", "own ms", "pack ms", "own/blas", "GFLOP/s", "max err");
    double tot[3] = {0, 0, 0};
    for (int s = 0; s < ns; s++) {
        const shape *p = &shapes[s];
        int lda = p->ta ? p->m : p->k, ldb = p->tb ? p->k : p->n;
        double t[3][BENCH_MAX_SAMPLES];
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans,
                        p->tb ? CblasTrans : CblasNoTrans, p->m, p->n, p->k, 1.0f, a, lda, b, ldb,
                        0.0f, c0, p->n);
            double t1 = now();
            sl__sgemm_pack(bp, b, p->tb, ldb, p->k, p->n, 0, sl__sgemm_panels(p->n));
            double t2 = now();
            for (int r0 = 0; r0 < p->m; r0 += rows_per_call)
                sl__sgemm_rows(a, p->ta, lda, bp, p->k, p->n, c1, p->n, r0,
                               r0 + rows_per_call < p->m ? r0 + rows_per_call : p->m, false);
            double t3 = now();
            t[0][r] = t1 - t0;
            t[1][r] = t3 - t2;
            t[2][r] = t2 - t1;
        }
        double err = 0;
        for (size_t i = 0; i < (size_t)p->m * p->n; i++) {
            double e = fabs((double)c1[i] - c0[i]) / (1 + fabs((double)c0[i]));
            err = e > err ? e : err;
        }
        double bl = median(t[0], reps), own = median(t[1], reps), pk = median(t[2], reps);
        tot[0] += bl;
        tot[1] += own;
        tot[2] += pk;
        printf("  %-8s %5d %5d %5d %c%c %9.3f %9.3f %9.3f %10.3f %9.1f %8.1e\n", p->name, p->m,
               p->n, p->k, p->ta ? 'T' : 'N', p->tb ? 'T' : 'N', bl * 1e3, own * 1e3, pk * 1e3,
               own / bl, 2.0 * p->m * p->n * p->k / own * 1e-9, err);
    }
    printf("  all: blas %.2f ms, own %.2f ms (+ packing %.2f ms): own / blas %.3f, own with its "
           "packing / blas %.3f\n",
           tot[0] * 1e3, tot[1] * 1e3, tot[2] * 1e3, tot[1] / tot[0], (tot[1] + tot[2]) / tot[0]);
    free(a);
    free(b);
    free(c0);
    free(c1);
    free(bp);
    return 0;
}
