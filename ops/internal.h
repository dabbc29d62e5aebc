/* ops/internal.h — helpers shared by the ops, and by the modules above them. Not installed.
 *
 * Conventions for op writers:
 *   - check arguments first with SL_CHECK_TENSOR / sl__check_float / sl__check_same_dtype, and
 *     return NULL through SL_FAIL with a message "<op>: <what>: <shapes>";
 *   - allocate outputs with sl__new (contiguous, current arena, uninitialised);
 *   - kernels take plain pointers and sizes; write them once over a type T in a kernel header
 *     (ops/<op>_kernels.h), functions named FN(name), and instantiate it for f32 and f64 with
 *     ops/instantiate.h, never by converting through double at run time; where the f32 path
 *     is vectorised by hand, the header branches on T_IS_F32 and uses ops/simd.h;
 *   - a hot kernel header is instantiated in <op>_isa.c, compiled once per SIMD level
 *     (tensor/isa.h): <op>.h declares the table of one level's kernels (and the job they
 *     read), <op>_isa.c defines it, <op>.c calls SL_ISA_PICK's;
 *   - read strided or broadcast operands run by run with sl__foreach_broadcast
 *     (tensor/internal.h) rather than a loop of one's own;
 *   - in the .c file: the kernels' callers, the backward with its math in a comment above it,
 *     then the op itself, which checks, runs the forward and records the tape node.
 */
#ifndef SL_OPS_INTERNAL_H
#define SL_OPS_INTERNAL_H

#include "../autograd/internal.h"
#include <shortlong/ops.h>

#include <string.h>

/* Copies n bytes, a multiple of 4, in 32-byte pieces (a fixed-size memcpy compiles to one load
 * and one store): for rows a head dim long (128 bytes for 32 floats), too short for a call to
 * memcpy per row to pay. */
static inline void sl__copy_row(char *restrict dst, const char *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        char piece[32];
        memcpy(piece, src + i, 32);
        memcpy(dst + i, piece, 32);
    }
    for (; i < n; i += 4) memcpy(dst + i, src + i, 4);
}

#endif
