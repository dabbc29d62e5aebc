/* ops/layer_norm_isa.c — sl_layer_norm's kernels (layer_norm_kernels.h) for one SIMD level
 * (tensor/isa.h). */
#include "layer_norm.h"
#include "simd.h"

#include <math.h>

#define SL_KERNELS "layer_norm_kernels.h"
#include "instantiate.h"

static void forward(void *ctx, int64_t r0, int64_t r1)
{
    const layer_norm_job *j = ctx;
    if (j->dtype == SL_F32)
        layer_norm_forward_f32(j->x, j->w, j->b, j->y, j->mean, j->rstd, r0, r1, j->C, j->eps);
    else
        layer_norm_forward_f64(j->x, j->w, j->b, j->y, j->mean, j->rstd, r0, r1, j->C, j->eps);
}

static void backward(void *ctx, int64_t k0, int64_t k1)
{
    const layer_norm_job *j = ctx;
    for (int64_t k = k0; k < k1; k++) {
        int64_t r0 = k * j->block_rows;
        int64_t r1 = r0 + j->block_rows < j->rows ? r0 + j->block_rows : j->rows;
        double *dw = j->dw ? j->dw + k * j->C : NULL, *db = j->db ? j->db + k * j->C : NULL;
        if (dw) memset(dw, 0, sizeof(double) * (size_t)j->C);
        if (db) memset(db, 0, sizeof(double) * (size_t)j->C);
        if (j->dtype == SL_F32)
            layer_norm_backward_f32(j->x, j->w, j->g, j->mean, j->rstd, j->dx, dw, db, r0, r1,
                                    j->C);
        else
            layer_norm_backward_f64(j->x, j->w, j->g, j->mean, j->rstd, j->dx, dw, db, r0, r1,
                                    j->C);
    }
}

static void add_block_sums(sl_dtype dt, void *dst, const double *part, int64_t blocks, int64_t C)
{
    if (dt == SL_F32) add_block_sums_f32(dst, part, blocks, C);
    else add_block_sums_f64(dst, part, blocks, C);
}

const sl__layer_norm_kernels SL_ISA(sl__layer_norm_kernels) = {forward, backward, add_block_sums};
