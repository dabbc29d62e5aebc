/* ops/reduce.h — what the reductions (reduce.c) and their kernels (reduce_isa.c, compiled for
 * every SIMD level) share: the ops, the plan of a reduction, the job and the table of one
 * level's kernels. Not installed. */
#ifndef SL_OPS_REDUCE_H
#define SL_OPS_REDUCE_H

#include "internal.h"

typedef enum { R_SUM, R_MEAN, R_VAR, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN, R_COUNT } reduce_op;

/* Which dims are reduced, the output shape, and the input as rows (kept dims first, reduced
 * dims last, both in their original order). */
typedef struct {
    bool reduced[SL_MAX_DIMS];
    int ndim_out;
    int64_t shape_out[SL_MAX_DIMS];
    int64_t n_out, group; /* output elements; input elements per output element (N) */
    int n_kept;           /* rows.shape[0 .. n_kept) are the kept dims */
    sl_tensor rows;       /* a header over the input's storage */
    int64_t flat_strides[SL_MAX_DIMS]; /* the input's row-major strides, permuted like rows */
} plan;

/* sum_d (i's index along dim d) * strides[d] over dims [first, last) of shape, i row-major. */
static inline int64_t unravel_dot(int64_t i, int first, int last, const int64_t *shape,
                                  const int64_t *strides)
{
    int64_t off = 0;
    for (int d = last - 1; d >= first; d--) {
        off += (i % shape[d]) * strides[d];
        i /= shape[d];
    }
    return off;
}

/* Max, min, argmax, argmin: the first index of the extreme in the row (a NaN counts as it). */
static inline bool picks_one(reduce_op op) { return op >= R_MAX; }

typedef struct {
    reduce_op op;
    const plan *p;
    const void *x;   /* (n_out, N) contiguous */
    void *y;         /* (n_out), i32 for argmax / argmin */
    double denom;    /* var: N - correction */
    double *mean;    /* sl_var with a node: the group means, else NULL */
    int64_t *arg;    /* sl_max / sl_min with a node: each one's flat index in the input */
} reduce_job;

typedef struct {
    sl_range_fn rows; /* output elements [b, e) of a reduce_job (ctx) */
    /* Backward runs (sl__foreach; ctx: the double scale): gx += scale * g, and for sl_var
     * gx += g * 2 (x - mean) * scale, over operands (gx, g[, x, mean]). */
    sl__run_fn spread_f32, spread_f64, var_grad_f32, var_grad_f64;
} sl__reduce_kernels;

SL_ISA_DECLARE(extern const sl__reduce_kernels, sl__reduce_kernels)

#endif
