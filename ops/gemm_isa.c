/* ops/gemm_isa.c — shortlong's own f32 matrix product, compiled for each SIMD level (ops/isa.h):
 * AVX-512 and AVX2 (the generic level has none; cblas is used there).
 *
 * Where it is used instead of cblas_sgemm is ops/blas.c's decision (sl__sgemm_use).
 *
 * How (the GotoBLAS / BLIS structure, reduced to what the library's products need):
 *   - b (k x n) is packed once per product into panels of NR columns (64 with AVX-512, 16 with
 *     AVX2), in blocks of KC rows of k: block by block, panel by panel, kc x NR floats each,
 *     zero-padded past n;
 *   - a goes MR = 6 rows at a time, each k broadcast from 6 rows of a block of k: read in
 *     place when a is row-major (6 row streams), copied first into 6-wide rows when a is
 *     transposed (6 neighbours in one row of a, a row apart, would all fall in one set of L1
 *     whenever a's rows are a multiple of 4 KiB: the copy is one pass over a per block);
 *   - the micro-kernel keeps an MR x NR block of c in vector registers over one block of k
 *     (AVX-512: 6 x 4 vectors of 16 in 24 of its 32 registers, 4 vectors of b, 6 broadcasts of
 *     a; AVX2: 6 x 2 vectors of 8 in 12 of its 16), then adds it to c or stores it;
 *   - for each block of k and each column block of b (NCP panels: 512 columns at AVX-512, 256 at
 *     AVX2, the kc x 512 floats in L2), every 6 rows of a run across all the block's panels
 *     while those rows stay in L1. (Walking all the rows for one panel instead, as before,
 *     read a from L2 again for every panel: about 10% slower at the GPT step's shapes.)
 * Each element of c is summed over k in one fixed order (k blocks in order, k in order within
 * a block), so results do not depend on how rows are split over threads.
 */
#include "gemm.h"
#include "simd.h"

#include <string.h>

#if SL_VEC_BYTES == 64
enum { NV = 4 }; /* vectors of c per row in the register block */
#else
enum { NV = 2 };
#endif
/* NCP: panels per column block, the kc x NCP NR floats of b (512 KiB at AVX-512, 256 at AVX2)
 * that every row block of a passes over while they stay in L2 */
enum { MR = 6, VL = SL_VF, NR = NV * VL, KC = SL__SGEMM_KC, NCP = (NV == 4 ? 512 : 256) / NR };
typedef sl_vf vf;

#if SL_VEC_BYTES >= 32 /* the generic level has no kernel of its own */

