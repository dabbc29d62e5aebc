/* ops/reduce_isa.c — the reduction kernels (reduce_kernels.h) for one SIMD level
 * (tensor/isa.h). */
#include "reduce.h"

#include <math.h>

#define SL_KERNELS "reduce_kernels.h"
#include "instantiate.h"

static void rows(void *ctx, int64_t b, int64_t e)
{
    const reduce_job *j = ctx;
    const plan *p = j->p;
    int64_t n = p->group;
    bool f32 = p->rows.dtype == SL_F32;
    size_t es = sl_dtype_size(p->rows.dtype);
    for (int64_t o = b; o < e; o++) {
        const void *row = (const char *)j->x + (size_t)(o * n) * es;
        const float *xf = row;
        const double *xd = row;
        double v;
        if (picks_one(j->op)) {
            bool max = j->op == R_MAX || j->op == R_ARGMAX;
            int64_t i = max ? (f32 ? row_argmax_f32(xf, n) : row_argmax_f64(xd, n))
                            : (f32 ? row_argmin_f32(xf, n) : row_argmin_f64(xd, n));
            if (j->op == R_ARGMAX || j->op == R_ARGMIN) { /* one axis: i is the index along it */
                ((int32_t *)j->y)[o] = (int32_t)i;
                continue;
            }
            v = f32 ? xf[i] : xd[i];
            if (j->arg)
                j->arg[o] = unravel_dot(o, 0, p->n_kept, p->rows.shape, p->flat_strides) +
                            unravel_dot(i, p->n_kept, p->rows.ndim, p->rows.shape, p->flat_strides);
        } else {
            v = f32 ? row_sum_f32(xf, n) : row_sum_f64(xd, n);
            if (j->op != R_SUM) v = n ? v / (double)n : NAN;
            if (j->op == R_VAR) {
                if (j->mean) j->mean[o] = v;
                v = (f32 ? row_sq_dev_f32(xf, n, v) : row_sq_dev_f64(xd, n, v)) / j->denom;
            }
        }
        if (f32) ((float *)j->y)[o] = (float)v;
        else ((double *)j->y)[o] = v;
    }
}

const sl__reduce_kernels SL_ISA(sl__reduce_kernels) = {rows, spread_run_f32, spread_run_f64,
                                                       var_grad_run_f32, var_grad_run_f64};
