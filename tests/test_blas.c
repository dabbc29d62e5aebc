/* ops/blas.c's policy: which SIMD level OpenBLAS's cores use, which core the library asks for,
 * what this process ended up with, and that a product on it is right. Run twice by CTest: as it
 * comes, and with SL_BLAS_CORE naming a core (tests/CMakeLists.txt), which must then be the
 * core OpenBLAS runs. */
#include "testutil.h"

#include "../ops/blas.h" /* internal: the policy itself */
#include "../ops/gemm.h" /* internal: the level of the kernel it chooses */

#include <stdlib.h>
#include <string.h>

START_TEST(core_levels)
{
    ck_assert_int_eq(sl__blas_core_level("SkylakeX"), SL__ISA_AVX512);
    ck_assert_int_eq(sl__blas_core_level("Cooperlake"), SL__ISA_AVX512);
    ck_assert_int_eq(sl__blas_core_level("SapphireRapids"), SL__ISA_AVX512);
    ck_assert_int_eq(sl__blas_core_level("Haswell"), SL__ISA_AVX2);
    ck_assert_int_eq(sl__blas_core_level("Zen"), SL__ISA_AVX2);
    ck_assert_int_eq(sl__blas_core_level("Prescott"), SL__ISA_GENERIC);
    ck_assert_int_eq(sl__blas_core_level("Sandybridge"), SL__ISA_GENERIC);
    ck_assert_int_eq(sl__blas_core_level("unknown"), SL__ISA_GENERIC);
    ck_assert_int_eq(sl__blas_core_level(NULL), SL__ISA_GENERIC);
    /* the cores asked for have the level they are asked for at */
    ck_assert_int_eq(sl__blas_core_level(sl__blas_best_core(SL__ISA_AVX2)), SL__ISA_AVX2);
    ck_assert_int_eq(sl__blas_core_level(sl__blas_best_core(SL__ISA_AVX512)), SL__ISA_AVX512);
    ck_assert_ptr_null(sl__blas_best_core(SL__ISA_GENERIC));
}
END_TEST

/* Whatever the machine: OpenBLAS runs kernels at the CPU's level (switched there if it fell
 * below), unless the environment pinned a core; and the engine report says what runs. */
START_TEST(process_runs_the_best_core)
{
    const char *forced = getenv("SL_BLAS_CORE"), *pinned = getenv("OPENBLAS_CORETYPE");
    const char *core = sl__blas_core(), *engine = sl_matmul_engine();
    ck_assert_msg(strstr(engine, core) != NULL, "engine '%s' does not name core %s", engine, core);
    if (forced && strcmp(forced, "keep")) {
        ck_assert_msg(!strcasecmp(core, forced), "SL_BLAS_CORE=%s but OpenBLAS runs %s", forced,
                      core);
        ck_assert_msg(strstr(engine, "switched from") != NULL, "%s", engine);
    } else if (!pinned && !forced) {
        ck_assert_msg(sl__blas_core_level(core) >= sl__isa(),
                      "OpenBLAS runs %s (level %s) on a CPU at %s", core,
                      sl__isa_name(sl__blas_core_level(core)), sl_cpu_isa());
    }
    /* the f32 engine: the library's kernel for products of enough rows on AVX-512 (or where
     * OpenBLAS runs kernels below the CPU's level), cblas otherwise and for one row */
    const char *e = getenv("SL_SGEMM");
    bool below = sl__blas_core_level(core) < sl__isa(),
         avx512 = sl__sgemm_level() == SL__ISA_AVX512;
    if (e && !strcmp(e, "blas")) {
        ck_assert(!sl__sgemm_enabled() && !sl__sgemm_use(1 << 20, 1024));
    } else if (e && !strcmp(e, "kernel")) {
        ck_assert(sl__sgemm_enabled() == (sl__sgemm_level() != SL__ISA_GENERIC));
        ck_assert(sl__sgemm_use(1, 1) == sl__sgemm_enabled());
    } else {
        bool on = sl__sgemm_level() != SL__ISA_GENERIC && (below || avx512);
        ck_assert_msg(sl__sgemm_enabled() == on, "kernel %s, OpenBLAS %s on a CPU at %s: %s",
                      sl__isa_name(sl__sgemm_level()), core, sl_cpu_isa(), engine);
        /* rows: a decoding step's one row stays on cblas */
        ck_assert(!sl__sgemm_use(1, 256) && !sl__sgemm_use(7, 256));
        ck_assert(sl__sgemm_use(128, 256) == on && sl__sgemm_use(2048, 1024) == on);
        ck_assert(sl__sgemm_use(8, 256) == (on && below));
        /* columns: a 10-wide head pads the kernel's panels too much for it, at any level; 64
         * and its multiples fill them */
        ck_assert(!sl__sgemm_use(2048, 10) && !sl__sgemm_use(2048, 0));
        ck_assert(sl__sgemm_use(2048, 64) == on && sl__sgemm_use(2048, 576) == on);
        if (avx512 && !below) ck_assert(!sl__sgemm_use(2048, 32) && !sl__sgemm_use(2048, 100));
        ck_assert_msg(!on || strstr(engine, "rows or more") != NULL, "%s", engine);
    }
    /* the product is right on whatever runs */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, -1, 2, 0.5f, 3};
    sl_tensor *y = sl_matmul(sl_from_data(SL_F32, sl_shape(2, 3), a),
                             sl_from_data(SL_F32, sl_shape(3, 2), b));
    const double want[4] = {1 * 1 + 2 * -1 + 3 * 0.5, 1 * 0 + 2 * 2 + 3 * 3,
                            4 * 1 + 5 * -1 + 6 * 0.5, 4 * 0 + 5 * 2 + 6 * 3};
    for (int i = 0; i < 4; i++) ck_assert_double_eq(sl_get(y, i), want[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("blas");
    TCase *tc = tcase_create("blas");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, core_levels);
    tu_add_test(s, tc, process_runs_the_best_core);
    return tu_run(s);
}