static void pack(float *bp, const float *b, bool trans, int64_t ldb, int64_t k, int64_t n,
                 int64_t p0, int64_t p1)
{
    int64_t panels = (n + NR - 1) / NR;
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        float *block = bp + k0 * panels * NR; /* the earlier blocks are KC deep */
        for (int64_t p = p0; p < p1; p++) {
            float *d = block + p * kc * NR; /* (kc, NR) */
            int64_t j0 = p * NR, w = n - j0 < NR ? n - j0 : NR;
            if (!trans && w == NR) { /* row kk of the panel: b[k0 + kk, j0 .. j0 + NR) */
                for (int64_t kk = 0; kk < kc; kk++) /* in vectors (libc's memcpy per row: 2x) */
                    for (int v = 0; v < NV; v++)
                        sl_vf_store(d + kk * NR + VL * v,
                                    sl_vf_load(b + (k0 + kk) * ldb + j0 + VL * v));
            } else if (!trans) { /* the last panel: zeros past n */
                for (int64_t kk = 0; kk < kc; kk++) {
                    memcpy(d + kk * NR, b + (k0 + kk) * ldb + j0, sizeof(float) * (size_t)w);
                    memset(d + kk * NR + w, 0, sizeof(float) * (size_t)(NR - w));
                }
            } else { /* column j of the panel is b's stored row j0 + j, read along k */
                /* in 8 x 8 tiles: 8 rows of b are 8 lines of L1 at any ldb, and the tile's 8
                 * rows of d are written while in L1 (column by column over the whole panel,
                 * each store went to another line of a panel larger than L1) */
                for (int64_t kb = 0; kb < kc; kb += 8) {
                    int64_t ke = kc - kb < 8 ? kc : kb + 8;
                    for (int64_t jb = 0; jb < NR; jb += 8)
                        for (int64_t j = jb; j < jb + 8; j++) {
                            if (j >= w) { /* past n: zeros */
                                for (int64_t kk = kb; kk < ke; kk++) d[kk * NR + j] = 0;
                                continue;
                            }
                            const float *src = b + (j0 + j) * ldb + k0;
                            for (int64_t kk = kb; kk < ke; kk++) d[kk * NR + j] = src[kk];
                        }
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
    vf t[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) t[r][v] = sl_vf_splat(0);
    for (int64_t kk = 0; kk < kc; kk++) {
        vf b[NV];
        for (int v = 0; v < NV; v++) b[v] = sl_vf_load(bp + VL * v);
        bp += NR;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            vf ar = sl_vf_splat(a[r * sr]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) t[r][v] += ar * b[v];
        }
        a += sk;
    }
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) {
                float *cp = c + r * ldc + VL * v;
                sl_vf_store(cp, acc ? sl_vf_load(cp) + t[r][v] : t[r][v]);
            }
        return;
    }
    float tile[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) sl_vf_store(tile[r] + VL * v, t[r][v]);
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

static void rows(const float *a, bool trans, int64_t lda, const float *bp, int64_t k, int64_t n,
                 float *c, int64_t ldc, int64_t r0, int64_t r1, bool accumulate)
{
    int64_t panels = (n + NR - 1) / NR;
    if (k == 0) { /* an empty sum */
        if (!accumulate)
            for (int64_t r = r0; r < r1; r++) memset(c + r * ldc, 0, sizeof(float) * (size_t)n);
        return;
    }
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        bool acc = accumulate || k0 > 0;
        const float *block = bp + k0 * panels * NR;
        for (int64_t q0 = 0; q0 < panels; q0 += NCP) {
            int64_t q1 = panels - q0 < NCP ? panels : q0 + NCP;
            for (int64_t i = r0; i < r1; i += MR) {
                int64_t mr = r1 - i < MR ? r1 - i : MR;
                /* a's MR rows over this block of k, for every panel of the column block: in
                 * place when a is row-major, else (and for the last rows, padded with zero
                 * rows) copied once into MR-wide rows of k */
                float part[MR * KC] __attribute__((aligned(64)));
                if (mr == MR && trans)
                    for (int64_t kk = 0; kk < kc; kk++)
                        memcpy(part + kk * MR, a + (k0 + kk) * lda + i, sizeof(float) * MR);
                else if (mr < MR)
                    for (int64_t kk = 0; kk < kc; kk++)
                        for (int64_t r = 0; r < MR; r++)
                            part[kk * MR + r] = r >= mr ? 0
                                                : trans ? a[(k0 + kk) * lda + i + r]
                                                        : a[(i + r) * lda + k0 + kk];
                for (int64_t p = q0; p < q1; p++) {
                    int64_t j0 = p * NR, nr = n - j0 < NR ? n - j0 : NR;
                    const float *panel = block + p * kc * NR;
                    float *ci = c + i * ldc + j0;
                    if (mr < MR || trans) kernel_cols(kc, part, MR, panel, ci, ldc, acc, mr, nr);
                    else kernel_rows(kc, a + i * lda + k0, lda, panel, ci, ldc, acc, mr, nr);
                }
            }
        }
    }
}

const sl__sgemm_kernel SL_ISA(sl__sgemm_kernel) = {
    SL_VEC_BYTES == 64 ? SL__ISA_AVX512 : SL__ISA_AVX2, NR, pack, rows};
#else /* cblas at the generic level */
const sl__sgemm_kernel SL_ISA(sl__sgemm_kernel) = {SL__ISA_GENERIC, 0, NULL, NULL};
#endif
