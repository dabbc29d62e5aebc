/* ops/gemm.c, shortlong's own f32 matrix product: every layout of a and b, sizes around the
 * kernel's block edges (6 rows, 64 columns, 256 deep), accumulation, row ranges, a packed b
 * cut along k, and the same bits whatever rows a call covers. Against a naive loop in double. */
#include "testutil.h"

#include "../ops/gemm.h" /* internal: the kernel itself */

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t m, n, k;
    bool ta, tb;
    int64_t lda, ldb, ldc;
    float *a, *b, *c;
} problem;

static float small_value(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1ull << 24) - 0.5);
}

/* Random a, b and c with leading dimensions a little past the minimum. */
static problem make(int64_t m, int64_t n, int64_t k, bool ta, bool tb, uint64_t seed)
{
    problem p = {m, n, k, ta, tb, (ta ? m : k) + 3, (tb ? k : n) + 5, n + 7, NULL, NULL, NULL};
    size_t na = (size_t)((ta ? k : m) * p.lda), nb = (size_t)((tb ? n : k) * p.ldb);
    size_t nc = (size_t)(m * p.ldc);
    p.a = malloc(sizeof(float) * (na + 1));
    p.b = malloc(sizeof(float) * (nb + 1));
    p.c = malloc(sizeof(float) * (nc + 1));
    for (size_t i = 0; i < na; i++) p.a[i] = small_value(&seed);
    for (size_t i = 0; i < nb; i++) p.b[i] = small_value(&seed);
    for (size_t i = 0; i < nc; i++) p.c[i] = small_value(&seed);
    return p;
}

static void release(problem *p)
{
    free(p->a);
    free(p->b);
    free(p->c);
}

static double at_a(const problem *p, int64_t i, int64_t l)
{
    return p->ta ? p->a[l * p->lda + i] : p->a[i * p->lda + l];
}

static double at_b(const problem *p, int64_t l, int64_t j)
{
    return p->tb ? p->b[j * p->ldb + l] : p->b[l * p->ldb + j];
}

static float *pack(const problem *p)
{
    float *bp = malloc(sizeof(float) * (sl__sgemm_packed_floats(p->k, p->n) + 1));
    int64_t panels = sl__sgemm_panels(p->n);
    /* in two calls, as threads would split it */
    sl__sgemm_pack(bp, p->b, p->tb, p->ldb, p->k, p->n, 0, panels / 2);
    sl__sgemm_pack(bp, p->b, p->tb, p->ldb, p->k, p->n, panels / 2, panels);
    return bp;
}

/* Rows [r0, r1) of c (+)= a @ b, checked against the loop; rows outside and the padding past
 * n in each row are untouched. */
static void check(problem *p, int64_t r0, int64_t r1, bool accumulate)
{
    float *bp = pack(p);
    float *before = malloc(sizeof(float) * (size_t)(p->m * p->ldc + 1));
    memcpy(before, p->c, sizeof(float) * (size_t)(p->m * p->ldc));
    sl__sgemm_rows(p->a, p->ta, p->lda, bp, p->k, p->n, p->c, p->ldc, r0, r1, accumulate);
    for (int64_t i = 0; i < p->m; i++)
        for (int64_t j = 0; j < p->ldc; j++) {
            double got = p->c[i * p->ldc + j], old = before[i * p->ldc + j];
            if (i < r0 || i >= r1 || j >= p->n) {
                ck_assert_msg(got == old, "(%lld, %lld) outside the range changed",
                              (long long)i, (long long)j);
                continue;
            }
            double want = accumulate ? old : 0;
            for (int64_t l = 0; l < p->k; l++) want += at_a(p, i, l) * at_b(p, l, j);
            ck_assert_msg(fabs(got - want) <= 1e-5 * (1 + sqrt((double)p->k)),
                          "%lldx%lldx%lld ta %d tb %d: c(%lld, %lld) = %.9g, want %.9g",
                          (long long)p->m, (long long)p->n, (long long)p->k, p->ta, p->tb,
                          (long long)i, (long long)j, got, want);
        }
    free(before);
    free(bp);
}

START_TEST(layouts_and_edges)
{
    /* rows around MR = 6, columns around NR (64 with AVX-512, 16 with AVX2) and past a column
     * block (512 columns with AVX-512, 256 with AVX2: a second block, and a short one), depths
     * around KC = 256 (two blocks, a short last block), and a single element */
    const int64_t sizes[][3] = {{1, 1, 1},     {6, 64, 256},  {7, 65, 257},  {5, 63, 255},
                                {13, 130, 3},  {12, 128, 512}, {20, 70, 600}, {3, 200, 40},
                                {6, 16, 256},  {7, 17, 257},  {5, 15, 255},  {11, 33, 70},
                                {7, 577, 300}, {13, 1030, 20}};
    uint64_t seed = 1;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int layout = 0; layout < 4; layout++)
            for (int accumulate = 0; accumulate < 2; accumulate++) {
                problem p = make(sizes[s][0], sizes[s][1], sizes[s][2], layout & 1, layout & 2,
                                 seed++);
                check(&p, 0, p.m, accumulate);
                release(&p);
            }
}
END_TEST

