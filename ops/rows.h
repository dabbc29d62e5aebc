/* ops/rows.h — what the row-wise ops (layer_norm.c, embedding.c, cross_entropy.c) share, not
 * installed: the parallel grain in rows. (Their sums over 8 double lanes in a fixed order are
 * ops/simd.h's sl_v8_f64.) */
#ifndef SL_OPS_ROWS_H
#define SL_OPS_ROWS_H

#include <stdint.h>

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* Rows of row_len elements per parallel chunk, so that a chunk holds about GRAIN elements. */
static inline int64_t row_grain(int64_t row_len)
{
    return row_len >= GRAIN ? 1 : GRAIN / (row_len ? row_len : 1);
}

#endif
