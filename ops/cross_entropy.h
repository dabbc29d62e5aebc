/* ops/cross_entropy.h — what sl_cross_entropy (cross_entropy.c) and its kernels
 * (cross_entropy_isa.c, compiled for every SIMD level) share: the job every range reads and the
 * table of one level's kernels. Not installed. */
#ifndef SL_OPS_CROSS_ENTROPY_H
#define SL_OPS_CROSS_ENTROPY_H

#include "internal.h"

/* Whether cross-entropy counts target t. */
static inline bool ce_counted(int32_t t, int32_t ignore_index)
{
    return ignore_index == SL_NO_IGNORE || t != ignore_index;
}

typedef struct {
    sl_dtype dtype;
    const void *x;      /* contiguous logits (rows, C) */
    void *gx;           /* their gradient (backward), accumulated into */
    const int32_t *tgt; /* (rows) */
    double *lse;        /* (rows): log-sum-exp of each counted row */
    double scale;       /* backward: the incoming gradient / the counted rows */
    int64_t C;
    int32_t ignore;
} cross_entropy_job;

typedef struct {
    /* Rows [r0, r1) of a cross_entropy_job (ctx): forward sets lse on counted rows, backward
     * accumulates into gx. */
    sl_range_fn forward, backward;
    /* The sum over the counted rows of lse - x[target], in row order. */
    double (*total)(const cross_entropy_job *j, int64_t rows);
} sl__cross_entropy_kernels;

SL_ISA_DECLARE(extern const sl__cross_entropy_kernels, sl__cross_entropy_kernels)

#endif
