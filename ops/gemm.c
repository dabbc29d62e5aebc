/* ops/gemm.c — shortlong's own f32 matrix product, for builds that target AVX-512.
 *
 * Why: OpenBLAS runs whichever kernels it was told to or picked, and they need not be the
 * machine's best. On issue 6's reference machine (AMD Zen 5, 512-bit FMA units) the environment
 * sets OPENBLAS_CORETYPE=Haswell: OpenBLAS runs its AVX2 kernels, about 120 GFLOP/s per core,
 * where this kernel runs at about 200. Left to choose, OpenBLAS 0.3.21 picks its Cooperlake
 * (AVX-512) kernels there, about 5-10% faster than this one. So the library uses this kernel
 * only when OpenBLAS runs kernels without AVX-512 on an AVX-512 build (sl__sgemm_enabled); the
 * training step is three quarters matrix products, so that choice is the step's biggest lever.
 *
 * How (the GotoBLAS / BLIS structure, reduced to what the library's products need):
 *   - b (k x n) is packed once per product into panels of NR = 64 columns, in blocks of KC
 *     rows of k: block by block, panel by panel, kc x NR floats each, zero-padded past n;
 *   - a is read in place: MR = 6 rows at a time, each k broadcast from wherever a keeps it
 *     (row-major a: 6 row streams; transposed a: 6 neighbours in one row);
 *   - the micro-kernel keeps an MR x NR block of c in 24 vector registers over one block of k
 *     (4 vectors of b, 6 broadcasts of a, 24 fused multiply-adds per step of k), then adds it
 *     to c or stores it. For a panel of b (64 KiB, in L2) it walks all the rows of its range.
 * Each element of c is summed over k in one fixed order (k blocks in order, k in order within
 * a block), so results do not depend on how rows are split over threads.
 */
#include "gemm.h"

#include "internal.h"

#include <cblas.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { MR = 6, NV = 4, NR = 16 * NV, KC = SL__SGEMM_KC };
_Static_assert((int)NR == (int)SL__SGEMM_NR, "gemm.h's panel width");

typedef float v16 __attribute__((vector_size(64)));

static inline v16 vload(const float *p)
{
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* Whether OpenBLAS's kernels for its current core use AVX-512 (the names its
 * openblas_get_corename() gives to the x86 cores it has AVX-512 kernels for). */
static bool openblas_has_avx512(void)
{
    static const char *const cores[] = {"skylakex", "cooperlake", "sapphirerapids"};
    const char *name = openblas_get_corename();
    char lower[64] = "";
    for (size_t i = 0; name && name[i] && i + 1 < sizeof lower; i++)
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

/* A packed operand lives for one product only, so one buffer per thread, kept between calls and
 * grown as needed, holds them all (in a step arena every product's copy would stay until the
 * arena is reset). Freed when the thread exits, like autograd's sort buffers. */
static _Thread_local float *scratch;
static _Thread_local size_t scratch_cap; /* floats */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *unused)
{
    (void)unused;
    sl__free(scratch);
    scratch = NULL;
    scratch_cap = 0;
}

static void scratch_free_at_exit(void) { scratch_free(NULL); }

static void scratch_init(void)
{
    pthread_key_create(&scratch_key, scratch_free);
    atexit(scratch_free_at_exit);
}

float *sl__sgemm_scratch(size_t floats)
{
    if (floats <= scratch_cap) return scratch;
    pthread_once(&scratch_once, scratch_init);
    pthread_setspecific(scratch_key, (void *)1); /* any non-NULL value runs the destructor */
    float *p = sl__aligned_alloc(64, sizeof(float) * floats);
    if (!p) return NULL;
    sl__free(scratch);
    scratch = p;
    scratch_cap = floats;
    return p;
}

int64_t sl__sgemm_panels(int64_t n) { return (n + NR - 1) / NR; }

size_t sl__sgemm_packed_floats(int64_t k, int64_t n)
{
    return (size_t)k * (size_t)sl__sgemm_panels(n) * NR;
}

