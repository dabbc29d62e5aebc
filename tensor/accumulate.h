/* tensor/accumulate.h — what sl__accumulate_reduced (tensor.c) and its kernel
 * (accumulate_isa.c, compiled for every SIMD level) share. Not installed. */
#ifndef SL_TENSOR_ACCUMULATE_H
#define SL_TENSOR_ACCUMULATE_H

#include "internal.h"

typedef struct {
    sl_dtype dtype; /* of both operands */
} sl__acc_ctx;

typedef struct {
    /* One run of dst += src (sl__foreach over (dst, src); ctx: sl__acc_ctx): dst with stride 0
     * sums the run into one element, in double for f32. */
    sl__run_fn run;
} sl__accumulate_kernels;

SL_ISA_DECLARE(extern const sl__accumulate_kernels, sl__accumulate_kernels)

#endif