START_TEST(row_ranges)
{
    problem p = make(40, 100, 300, false, true, 7);
    check(&p, 5, 23, false); /* starts and ends inside 6-row blocks */
    check(&p, 23, 40, true);
    check(&p, 0, 0, false);  /* nothing */
    release(&p);
    problem q = make(40, 100, 300, true, false, 8);
    check(&q, 1, 38, true);
    release(&q);
}
END_TEST

/* The rows of c do not depend on how a product is cut into calls: one call over all rows and
 * calls of 1, 5 and 7 rows give the same bits. */
START_TEST(same_bits_for_any_row_split)
{
    for (int layout = 0; layout < 2; layout++) {
        problem p = make(50, 90, 520, layout, true, 9);
        float *bp = pack(&p);
        size_t bytes = sizeof(float) * (size_t)(p.m * p.ldc);
        float *whole = malloc(bytes);
        sl__sgemm_rows(p.a, p.ta, p.lda, bp, p.k, p.n, p.c, p.ldc, 0, p.m, false);
        memcpy(whole, p.c, bytes);
        const int64_t steps[] = {1, 5, 7};
        for (int s = 0; s < 3; s++) {
            memset(p.c, 0, bytes);
            for (int64_t r = 0; r < p.m; r += steps[s])
                sl__sgemm_rows(p.a, p.ta, p.lda, bp, p.k, p.n, p.c, p.ldc, r,
                               r + steps[s] < p.m ? r + steps[s] : p.m, false);
            for (int64_t i = 0; i < p.m; i++)
                ck_assert(!memcmp(p.c + i * p.ldc, whole + i * p.ldc, sizeof(float) * p.n));
        }
        free(whole);
        free(bp);
        release(&p);
    }
}
END_TEST

/* A packed b cut at a multiple of the block depth: the product over k in [k0, k) equals the
 * product of the cut matrices, and two cuts accumulated make the whole product. */
START_TEST(packed_b_cut_along_k)
{
    problem p = make(30, 80, 2 * SL__SGEMM_KC + 100, true, false, 10);
    float *bp = pack(&p);
    int64_t k0 = SL__SGEMM_KC;
    size_t bytes = sizeof(float) * (size_t)(p.m * p.ldc);
    float *whole = malloc(bytes), *cut = malloc(bytes);
    sl__sgemm_rows(p.a, p.ta, p.lda, bp, p.k, p.n, p.c, p.ldc, 0, p.m, false);
    memcpy(whole, p.c, bytes);
    /* first k0 of k, then the rest (a transposed: the rest of a starts k0 rows down) */
    sl__sgemm_rows(p.a, p.ta, p.lda, bp, k0, p.n, p.c, p.ldc, 0, p.m, false);
    sl__sgemm_rows(p.a + k0 * p.lda, p.ta, p.lda, bp + sl__sgemm_packed_floats(k0, p.n),
                   p.k - k0, p.n, p.c, p.ldc, 0, p.m, true);
    memcpy(cut, p.c, bytes);
    for (int64_t i = 0; i < p.m; i++)
        for (int64_t j = 0; j < p.n; j++) {
            double want = 0;
            for (int64_t l = 0; l < p.k; l++) want += at_a(&p, i, l) * at_b(&p, l, j);
            ck_assert_double_le(fabs(cut[i * p.ldc + j] - want), 1e-4);
            /* the whole product adds block sums in the same order: the same bits */
            ck_assert_float_eq(cut[i * p.ldc + j], whole[i * p.ldc + j]);
        }
    free(whole);
    free(cut);
    free(bp);
    release(&p);
}
END_TEST

START_TEST(empty_depth)
{
    problem p = make(8, 70, 0, false, false, 11);
    float keep = p.c[0];
    check(&p, 0, p.m, true); /* accumulating nothing leaves c */
    ck_assert_float_eq(p.c[0], keep);
    check(&p, 0, p.m, false); /* an empty sum is 0 */
    ck_assert_float_eq(p.c[0], 0);
    release(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("gemm");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, layouts_and_edges);
    tu_add_test(s, tc, row_ranges);
    tu_add_test(s, tc, same_bits_for_any_row_split);
    tu_add_test(s, tc, packed_b_cut_along_k);
    tu_add_test(s, tc, empty_depth);
    tu_every_isa();
    if (sl__sgemm_level() == SL__ISA_GENERIC) tu_skip("no kernel of shortlong's own at this level");
    return tu_run(s);
}