void sl__sgemm_pack(float *bp, const float *b, bool trans, int64_t ldb, int64_t k, int64_t n,
                    int64_t p0, int64_t p1)
{
    int64_t panels = sl__sgemm_panels(n);
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        float *block = bp + k0 * panels * NR; /* the earlier blocks are KC deep */
        for (int64_t p = p0; p < p1; p++) {
            float *d = block + p * kc * NR; /* (kc, NR) */
            int64_t j0 = p * NR, w = n - j0 < NR ? n - j0 : NR;
            if (!trans) { /* row kk of the panel: b[k0 + kk, j0 .. j0 + w) */
                for (int64_t kk = 0; kk < kc; kk++) {
                    memcpy(d + kk * NR, b + (k0 + kk) * ldb + j0, sizeof(float) * (size_t)w);
                    memset(d + kk * NR + w, 0, sizeof(float) * (size_t)(NR - w));
                }
            } else { /* column j of the panel is b's stored row j0 + j, read along k */
                for (int64_t j = 0; j < NR; j++) {
                    const float *src = b + (j0 + j) * ldb + k0;
                    if (j < w)
                        for (int64_t kk = 0; kk < kc; kk++) d[kk * NR + j] = src[kk];
                    else
                        for (int64_t kk = 0; kk < kc; kk++) d[kk * NR + j] = 0;
                }
            }
        }
    }
}

/* c[0..mr) x [0..nr) (+)= the MR x NR block a (MR rows, kc deep; element (r, kk) at
 * a[r * sr + kk * sk]) @ the packed panel bp (kc x NR). */
static inline __attribute__((always_inline)) void
micro_kernel(int64_t kc, const float *a, int64_t sr, int64_t sk, const float *bp, float *c,
             int64_t ldc, bool acc, int64_t mr, int64_t nr)
{
    v16 t[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) t[r][v] = (v16){0};
    for (int64_t kk = 0; kk < kc; kk++) {
        v16 b[NV];
        for (int v = 0; v < NV; v++) b[v] = vload(bp + 16 * v);
        bp += NR;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            v16 ar = (v16){0} + a[r * sr];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) t[r][v] += ar * b[v];
        }
        a += sk;
    }
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) {
                float *cp = c + r * ldc + 16 * v;
                vstore(cp, acc ? vload(cp) + t[r][v] : t[r][v]);
            }
        return;
    }
    float tile[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) vstore(tile[r] + 16 * v, t[r][v]);
    for (int64_t r = 0; r < mr; r++)
        for (int64_t j = 0; j < nr; j++)
            c[r * ldc + j] = acc ? c[r * ldc + j] + tile[r][j] : tile[r][j];
}

/* The two layouts of a, each with its own addressing compiled in. */
static void kernel_rows(int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                        int64_t ldc, bool acc, int64_t mr, int64_t nr)
{
    micro_kernel(kc, a, lda, 1, bp, c, ldc, acc, mr, nr);
}

static void kernel_cols(int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                        int64_t ldc, bool acc, int64_t mr, int64_t nr)
{
    micro_kernel(kc, a, 1, lda, bp, c, ldc, acc, mr, nr);
}

void sl__sgemm_rows(const float *a, bool trans, int64_t lda, const float *bp, int64_t k,
                    int64_t n, float *c, int64_t ldc, int64_t r0, int64_t r1, bool accumulate)
{
    int64_t panels = sl__sgemm_panels(n);
    if (k == 0) { /* an empty sum */
        if (!accumulate)
            for (int64_t r = r0; r < r1; r++) memset(c + r * ldc, 0, sizeof(float) * (size_t)n);
        return;
    }
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        bool acc = accumulate || k0 > 0;
        const float *block = bp + k0 * panels * NR;
        for (int64_t p = 0; p < panels; p++) {
            int64_t j0 = p * NR, nr = n - j0 < NR ? n - j0 : NR;
            const float *panel = block + p * kc * NR;
            for (int64_t i = r0; i < r1; i += MR) {
                int64_t mr = r1 - i < MR ? r1 - i : MR;
                float *ci = c + i * ldc + j0;
                if (mr < MR) { /* the last rows: a copy padded with zero rows */
                    float part[MR * KC];
                    for (int64_t kk = 0; kk < kc; kk++)
                        for (int64_t r = 0; r < MR; r++)
                            part[kk * MR + r] =
                                r >= mr ? 0
                                : trans ? a[(k0 + kk) * lda + i + r]
                                        : a[(i + r) * lda + k0 + kk];
                    kernel_cols(kc, part, MR, panel, ci, ldc, acc, mr, nr);
                } else if (trans) {
                    kernel_cols(kc, a + k0 * lda + i, lda, panel, ci, ldc, acc, mr, nr);
                } else {
                    kernel_rows(kc, a + i * lda + k0, lda, panel, ci, ldc, acc, mr, nr);
                }
            }
        }
    }
}
