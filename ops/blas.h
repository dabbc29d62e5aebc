/* ops/blas.h — the library's policy for matrix products, in one place (not installed): how many
 * threads OpenBLAS runs, which engine computes f32 products, and how a strided matrix is handed
 * to gemm without a copy. */
#ifndef SL_OPS_BLAS_H
#define SL_OPS_BLAS_H

#include "internal.h"

#include <cblas.h>

/* OpenBLAS runs on one thread, set when the library loads (before any product, the program's
 * own cblas calls included): products split over shortlong's own pool (tensor/pool.c), so the
 * process has one set of threads and none of them waits by spinning for cores another set
 * holds. */

/* Whether an f32 product whose output is rows x cols runs on shortlong's own kernel
 * (ops/gemm.c) rather than cblas_sgemm (ops/blas.c has the rule: the CPU's level, OpenBLAS's
 * core, a least number of rows, columns that fill the kernel's panels; SL_SGEMM=blas or
 * SL_SGEMM=kernel in the environment decides instead), and whether any does. Decided once per
 * process. */
bool sl__sgemm_use(int64_t rows, int64_t cols);
bool sl__sgemm_enabled(void);
/* The core OpenBLAS runs its kernels for ("Haswell", "SkylakeX", ...). */
const char *sl__blas_core(void);
/* The SIMD level of an OpenBLAS x86 core's kernels (SL__ISA_GENERIC for any it does not know to
 * use AVX2 or AVX-512), and the core to ask OpenBLAS for at a level (NULL: none). */
sl__isa_level sl__blas_core_level(const char *core);
const char *sl__blas_best_core(sl__isa_level level);

/* How gemm reads a rows x cols matrix with element strides (rs, cs): NoTrans with ld = rs when
 * its rows are contiguous, Trans with ld = cs when its columns are. The stride of a dim of size
 * 1 is never used, so it does not get in the way. False if neither (the matrix must be copied)
 * or ld is past BLAS's int range. */
bool sl__blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *trans,
                     int64_t *ld);

/* The stride that walks all of t's rows (every dim but the last, batch dims included) as one
 * dim, if one does: each row dim's stride is the next inner one's times its size. */
bool sl__rows_stride(const sl_tensor *t, int64_t *rs);

#endif
