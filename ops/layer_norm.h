/* ops/layer_norm.h — what sl_layer_norm (layer_norm.c) and its kernels (layer_norm_isa.c,
 * compiled for every SIMD level) share: the job every range reads and the table of one level's
 * kernels. Not installed. */
#ifndef SL_OPS_LAYER_NORM_H
#define SL_OPS_LAYER_NORM_H

#include "internal.h"

typedef struct {
    sl_dtype dtype;
    const void *x, *w, *b, *g; /* x (rows, C); w, b (C) or NULL; g: dL/dy (rows, C) */
    void *y, *dx;              /* (rows, C); dx accumulated into, or NULL */
    double *mean, *rstd;       /* (rows) */
    double *dw, *db;           /* (blocks, C) partial sums, or NULL */
    int64_t rows, C, block_rows;
    double eps;
} layer_norm_job;

typedef struct {
    /* Rows [r0, r1) of a layer_norm_job (ctx): y, mean and rstd. */
    sl_range_fn forward;
    /* Blocks [k0, k1) of block_rows rows each: dx, and block k's sums of dw and db into row k
     * of the partials. */
    sl_range_fn backward;
    /* dst (C, of dtype dt) += the sum of part (blocks, C) over its blocks, in block order. */
    void (*add_block_sums)(sl_dtype dt, void *dst, const double *part, int64_t blocks, int64_t C);
} sl__layer_norm_kernels;

SL_ISA_DECLARE(extern const sl__layer_norm_kernels, sl__layer_norm_kernels)

#endif
