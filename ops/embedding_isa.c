/* ops/embedding_isa.c — sl_embedding's kernels (embedding_kernels.h) for one SIMD level
 * (tensor/isa.h). */
#include "embedding.h"
#include "simd.h"

#define SL_KERNELS "embedding_kernels.h"
#include "instantiate.h"

static void forward(void *ctx, int64_t i0, int64_t i1)
{
    const embedding_job *j = ctx;
    if (j->dtype == SL_F32) embedding_forward_f32(j->w, j->ws0, j->ws1, j->idx, j->y, i0, i1, j->D);
    else embedding_forward_f64(j->w, j->ws0, j->ws1, j->idx, j->y, i0, i1, j->D);
}

static void backward(void *ctx, int64_t d0, int64_t d1)
{
    const embedding_job *j = ctx;
    if (j->dtype == SL_F32) embedding_backward_f32(j->idx, j->g, j->dw, j->n, j->D, d0, d1);
    else embedding_backward_f64(j->idx, j->g, j->dw, j->n, j->D, d0, d1);
}

const sl__embedding_kernels SL_ISA(sl__embedding_kernels) = {forward, backward};
