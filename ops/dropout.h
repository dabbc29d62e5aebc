/* ops/dropout.h — what sl_dropout (dropout.c) and its kernels (dropout_isa.c, compiled for
 * every SIMD level) share: the table of one level's kernels. Not installed. */
#ifndef SL_OPS_DROPOUT_H
#define SL_OPS_DROPOUT_H

#include "internal.h"

/* n contiguous elements of dtype dt; keep holds one byte per element. */
typedef struct {
    /* y = keep ? x * scale : 0 */
    void (*forward)(sl_dtype dt, const void *x, const uint8_t *keep, double scale, void *y,
                    int64_t n);
    /* gx += keep ? g * scale : 0 */
    void (*backward)(sl_dtype dt, const void *g, const uint8_t *keep, double scale, void *gx,
                     int64_t n);
} sl__dropout_kernels;

SL_ISA_DECLARE(extern const sl__dropout_kernels, sl__dropout_kernels)

#endif
