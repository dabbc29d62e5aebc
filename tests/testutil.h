/* tests/testutil.h — helpers shared by the Check suites. */
#ifndef SL_TESTUTIL_H
#define SL_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <shortlong/shortlong.h>

/* |a - b| <= atol + rtol * |b|, with both values in the failure message. */
#define ck_assert_close(a, b, rtol, atol)                                                        \
    do {                                                                                         \
        double a_ = (a), b_ = (b);                                                               \
        ck_assert_msg(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_), "%s = %.17g, %s = %.17g", #a,   \
                      a_, #b, b_);                                                               \
    } while (0)

/* Runs a suite (no fork: sanitizers see everything) and returns the process exit code:
 * TU_SKIPPED (CTest's SKIP_RETURN_CODE) after tu_skip, or when SL_ISA asks for a SIMD level the
 * CPU does not have. */
enum { TU_SKIPPED = 77 };
int tu_run(Suite *s);
/* Declares, in main before tu_run, that the suite tests kernels: CTest then also runs each of
 * its tests with SL_ISA=generic, avx2 and avx512 ("<suite>.<test>@<level>"), skipped where the
 * CPU lacks the level. */
void tu_every_isa(void);
/* Declares that the suite does not apply here (tu_run then skips it, printing why). */
void tu_skip(const char *why);

/* Every test is a TCase of its own, named after the test, so that CTest lists and runs each one:
 * with SL_LIST_TESTS=1 in the environment, tu_run prints the names given to tu_add_test, one per
 * line, and runs nothing; tests/CMakeLists.txt runs each test program so after building it and
 * registers "<suite>.<test>" with CK_RUN_CASE=<test> for each name. A suite's main declares a
 * group's fixture and timeout
 * once with tu_fixture / tu_timeout on a template TCase, then adds tests to that group:
 *     TCase *tc = tcase_create("x");
 *     tu_fixture(tc, tu_setup, tu_teardown);
 *     tu_add_test(s, tc, my_test);                                                      */
void tu_fixture(TCase *group, void (*setup)(void), void (*teardown)(void));
void tu_timeout(TCase *group, double seconds);
void tu_add_case(Suite *s, TCase *group, const char *name, const TTest *test);
#define tu_add_test(s, group, fn) tu_add_case((s), (group), #fn, (fn))

/* Each test starts with a fresh arena made current and a clean error state; tu_teardown frees
 * it. Use as a checked fixture: tcase_add_checked_fixture(tc, tu_setup, tu_teardown). */
void tu_setup(void);
void tu_teardown(void);

/* A leaf of the given shape with normal(0, 1) values (f64 or f32), requires_grad set. */
sl_tensor *tu_randn(sl_rng *rng, sl_dtype dtype, int ndim, const int64_t *shape);
/* The same values as t, as a NON-contiguous leaf view (every other element of a wider buffer),
 * requires_grad set for floating dtypes. Use it to test ops on views. */
sl_tensor *tu_noncontig(const sl_tensor *t);
/* The values of t as a leaf view whose dims are stored in rotated order (dim 0 innermost): a
 * permuted, non-contiguous input, as sl_permute would give; requires_grad set. */
sl_tensor *tu_permuted_leaf(const sl_tensor *t);
/* A copy of t in another dtype, as a leaf with requires_grad set (floating dtypes). */
sl_tensor *tu_cast_leaf(const sl_tensor *t, sl_dtype dtype);

/* Asserts sl_gradcheck passes with the default tolerances, printing its report otherwise. */
void tu_gradcheck(sl_gradcheck_fn fn, int n, sl_tensor *const *inputs, void *user);
/* Runs fn on the f64 inputs and on f32 copies of them and asserts the outputs agree to
 * float32 precision (|d| <= 1e-5 * (1 + |value|) per element, after scaling by max |value|). */
void tu_f32_matches_f64(sl_gradcheck_fn fn, int n, sl_tensor *const *inputs_f64, void *user);

/* Max |a - b| over elements (same shapes; any dtypes). */
double tu_max_abs_diff(const sl_tensor *a, const sl_tensor *b);
/* Max |a - b| / max(|b|) over elements. */
double tu_max_rel_diff(const sl_tensor *a, const sl_tensor *b);

#endif
