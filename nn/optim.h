/* nn/optim.h — what the optimizers (optim.c) and their update kernels (optim_isa.c, compiled
 * for every SIMD level) share: the arguments of an update and the table of one level's
 * kernels. Not installed. */
#ifndef SL_NN_OPTIM_H
#define SL_NN_OPTIM_H

#include "internal.h"

typedef struct {
    void *p, *g, *m, *v; /* parameter, gradient, first / second moment (or momentum buffer) */
    double lr, decay;    /* decay: the factor (1 - lr * wd) for AdamW, wd for SGD */
    double beta1, beta2, eps, step_size, bc2_sqrt; /* AdamW */
    double momentum;                               /* SGD; 0 means no buffer */
} sl__update_args;

typedef struct {
    /* Elements [begin, end) of one parameter's update (ctx: sl__update_args), in place. */
    sl_range_fn adamw_f32, adamw_f64, sgd_f32, sgd_f64;
    /* The index in [0, n) of the first element of p (n elements of dtype) that is Inf or NaN,
     * or -1. */
    int64_t (*first_nonfinite)(sl_dtype dtype, const void *p, int64_t n);
} sl__optim_kernels;

SL_ISA_DECLARE(extern const sl__optim_kernels, sl__optim_kernels)

#endif
