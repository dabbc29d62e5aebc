/* ops/blas.c — the policy for matrix products: OpenBLAS's threads and kernels, the f32 engine,
 * layouts.
 *
 * OpenBLAS's kernels. A DYNAMIC_ARCH OpenBLAS (Debian's) runs the kernels of the core it
 * detects, or of the one OPENBLAS_CORETYPE names; a release older than the CPU may not know it
 * and fall back to an old core (SSE3 "Prescott" kernels on an AVX-512 CPU run at a fifth of the
 * rate). When the library loads, it compares the core OpenBLAS chose with the CPU's SIMD level
 * (tensor/cpu.c) and, if OpenBLAS fell below it and OPENBLAS_CORETYPE is not set, has OpenBLAS
 * choose again as if OPENBLAS_CORETYPE named the best core it has for that level (SkylakeX or
 * Cooperlake for AVX-512, Haswell for AVX2), through OpenBLAS's own re-initialisation entry
 * points (gotoblas_dynamic_quit, gotoblas_dynamic_init). SL_BLAS_CORE=keep leaves OpenBLAS's
 * choice alone; SL_BLAS_CORE=<core name> makes that choice instead (for comparisons).
 *
 * The f32 engine. f32 products of enough rows and columns run on the library's own kernel for
 * the CPU's level (ops/gemm.c) where OpenBLAS still runs kernels below that level (it could not
 * be switched, or OPENBLAS_CORETYPE pins an old core: 8 rows or more), and on AVX-512 CPUs even
 * where OpenBLAS runs its AVX-512 kernels (128 rows or more, columns close to a multiple of 64,
 * the kernel's panel): there the kernel, which packs its operand once per product and writes c
 * without a first zeroing pass, made the GPT step about 6% faster than cblas_sgemm (Xeon,
 * BENCHMARKS.md). Everywhere else, and for smaller or narrower products, cblas_sgemm; on AVX2
 * CPUs OpenBLAS's Haswell and Zen kernels are faster than the library's.
 * SL_SGEMM=blas (cblas always) or SL_SGEMM=kernel (the kernel for every f32 product)
 * decides instead. BENCHMARKS.md has the measurements behind the rule. */
#include "blas.h"
#include "gemm.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's dynamic-architecture entry points; absent (NULL) in a build without them. */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

/* The SIMD level an OpenBLAS x86 core's kernels use. */
sl__isa_level sl__blas_core_level(const char *core)
{
    static const char *const avx512[] = {"skylakex", "cooperlake", "sapphirerapids"};
    static const char *const avx2[] = {"haswell", "zen"};
    char lower[64] = "";
    for (size_t i = 0; core && core[i] && i + 1 < sizeof lower; i++)
        lower[i] = (char)tolower((unsigned char)core[i]);
    for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; i++)
        if (!strcmp(lower, avx512[i])) return SL__ISA_AVX512;
    for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++)
        if (!strcmp(lower, avx2[i])) return SL__ISA_AVX2;
    return SL__ISA_GENERIC;
}

const char *sl__blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

static char blas_note[160]; /* how the core was chosen, for sl_matmul_engine */

const char *sl__blas_best_core(sl__isa_level level)
{
#if defined(__x86_64__)
    if (level == SL__ISA_AVX512)
        return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    if (level == SL__ISA_AVX2) return "Haswell";
#endif
    (void)level;
    return NULL;
}

static void choose_core(void)
{
    const char *before = sl__blas_core(), *keep = getenv("SL_BLAS_CORE");
    const char *pinned = getenv("OPENBLAS_CORETYPE");
    if (keep && !strcmp(keep, "keep")) {
        snprintf(blas_note, sizeof blas_note, "OpenBLAS's choice, kept (SL_BLAS_CORE=keep)");
        return;
    }
    const char *want = keep && *keep ? keep : NULL;
    if (!want && pinned) {
        snprintf(blas_note, sizeof blas_note, "OPENBLAS_CORETYPE=%s", pinned);
        return;
    }
    if (!want && sl__blas_core_level(before) < sl__isa()) want = sl__blas_best_core(sl__isa());
    if (!want) {
        snprintf(blas_note, sizeof blas_note, "OpenBLAS's choice");
        return;
    }
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) {
        snprintf(blas_note, sizeof blas_note, "OpenBLAS's choice (%s wanted: this OpenBLAS "
                 "cannot switch)", want);
        return;
    }
    char saved[64] = "";
    if (pinned) snprintf(saved, sizeof saved, "%s", pinned);
    setenv("OPENBLAS_CORETYPE", want, 1); /* what gotoblas_dynamic_init reads */
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    if (saved[0]) setenv("OPENBLAS_CORETYPE", saved, 1);
    else unsetenv("OPENBLAS_CORETYPE"); /* the program's children see what it was given */
    snprintf(blas_note, sizeof blas_note, "switched from %s%s", before,
             keep && *keep ? " (SL_BLAS_CORE)" : "");
}

