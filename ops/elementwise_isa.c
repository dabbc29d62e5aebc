/* ops/elementwise_isa.c — the elementwise kernels (elementwise_kernels.h) for one SIMD level
 * (tensor/isa.h). */
#include "elementwise.h"
#include "simd.h"

#include <math.h>

#define SL_KERNELS "elementwise_kernels.h"
#include "instantiate.h"

static void unary_forward(void *ctx, int64_t b, int64_t e)
{
    const unary_job *j = ctx;
    if (j->dtype == SL_F32)
        unary_forward_f32(j->op, (const float *)j->x + b, (float *)j->out + b, e - b, (float)j->p);
    else
        unary_forward_f64(j->op, (const double *)j->x + b, (double *)j->out + b, e - b, j->p);
}

static void unary_backward(void *ctx, int64_t b, int64_t e)
{
    const unary_job *j = ctx;
    if (j->dtype == SL_F32)
        unary_backward_f32(j->op, (const float *)j->x + b, (const float *)j->y + b,
                           (const float *)j->g + b, (float *)j->out + b, e - b, (float)j->p);
    else
        unary_backward_f64(j->op, (const double *)j->x + b, (const double *)j->y + b,
                           (const double *)j->g + b, (double *)j->out + b, e - b, j->p);
}

static void binary_forward(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const binary_ctx *c = vctx;
    if (c->dtype == SL_F32) binary_forward_f32(c->op, p[0], p[1], p[2], bs[1], bs[2], n);
    else binary_forward_f64(c->op, p[0], p[1], p[2], bs[1], bs[2], n);
}

static void binary_backward(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const binary_ctx *c = vctx;
    if (c->dtype == SL_F32) binary_backward_f32(c->op, c->which, p[0], p[1], p[2], p[3], bs, n);
    else binary_backward_f64(c->op, c->which, p[0], p[1], p[2], p[3], bs, n);
}

const sl__elementwise_kernels SL_ISA(sl__elementwise_kernels) = {unary_forward, unary_backward,
                                                                 binary_forward, binary_backward};
