/* tests/testutil.c — helpers shared by the Check suites. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sl_arena *test_arena;

/* The names given to tu_add_case, in order, for SL_LIST_TESTS. */
enum { MAX_CASES = 512 };
static const char *case_names[MAX_CASES];
static int n_cases;
static bool every_isa;        /* tu_every_isa: CTest runs the suite at every SIMD level */
static const char *skip_why; /* tu_skip: the suite does not apply here */

void tu_every_isa(void) { every_isa = true; }
void tu_skip(const char *why) { skip_why = why; }

/* Under SL_ISA, a level the CPU does not have cannot be tested here. */
static const char *isa_unavailable(void)
{
    const char *want = getenv("SL_ISA");
    static char why[128];
    if (!want || !*want || !strcmp(want, sl_cpu_isa())) return NULL;
    const char *order[] = {"generic", "avx2", "avx512"};
    int w = -1, have = -1;
    for (int i = 0; i < 3; i++) {
        if (!strcmp(want, order[i])) w = i;
        if (!strcmp(sl_cpu_isa(), order[i])) have = i;
    }
    if (w > have) {
        snprintf(why, sizeof why, "SL_ISA=%s: this CPU has %s only", want, sl_cpu_isa());
        return why;
    }
    return NULL;
}

int tu_run(Suite *s)
{
    const char *list = getenv("SL_LIST_TESTS");
    if (list && *list && *list != '0') { /* for CTest: name the tests, run none */
        if (every_isa) printf("@every_isa\n");
        for (int i = 0; i < n_cases; i++) printf("%s\n", case_names[i]);
        srunner_free(srunner_create(s)); /* frees the suite */
        return EXIT_SUCCESS;
    }
    if (!skip_why) skip_why = isa_unavailable();
    if (skip_why) {
        printf("skipped: %s\n", skip_why);
        srunner_free(srunner_create(s));
        return TU_SKIPPED;
    }
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr), ran = srunner_ntests_run(sr);
    srunner_free(sr);
    if (ran == 0) { /* e.g. CK_RUN_CASE names no test: that must not pass */
        const char *c = getenv("CK_RUN_CASE");
        fprintf(stderr, "no test ran (CK_RUN_CASE=%s)\n", c ? c : "");
        return EXIT_FAILURE;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* The fixture and timeout declared for each group (template TCase). */
static struct {
    TCase *group;
    void (*setup)(void), (*teardown)(void);
    double timeout;
    bool in_suite; /* the (empty) template is handed to the suite, which frees it */
} groups[8];
static int n_groups;

static int group_of(TCase *g)
{
    for (int i = 0; i < n_groups; i++)
        if (groups[i].group == g) return i;
    if (n_groups == 8) { /* (not ck_assert: this runs in main, outside any test) */
        fprintf(stderr, "testutil: more than 8 test groups\n");
        exit(EXIT_FAILURE);
    }
    groups[n_groups].group = g;
    return n_groups++;
}

void tu_fixture(TCase *group, void (*setup)(void), void (*teardown)(void))
{
    int i = group_of(group);
    groups[i].setup = setup;
    groups[i].teardown = teardown;
}

void tu_timeout(TCase *group, double seconds) { groups[group_of(group)].timeout = seconds; }

void tu_add_case(Suite *s, TCase *group, const char *name, const TTest *test)
{
    if (n_cases == MAX_CASES) {
        fprintf(stderr, "testutil: more than %d tests in one suite\n", MAX_CASES);
        exit(EXIT_FAILURE);
    }
    case_names[n_cases++] = name;
    int i = group_of(group);
    if (!groups[i].in_suite) {
        suite_add_tcase(s, group);
        groups[i].in_suite = true;
    }
    TCase *tc = tcase_create(name);
    if (groups[i].setup || groups[i].teardown)
        tcase_add_checked_fixture(tc, groups[i].setup, groups[i].teardown);
    if (groups[i].timeout > 0) tcase_set_timeout(tc, groups[i].timeout);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

void tu_setup(void)
{
    sl_error_clear();
    test_arena = sl_arena_new(0);
    sl_arena_set(test_arena);
    sl_set_grad_enabled(true);
}

void tu_teardown(void)
{
    sl_arena_set(NULL);
    sl_arena_free(test_arena);
    test_arena = NULL;
    sl_error_clear();
}

sl_tensor *tu_randn(sl_rng *rng, sl_dtype dtype, int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_rand_normal(rng, dtype, ndim, shape, 0, 1);
    ck_assert_ptr_nonnull(t);
    return sl_requires_grad(t, true);
}

sl_tensor *tu_noncontig(const sl_tensor *t)
{
    int64_t shape[SL_MAX_DIMS];
    int nd = t->ndim ? t->ndim : 1;
    for (int i = 0; i < nd; i++) shape[i] = t->ndim ? t->shape[i] : 1;
    shape[nd - 1] *= 2;
    sl_tensor *wide = sl_zeros(t->dtype, nd, shape);
    ck_assert_ptr_nonnull(wide);
    sl_tensor *v = sl_detach(wide); /* a leaf header we may restride */
    v->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) {
        v->shape[i] = t->shape[i];
        v->strides[i] = wide->strides[i];
    }
    if (t->ndim) v->strides[t->ndim - 1] = 2;
    v->offset = 1;
    ck_assert_msg(t->ndim == 0 || sl_numel(t) <= 1 || !sl_is_contiguous(v), "view is contiguous");
    ck_assert(sl_copy_into(v, t));
    return t->dtype == SL_I32 ? v : sl_requires_grad(v, true);
}

sl_tensor *tu_cast_leaf(const sl_tensor *t, sl_dtype dtype)
{
    sl_tensor *c = sl_empty(dtype, t->ndim, t->shape);
    ck_assert_ptr_nonnull(c);
    ck_assert(sl_copy_into(c, t));
    if (dtype != SL_I32) sl_requires_grad(c, t->requires_grad);
    return c;
}

void tu_gradcheck(sl_gradcheck_fn fn, int n, sl_tensor *const *inputs, void *user)
{
    sl_gradcheck_result r;
    bool ok = sl_gradcheck(fn, n, inputs, user, NULL, &r);
    ck_assert_msg(ok, "%s (error: %s)", r.message, sl_error_message());
}

double tu_max_abs_diff(const sl_tensor *a, const sl_tensor *b)
{
    ck_assert_int_eq(sl_numel(a), sl_numel(b));
    double m = 0;
    for (int64_t i = 0; i < sl_numel(a); i++) {
        double d = fabs(sl_get(a, i) - sl_get(b, i));
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

double tu_max_rel_diff(const sl_tensor *a, const sl_tensor *b)
{
    double scale = 0;
    for (int64_t i = 0; i < sl_numel(b); i++)
        if (fabs(sl_get(b, i)) > scale) scale = fabs(sl_get(b, i));
    return tu_max_abs_diff(a, b) / (scale > 0 ? scale : 1);
}

void tu_f32_matches_f64(sl_gradcheck_fn fn, int n, sl_tensor *const *inputs_f64, void *user)
{
    sl_tensor *in32[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        in32[i] = inputs_f64[i]->dtype == SL_F64 ? tu_cast_leaf(inputs_f64[i], SL_F32)
                                                 : (sl_tensor *)inputs_f64[i];
    sl_tensor *y64 = fn(inputs_f64, n, user);
    ck_assert_msg(y64 != NULL, "f64 call failed: %s", sl_error_message());
    sl_tensor *y32 = fn(in32, n, user);
    ck_assert_msg(y32 != NULL, "f32 call failed: %s", sl_error_message());
    ck_assert_int_eq(y32->dtype, SL_F32);
    double rel = tu_max_rel_diff(y32, y64);
    ck_assert_msg(rel <= 1e-5, "f32 and f64 results differ by %.3g relative", rel);
}

sl_tensor *tu_permuted_leaf(const sl_tensor *t)
{
    int nd = t->ndim;
    int64_t shape[SL_MAX_DIMS] = {0};
    for (int k = 0; k < nd; k++) shape[k] = t->shape[(k + 1) % nd];
    sl_tensor *buf = sl_zeros(t->dtype, nd, shape);
    ck_assert_ptr_nonnull(buf);
    sl_tensor *v = sl_detach(buf);
    for (int k = 0; k < nd; k++) {
        v->shape[(k + 1) % nd] = buf->shape[k];
        v->strides[(k + 1) % nd] = buf->strides[k];
    }
    ck_assert(!sl_is_contiguous(v));
    ck_assert(sl_copy_into(v, t));
    return sl_requires_grad(v, true);
}
