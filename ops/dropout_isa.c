/* ops/dropout_isa.c — sl_dropout's kernels (dropout_kernels.h) for one SIMD level
 * (tensor/isa.h). */
#include "dropout.h"

#define SL_KERNELS "dropout_kernels.h"
#include "instantiate.h"

static void forward(sl_dtype dt, const void *x, const uint8_t *keep, double scale, void *y,
                    int64_t n)
{
    if (dt == SL_F32) dropout_forward_f32(x, keep, (float)scale, y, n);
    else dropout_forward_f64(x, keep, scale, y, n);
}

static void backward(sl_dtype dt, const void *g, const uint8_t *keep, double scale, void *gx,
                     int64_t n)
{
    if (dt == SL_F32) dropout_backward_f32(g, keep, (float)scale, gx, n);
    else dropout_backward_f64(g, keep, scale, gx, n);
}

const sl__dropout_kernels SL_ISA(sl__dropout_kernels) = {forward, backward};
