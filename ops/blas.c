/* ops/blas.c — the policy for matrix products: OpenBLAS's threads, the f32 engine, layouts.
 *
 * Which engine. OpenBLAS runs the kernels of the core it detects (or that OPENBLAS_CORETYPE
 * names, read once when it loads), and those need not be the machine's best: an OpenBLAS older
 * than the CPU falls back to kernels for an older core. The library's own f32 product (ops/gemm.c)
 * is an AVX-512 kernel; it is used where OpenBLAS runs kernels without AVX-512 on an AVX-512
 * build, and cblas everywhere else (BENCHMARKS.md has the measurements behind the rule). */
#include "blas.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

__attribute__((constructor)) static void blas_one_thread(void) { openblas_set_num_threads(1); }

const char *sl__blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

/* Whether OpenBLAS's kernels for its current core use AVX-512 (the names its
 * openblas_get_corename() gives to the x86 cores it has AVX-512 kernels for). */
static bool openblas_has_avx512(void)
{
    static const char *const cores[] = {"skylakex", "cooperlake", "sapphirerapids"};
    const char *name = sl__blas_core();
    char lower[64] = "";
    for (size_t i = 0; name[i] && i + 1 < sizeof lower; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    for (size_t i = 0; i < sizeof cores / sizeof *cores; i++)
        if (strstr(lower, cores[i])) return true;
    return false;
}

bool sl__sgemm_enabled(void)
{
#if defined(__AVX512F__)
    static int state; /* 0: not decided yet, 1: on, -1: off (a benign race: all agree) */
    if (!state) {
        const char *e = getenv("SL_SGEMM");
        if (e && !strcmp(e, "blas")) state = -1;
        else if (e && !strcmp(e, "kernel")) state = 1;
        else state = openblas_has_avx512() ? -1 : 1;
    }
    return state > 0;
#else
    return false;
#endif
}

bool sl__blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *trans,
                     int64_t *ld)
{
    if (rows == 0 || cols == 0) { /* never read */
        *trans = CblasNoTrans;
        *ld = cols > 1 ? cols : 1;
        return true;
    }
    if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols)) {
        *trans = CblasNoTrans;
        *ld = rows == 1 ? cols : rs;
    } else if ((rs == 1 || rows == 1) && (cols == 1 || cs >= rows)) {
        *trans = CblasTrans;
        *ld = cols == 1 ? rows : cs;
    } else {
        return false;
    }
    return *ld >= 1 && *ld <= INT_MAX;
}

bool sl__rows_stride(const sl_tensor *t, int64_t *rs)
{
    int64_t next = -1; /* the stride the next outer dim of size > 1 must have */
    *rs = t->ndim >= 2 ? t->strides[t->ndim - 2] : t->shape[0];
    for (int i = t->ndim - 2; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (next < 0) *rs = t->strides[i];
        else if (t->strides[i] != next) return false;
        next = t->strides[i] * t->shape[i];
    }
    return true;
}
