/* ops/gemm.c — which level's f32 kernel (ops/gemm_isa.c) runs here, and its entry points.
 * Where it is used instead of cblas_sgemm is ops/blas.c's decision (sl__sgemm_use). */
#include "gemm.h"

SL_ISA_DECLARE(extern const sl__sgemm_kernel, sl__sgemm_kernel)

static const sl__sgemm_kernel *kernel(void)
{
    static const sl__sgemm_kernel *k; /* a benign race: every thread picks the same */
    if (!k) k = SL_ISA_PICK(sl__sgemm_kernel);
    return k;
}

sl__isa_level sl__sgemm_level(void) { return kernel()->nr ? kernel()->level : SL__ISA_GENERIC; }

float *sl__sgemm_scratch(size_t floats)
{
    return sl__scratch(SL__SCRATCH_GEMM, sizeof(float) * floats);
}

int64_t sl__sgemm_panels(int64_t n) { return (n + kernel()->nr - 1) / kernel()->nr; }

size_t sl__sgemm_packed_floats(int64_t k, int64_t n)
{
    return (size_t)k * (size_t)sl__sgemm_panels(n) * (size_t)kernel()->nr;
}

void sl__sgemm_pack(float *bp, const float *b, bool trans, int64_t ldb, int64_t k, int64_t n,
                    int64_t p0, int64_t p1)
{
    kernel()->pack(bp, b, trans, ldb, k, n, p0, p1);
}

void sl__sgemm_rows(const float *a, bool trans, int64_t lda, const float *bp, int64_t k,
                    int64_t n, float *c, int64_t ldc, int64_t r0, int64_t r1, bool accumulate)
{
    kernel()->rows(a, trans, lda, bp, k, n, c, ldc, r0, r1, accumulate);
}
