/* ops/linear.h — what sl_linear (linear.c) and its epilogues (linear_isa.c, compiled for every
 * SIMD level) share: the table of one level's epilogue kernels. Not installed. */
#ifndef SL_OPS_LINEAR_H
#define SL_OPS_LINEAR_H

#include "internal.h"

/* Matrices are row-major (rows, n), element (r, j) at r * n + j, of the dtype given. */
typedef struct {
    /* Rows [r0, r1) of y, gemm's output: y += b (b NULL: no bias); then, if gelu, with u that
     * sum: d = gelu'(u) when d is given (backward's factor, from the same e^(...) as y), and
     * y = gelu(u) in place. */
    void (*forward_rows)(sl_dtype dt, char *y, char *d, const char *b, int64_t r0, int64_t r1,
                         int64_t n, bool gelu);
    /* Rows [r0, r1): du = g * d if gelu, d forward's gelu'(u), du either another buffer or d
     * itself (without gelu du is g and nothing is written); db (n doubles) += du summed over
     * the rows, in row order, when db is given. */
    void (*backward_rows)(sl_dtype dt, const char *g, const char *d, char *du, double *db,
                          int64_t r0, int64_t r1, int64_t n, bool gelu);
    /* d += p over n elements. */
    void (*add)(sl_dtype dt, void *d, const void *p, int64_t n);
} sl__linear_kernels;

SL_ISA_DECLARE(extern const sl__linear_kernels, sl__linear_kernels)

#endif
