/* ops/distance.c — the shared part of the biases that are a per-head function of distance
 * (distance.h): a table (H, n) spread over the (H, tq, tk) bias, and the bias gradient summed
 * back per distance. */
#include "distance.h"

#define SL_KERNELS "distance_kernels.h"
#include "instantiate.h"

enum { GRAIN_ELEMS = 1 << 15 }; /* bias elements per parallel chunk, at least */

typedef struct {
    sl_dtype dtype;
    const void *table, *g;
    void *out;
    double *acc;
    int64_t n, tq, tk;
} distance_job;

static void fill_rows(void *ctx, int64_t r0, int64_t r1)
{
    const distance_job *j = ctx;
    if (j->dtype == SL_F32) distance_fill_rows_f32(j->table, j->n, j->tq, j->tk, j->out, r0, r1);
    else distance_fill_rows_f64(j->table, j->n, j->tq, j->tk, j->out, r0, r1);
}

static void sum_heads(void *ctx, int64_t h0, int64_t h1)
{
    const distance_job *j = ctx;
    if (j->dtype == SL_F32) distance_sum_heads_f32(j->g, j->n, j->tq, j->tk, j->acc, h0, h1);
    else distance_sum_heads_f64(j->g, j->n, j->tq, j->tk, j->acc, h0, h1);
}

void sl__distance_fill(sl_dtype dtype, const void *table, int64_t H, int64_t n, int64_t tq,
                       int64_t tk, void *out)
{
    distance_job j = {dtype, table, NULL, out, NULL, n, tq, tk};
    int64_t grain = GRAIN_ELEMS / tk > 1 ? GRAIN_ELEMS / tk : 1;
    sl_parallel_for(H * tq, grain, fill_rows, &j);
}

void sl__distance_sums(sl_dtype dtype, const void *g, int64_t H, int64_t n, int64_t tq, int64_t tk,
                       double *acc)
{
    distance_job j = {dtype, NULL, g, NULL, acc, n, tq, tk};
    sl_parallel_for(H, 1, sum_heads, &j);
}
