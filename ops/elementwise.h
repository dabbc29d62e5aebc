/* ops/elementwise.h — what the elementwise ops (elementwise.c) and their kernels
 * (elementwise_isa.c, compiled for every SIMD level) share: the ops, the jobs the kernels read
 * and the table of one level's kernels. Not installed. */
#ifndef SL_OPS_ELEMENTWISE_H
#define SL_OPS_ELEMENTWISE_H

#include "internal.h"

typedef enum {
    U_NEG, U_ADDS, U_MULS, U_POW, U_EXP, U_LOG, U_SQRT, U_TANH, U_SIGMOID, U_RELU, U_GELU_ERF,
    U_GELU_TANH, U_COUNT
} unary_op;

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_COUNT } binary_op;

/* A unary op over contiguous operands: forward out = op(x); backward out (the input's gradient)
 * += g * op'(x), from x, the forward output y and the gradient g. */
typedef struct {
    unary_op op;
    sl_dtype dtype;
    const void *x, *y, *g;
    void *out;
    double p; /* the scalar of add_scalar, mul_scalar, pow_scalar */
} unary_job;

/* A binary op's runs (sl__foreach): which input a backward run is for (0: a, 1: b). */
typedef struct {
    binary_op op;
    sl_dtype dtype;
    int which;
} binary_ctx;

typedef struct {
    /* Elements [b, e) of a unary_job (ctx). */
    sl_range_fn unary_forward, unary_backward;
    /* Runs of a binary_ctx (ctx): forward over (y, a, b), y contiguous; backward over
     * (d, g, a, b), d the gradient of input `which` (stride 0 along a broadcast dim: summed). */
    sl__run_fn binary_forward, binary_backward;
} sl__elementwise_kernels;

SL_ISA_DECLARE(extern const sl__elementwise_kernels, sl__elementwise_kernels)

#endif
