/* ops/softmax.h — what sl_softmax / sl_log_softmax (softmax.c) and their kernels
 * (softmax_isa.c, compiled for every SIMD level) share: the job and the table of one level's
 * kernels. Not installed. */
#ifndef SL_OPS_SOFTMAX_H
#define SL_OPS_SOFTMAX_H

#include "internal.h"

/* A contiguous (outer, L, inner) tensor as outer * inner lanes of L elements, inner apart. */
typedef struct {
    bool log;
    bool backward;
    sl_dtype dtype;
    int64_t L, inner;
    const void *a, *b; /* forward: x, -;  backward: y, g */
    void *out;         /* forward: y;     backward: gx (accumulated into) */
} lane_job;

typedef struct {
    sl_range_fn lanes; /* lanes [begin, end) of a lane_job (ctx) */
} sl__softmax_kernels;

SL_ISA_DECLARE(extern const sl__softmax_kernels, sl__softmax_kernels)

#endif