/* At load, before any product (the program's own cblas calls included): OpenBLAS on one thread,
 * since products split over shortlong's pool (tensor/pool.c), so the process has one set of
 * threads and none of them waits by spinning for cores another set holds; then its kernels. */
__attribute__((constructor)) static void blas_setup(void)
{
    openblas_set_num_threads(1);
    choose_core();
}

/* Which f32 products run on the library's own kernel: those with at least min_rows rows of
 * output (0: none), and whose columns, padded to whole panels of the kernel, are at most
 * max_pad times their number. Below min_rows, packing b (a weight, say: the kernel packs its
 * whole operand for every product) costs more than the product, and OpenBLAS's small-product
 * paths win: a one-row product (a decoding step) took 13-16 us through cblas against 270-460 us
 * on the kernel. Narrow products waste the padded columns: 10 columns, 64 computed, ran at half
 * cblas's rate, 32 at 0.55-0.6, 100 (128 computed) at 0.85, 64 and 128 at 1.15-1.25
 * (bench_sgemm's shapes edited, on the Xeon of BENCHMARKS.md). */
typedef struct {
    int64_t min_rows;
    double max_pad;
} kernel_rule;

static kernel_rule the_rule;
static pthread_once_t rule_once = PTHREAD_ONCE_INIT;

static void decide_rule(void)
{
    const char *e = getenv("SL_SGEMM");
    sl__isa_level level = sl__sgemm_level();
    the_rule = (kernel_rule){0, 0}; /* cblas for every product */
    if (!level || (e && !strcmp(e, "blas"))) return;
    if (e && !strcmp(e, "kernel")) the_rule = (kernel_rule){1, INFINITY};
    else if (sl__blas_core_level(sl__blas_core()) < sl__isa())
        the_rule = (kernel_rule){8, 2.0}; /* OpenBLAS on kernels below the CPU's level: SSE3
                                           * on AVX-512 runs at a fifth of the rate */
    else if (level == SL__ISA_AVX512)
        the_rule = (kernel_rule){128, 1.125}; /* OpenBLAS on its AVX-512 kernels */
}

/* Decided once (both fields together: threads must never see half of it, or the same product
 * could go to either engine, and its bits with it). */
static kernel_rule rule(void)
{
    pthread_once(&rule_once, decide_rule);
    return the_rule;
}

bool sl__sgemm_enabled(void) { return rule().min_rows > 0; }

bool sl__sgemm_use(int64_t rows, int64_t cols)
{
    kernel_rule r = rule();
    if (r.min_rows <= 0 || rows < r.min_rows || cols < 1) return false;
    /* the columns the kernel computes: whole panels (a panel of one row of k holds one) */
    double padded = (double)sl__sgemm_panels(cols) * (double)sl__sgemm_packed_floats(1, 1);
    return padded <= r.max_pad * (double)cols;
}

const char *sl_matmul_engine(void)
{
    static char buf[320];
    kernel_rule r = rule();
    if (r.min_rows > 1)
        snprintf(buf, sizeof buf,
                 "shortlong %s kernel for f32 products of %lld rows or more (and not too narrow), "
                 "OpenBLAS %s for the others (%s)",
                 sl__isa_name(sl__sgemm_level()), (long long)r.min_rows, sl__blas_core(),
                 blas_note);
    else if (r.min_rows == 1)
        snprintf(buf, sizeof buf, "shortlong %s kernel for f32 (OpenBLAS %s for f64; %s)",
                 sl__isa_name(sl__sgemm_level()), sl__blas_core(), blas_note);
    else
        snprintf(buf, sizeof buf, "OpenBLAS %s (%s)", sl__blas_core(), blas_note);
    return buf;
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
