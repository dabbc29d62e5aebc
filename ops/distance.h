/* ops/distance.h — biases that depend on the distance between a query and a key only, shared by
 * the ops that make them from a per-head table (kerple.c, sandwich.c). Not installed.
 *
 * With tq queries aligned bottom-right to tk keys (query row i at position p_i = tk - tq + i, as
 * in sl_alibi_attention), the distance of query i to key j is d = |p_i - j|, at most
 * max(tq, tk) - 1: a table (H, n) with n = sl__distance_count(tq, tk) covers every pair. */
#ifndef SL_OPS_DISTANCE_H
#define SL_OPS_DISTANCE_H

#include "internal.h"

/* The number of distances |p_i - j| that tq queries and tk keys reach: max(tq, tk). */
static inline int64_t sl__distance_count(int64_t tq, int64_t tk) { return tq > tk ? tq : tk; }

/* out[h,i,j] = table[h, |p_i - j|]: table (H, n) and out (H, tq, tk) contiguous, of dtype,
 * n >= sl__distance_count(tq, tk). Rows in parallel. */
void sl__distance_fill(sl_dtype dtype, const void *table, int64_t H, int64_t n, int64_t tq,
                       int64_t tk, void *out);
/* acc[h, d] += sum of g[h,i,j] over the pairs at distance d: g (H, tq, tk) of dtype, acc (H, n)
 * doubles. Each head is summed by one task, rows in order: the sums do not depend on the thread
 * count. */
void sl__distance_sums(sl_dtype dtype, const void *g, int64_t H, int64_t n, int64_t tq, int64_t tk,
                       double *acc);

#endif
