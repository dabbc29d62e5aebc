/* ops/rows.h — what the row-wise ops (layer_norm.c, embedding.c, cross_entropy.c) share, not
 * installed: the parallel grain in rows, and sums over 8 double lanes in a fixed order. */
#ifndef SL_OPS_ROWS_H
#define SL_OPS_ROWS_H

#include <stdint.h>

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* Rows of row_len elements per parallel chunk, so that a chunk holds about GRAIN elements. */
static inline int64_t row_grain(int64_t row_len)
{
    return row_len >= GRAIN ? 1 : GRAIN / (row_len ? row_len : 1);
}

/* Row sums run over 8 double lanes, lane k taking elements k, k + 8, ..., then the lanes added
 * pairwise and the leftovers after them: a fixed order (the same bits on any thread count) that
 * the compiler can keep in vector registers, where one running double would serialise every row
 * on the latency of an add. */
typedef double vd8 __attribute__((vector_size(64)));

static inline double hsum8(vd8 v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

#endif
