/* ops/gemm.h — shortlong's own f32 matrix product, for CPUs with AVX2 or AVX-512 (not
 * installed). ops/blas.c decides where it is used; ops/gemm_isa.c says how it works.
 *
 * A product c = a @ b runs in two steps: b (k x n) is packed once into column panels
 * (sl__sgemm_pack, which can be split over threads by panel), then any rows of c are computed
 * from a, read in place, and the packed b (sl__sgemm_rows, which can be split over threads by
 * rows). Matrices are row-major: element (i, j) of a matrix with leading dimension ld is at
 * p[i * ld + j], or at p[j * ld + i] when it is passed as transposed. */
#ifndef SL_OPS_GEMM_H
#define SL_OPS_GEMM_H

#include "internal.h"

/* The inner dim is processed in blocks of this many: a packed b can be cut along k at any
 * multiple of it (the packed rows from k0 on are at sl__sgemm_packed_floats(k0, n)). */
enum { SL__SGEMM_KC = 256 };

/* One level's kernel (ops/gemm_isa.c): its panel width and entry points; nr is 0 at a level
 * without a kernel of its own. */
typedef struct {
    sl__isa_level level;
    int nr; /* columns per packed panel */
    void (*pack)(float *bp, const float *b, bool trans, int64_t ldb, int64_t k, int64_t n,
                 int64_t p0, int64_t p1);
    void (*rows)(const float *a, bool trans, int64_t lda, const float *bp, int64_t k, int64_t n,
                 float *c, int64_t ldc, int64_t r0, int64_t r1, bool accumulate);
} sl__sgemm_kernel;

/* The level of the kernel the running CPU gets (AVX2 or AVX-512), or SL__ISA_GENERIC when it
 * has none (the functions below must not be called then). */
sl__isa_level sl__sgemm_level(void);

/* Column panels of a packed (k x n) b, and the floats the packed b takes. */
int64_t sl__sgemm_panels(int64_t n);
size_t sl__sgemm_packed_floats(int64_t k, int64_t n);

/* Packs panels [p0, p1) of b (k x n, transposed or not, leading dimension ldb) into bp, which
 * holds sl__sgemm_packed_floats(k, n) floats. */
void sl__sgemm_pack(float *bp, const float *b, bool trans, int64_t ldb, int64_t k, int64_t n,
                    int64_t p0, int64_t p1);

/* The calling thread's buffer for a packed operand (its SL__SCRATCH_GEMM scratch): at least
 * `floats` floats, valid until the thread's next call. NULL if it cannot grow (no error is
 * set: callers then use cblas). */
float *sl__sgemm_scratch(size_t floats);

/* Rows [r0, r1) of c (leading dimension ldc) = a @ b, plus c's old values if accumulate; a is
 * (m x k), transposed or not (lda), b (k x n) packed in bp. Every element of c is a sum over k
 * in a fixed order, whatever rows a call covers. */
void sl__sgemm_rows(const float *a, bool trans, int64_t lda, const float *bp, int64_t k,
                    int64_t n, float *c, int64_t ldc, int64_t r0, int64_t r1, bool accumulate);

#endif
