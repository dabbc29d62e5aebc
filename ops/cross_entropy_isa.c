/* ops/cross_entropy_isa.c — sl_cross_entropy's kernels (cross_entropy_kernels.h) for one SIMD
 * level (tensor/isa.h). */
#include "cross_entropy.h"
#include "simd.h"

#include <math.h>

#define SL_KERNELS "cross_entropy_kernels.h"
#include "instantiate.h"

static void forward(void *ctx, int64_t r0, int64_t r1)
{
    const cross_entropy_job *j = ctx;
    if (j->dtype == SL_F32)
        cross_entropy_forward_f32(j->x, j->tgt, j->ignore, j->lse, r0, r1, j->C);
    else
        cross_entropy_forward_f64(j->x, j->tgt, j->ignore, j->lse, r0, r1, j->C);
}

static void backward(void *ctx, int64_t r0, int64_t r1)
{
    const cross_entropy_job *j = ctx;
    if (j->dtype == SL_F32)
        cross_entropy_backward_f32(j->x, j->tgt, j->ignore, j->lse, j->scale, j->gx, r0, r1, j->C);
    else
        cross_entropy_backward_f64(j->x, j->tgt, j->ignore, j->lse, j->scale, j->gx, r0, r1, j->C);
}

static double total(const cross_entropy_job *j, int64_t rows)
{
    if (j->dtype == SL_F32)
        return cross_entropy_total_f32(j->x, j->tgt, j->ignore, j->lse, rows, j->C);
    return cross_entropy_total_f64(j->x, j->tgt, j->ignore, j->lse, rows, j->C);
}

const sl__cross_entropy_kernels SL_ISA(sl__cross_entropy_kernels) = {forward, backward, total};
