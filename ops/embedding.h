/* ops/embedding.h — what sl_embedding (embedding.c) and its kernels (embedding_isa.c, compiled
 * for every SIMD level) share: the job and the table of one level's kernels. Not installed. */
#ifndef SL_OPS_EMBEDDING_H
#define SL_OPS_EMBEDDING_H

#include "internal.h"

typedef struct {
    sl_dtype dtype;
    const void *w, *g; /* weight (V, D), element strides ws0, ws1; g: dL/dy (n, D) */
    void *y, *dw;      /* y (n, D); dw (V, D) contiguous, accumulated into */
    int64_t ws0, ws1, n, D;
    const int32_t *idx; /* (n) */
} embedding_job;

typedef struct {
    sl_range_fn forward;  /* tokens [i0, i1) of an embedding_job (ctx) */
    sl_range_fn backward; /* columns [d0, d1) */
} sl__embedding_kernels;

SL_ISA_DECLARE(extern const sl__embedding_kernels, sl__embedding_kernels)

#endif
