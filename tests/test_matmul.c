/* sl_matmul: values against a naive loop, broadcasting, transposed and strided operands,
 * the row split of a big product, threads, errors, and float64 gradchecks. */
#include "testutil.h"

#include <stdint.h>

/* Element idx of t, through its strides (f32 or f64). */
static double elem(const sl_tensor *t, const int64_t *idx)
{
    int64_t off = t->offset;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->strides[i];
    return t->dtype == SL_F64 ? ((const double *)t->data)[off] : ((const float *)t->data)[off];
}

/* a @ b by the definition, in double: batch dims broadcast, one dot product per element. */
static sl_tensor *naive_matmul(const sl_tensor *a, const sl_tensor *b)
{
    int na = a->ndim - 2, nb = b->ndim - 2, nbd = na > nb ? na : nb;
    int64_t shape[SL_MAX_DIMS];
    for (int d = 0; d < nbd; d++) {
        int64_t da = d - (nbd - na) >= 0 ? a->shape[d - (nbd - na)] : 1;
        int64_t db = d - (nbd - nb) >= 0 ? b->shape[d - (nbd - nb)] : 1;
        ck_assert(da == db || da == 1 || db == 1);
        shape[d] = da > db ? da : db;
    }
    int64_t m = a->shape[na], k = a->shape[na + 1], n = b->shape[nb + 1];
    shape[nbd] = m;
    shape[nbd + 1] = n;
    sl_tensor *y = sl_zeros(SL_F64, nbd + 2, shape);
    int64_t idx[SL_MAX_DIMS], ia[SL_MAX_DIMS], ib[SL_MAX_DIMS];
    for (int64_t f = 0; f < sl_numel(y); f++) {
        int64_t r = f;
        for (int d = nbd + 1; d >= 0; d--) {
            idx[d] = r % shape[d];
            r /= shape[d];
        }
        for (int d = 0; d < na; d++) ia[d] = a->shape[d] == 1 ? 0 : idx[d + nbd - na];
        for (int d = 0; d < nb; d++) ib[d] = b->shape[d] == 1 ? 0 : idx[d + nbd - nb];
        double s = 0;
        for (int64_t p = 0; p < k; p++) {
            ia[na] = idx[nbd], ia[na + 1] = p;
            ib[nb] = p, ib[nb + 1] = idx[nbd + 1];
            s += elem(a, ia) * elem(b, ib);
        }
        ((double *)y->data)[f] = s;
    }
    return y;
}

static void assert_matches_naive(sl_tensor *a, sl_tensor *b, double rtol)
{
    sl_tensor *y = sl_matmul(a, b);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    sl_tensor *want = naive_matmul(a, b);
    ck_assert_str_eq(sl_shape_str(y), sl_shape_str(want));
    double rel = tu_max_rel_diff(y, want);
    ck_assert_msg(rel <= rtol, "%s @ %s: %.3g relative from the naive product", sl_shape_str(a),
                  sl_shape_str(b), rel);
}

static sl_tensor *randn(sl_rng *r, sl_dtype dt, int ndim, const int64_t *shape)
{
    sl_tensor *t = sl_rand_normal(r, dt, ndim, shape, 0, 1);
    ck_assert_ptr_nonnull(t);
    return t;
}

static void assert_error(sl_status code, const char *message)
{
    ck_assert_int_eq(sl_error(), code);
    ck_assert_str_eq(sl_error_message(), message);
    sl_error_clear();
}

static const int64_t pairs[][2][5] = {
    /* {ndim, dims...} for a, then b */
    {{2, 3, 4}, {2, 4, 5}},           {{3, 2, 3, 4}, {3, 2, 4, 5}},
    {{4, 2, 1, 3, 4}, {3, 5, 4, 6}},  {{2, 3, 4}, {3, 2, 4, 5}},
    {{3, 2, 3, 4}, {2, 4, 5}},        {{3, 2, 3, 4}, {3, 1, 4, 5}},
    {{2, 1, 4}, {2, 4, 1}},           {{2, 4, 1}, {2, 1, 3}},
};
#define N_PAIRS (sizeof pairs / sizeof *pairs)

START_TEST(values_against_naive_loop)
{
    sl_rng r = sl_rng_seed(1);
    for (size_t c = 0; c < N_PAIRS; c++)
        for (int dt = 0; dt < 2; dt++) {
            sl_dtype d = dt ? SL_F32 : SL_F64;
            sl_tensor *a = randn(&r, d, (int)pairs[c][0][0], pairs[c][0] + 1);
            sl_tensor *b = randn(&r, d, (int)pairs[c][1][0], pairs[c][1] + 1);
            assert_matches_naive(a, b, d == SL_F64 ? 1e-14 : 1e-6);
        }
    /* [2,1,3,4] @ [5,4,6] -> [2,5,3,6], spelled out. */
    sl_tensor *a = randn(&r, SL_F64, sl_shape(2, 1, 3, 4));
    sl_tensor *b = randn(&r, SL_F64, sl_shape(5, 4, 6));
    sl_tensor *y = sl_matmul(a, b);
    ck_assert_str_eq(sl_shape_str(y), "[2,5,3,6]");
    double s = 0; /* y[1,3,2,5] = a[1,0,2,:] . b[3,:,5] */
    for (int k = 0; k < 4; k++)
        s += elem(a, (int64_t[]){1, 0, 2, k}) * elem(b, (int64_t[]){3, k, 5});
    ck_assert_close(elem(y, (int64_t[]){1, 3, 2, 5}), s, 1e-14, 1e-14);
    /* A known product. */
    sl_tensor *p = sl_from_data(SL_F64, sl_shape(2, 2), (double[]){1, 2, 3, 4});
    sl_tensor *q = sl_from_data(SL_F64, sl_shape(2, 3), (double[]){5, 6, 7, 8, 9, 10});
    sl_tensor *pq = sl_matmul(p, q);
    double want[] = {21, 24, 27, 47, 54, 61};
    for (int i = 0; i < 6; i++) ck_assert(sl_get(pq, i) == want[i]);
}
END_TEST

START_TEST(vector_products_and_empty_dims)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *row = randn(&r, SL_F64, sl_shape(1, 7)), *col = randn(&r, SL_F64, sl_shape(7, 1));
    sl_tensor *dot = sl_matmul(row, col);
    ck_assert_str_eq(sl_shape_str(dot), "[1,1]");
    double s = 0;
    for (int i = 0; i < 7; i++) s += sl_get(row, i) * sl_get(col, i);
    ck_assert_close(sl_get(dot, 0), s, 1e-14, 1e-14);
    assert_matches_naive(col, row, 1e-15); /* outer product, K = 1 */
    /* K = 0: an empty sum is 0. M = 0 or a batch dim of 0: an empty result. */
    sl_tensor *z = sl_matmul(sl_zeros(SL_F32, sl_shape(2, 0)), sl_zeros(SL_F32, sl_shape(0, 3)));
    ck_assert_str_eq(sl_shape_str(z), "[2,3]");
    for (int i = 0; i < 6; i++) ck_assert(sl_get(z, i) == 0.0);
    ck_assert_str_eq(sl_shape_str(sl_matmul(sl_zeros(SL_F64, sl_shape(0, 3)),
                                            sl_zeros(SL_F64, sl_shape(3, 2)))),
                     "[0,2]");
    ck_assert_str_eq(sl_shape_str(sl_matmul(sl_zeros(SL_F64, sl_shape(0, 2, 3)),
                                            sl_zeros(SL_F64, sl_shape(4, 1, 3, 2)))),
                     "[4,0,2,2]");
    /* Gradients through K = 0 are empty; through M = 0 the weight gets zeros. */
    sl_tensor *a = sl_requires_grad(sl_zeros(SL_F64, sl_shape(2, 0, 3)), true);
    sl_tensor *w = sl_requires_grad(sl_ones(SL_F64, sl_shape(3, 2)), true);
    ck_assert(sl_backward_ex(sl_matmul(a, w), sl_zeros(SL_F64, sl_shape(2, 0, 2)), 0));
    for (int i = 0; i < 6; i++) ck_assert(sl_get(w->grad, i) == 0.0);
}
END_TEST

START_TEST(errors_name_the_shapes)
{
    sl_tensor *a = sl_zeros(SL_F32, sl_shape(8, 256, 256));
    sl_tensor *b = sl_zeros(SL_F32, sl_shape(128, 512));
    ck_assert_ptr_null(sl_matmul(a, b));
    assert_error(SL_ERR_SHAPE, "sl_matmul: inner dims differ: [8,256,256] @ [128,512]");
    ck_assert_ptr_null(sl_matmul(sl_zeros(SL_F32, sl_shape(3, 2, 4)),
                                 sl_zeros(SL_F32, sl_shape(2, 4, 5))));
    assert_error(SL_ERR_SHAPE, "sl_matmul: batch dims do not broadcast: [3,2,4] @ [2,4,5]");
    ck_assert_ptr_null(sl_matmul(sl_zeros(SL_F32, sl_shape(4)), sl_zeros(SL_F32, sl_shape(4, 2))));
    assert_error(SL_ERR_SHAPE, "sl_matmul: operands must be at least 2-D: [4] @ [4,2]");
    ck_assert_ptr_null(sl_matmul(sl_zeros(SL_F32, sl_shape(2, 4)), sl_scalar(SL_F32, 1)));
    assert_error(SL_ERR_SHAPE, "sl_matmul: operands must be at least 2-D: [2,4] @ []");
    ck_assert_ptr_null(sl_matmul(sl_zeros(SL_I32, sl_shape(2, 2)), sl_zeros(SL_I32, sl_shape(2, 2))));
    assert_error(SL_ERR_DTYPE, "sl_matmul: expected f32 or f64, got i32 [2,2]");
    ck_assert_ptr_null(sl_matmul(sl_zeros(SL_F32, sl_shape(2, 3)), sl_zeros(SL_F64, sl_shape(3, 2))));
    assert_error(SL_ERR_DTYPE, "sl_matmul: dtypes differ: f32 [2,3] vs f64 [3,2]");
    ck_assert_ptr_null(sl_matmul(NULL, b));
    assert_error(SL_ERR_ARG, "sl_matmul: argument 'a' is NULL");
    /* A NULL from a failed call keeps the first message. */
    ck_assert_ptr_null(sl_matmul(sl_matmul(a, b), b));
    assert_error(SL_ERR_SHAPE, "sl_matmul: inner dims differ: [8,256,256] @ [128,512]");
}
END_TEST

/* Transposed views go to gemm as they are: the product allocates its output and nothing
 * else (a copy of an operand would add its size to the arena). */
START_TEST(transposed_operands_are_not_copied)
{
    sl_rng r = sl_rng_seed(3);
    sl_arena *arena = sl_arena_current();
    sl_tensor *x = randn(&r, SL_F64, sl_shape(3, 60, 40)); /* a^T */
    sl_tensor *w = randn(&r, SL_F64, sl_shape(50, 60));    /* b^T */
    sl_tensor *a = sl_transpose(x, -1, -2), *b = sl_transpose(w, 0, 1); /* [3,40,60], [60,50] */
    ck_assert(!sl_is_contiguous(a) && !sl_is_contiguous(b));
    size_t before = sl_arena_used(arena);
    sl_tensor *y = sl_matmul(a, b);
    size_t used = sl_arena_used(arena) - before, out_bytes = 3 * 40 * 50 * sizeof(double);
    ck_assert_msg(used < out_bytes + 1024, "matmul used %zu bytes for a %zu-byte output", used,
                  out_bytes);
    sl_tensor *want = naive_matmul(a, b);
    ck_assert(tu_max_rel_diff(y, want) <= 1e-14);
    /* A layout gemm cannot read (every other column) is copied, and still right. */
    sl_tensor *v = tu_noncontig(randn(&r, SL_F64, sl_shape(40, 60)));
    before = sl_arena_used(arena);
    y = sl_matmul(v, b);
    ck_assert(sl_arena_used(arena) - before >= 40 * 60 * sizeof(double));
    ck_assert(tu_max_rel_diff(y, naive_matmul(v, b)) <= 1e-14);
}
END_TEST

/* The big product splits into row blocks over two threads. */
START_TEST(large_product_row_split)
{
    int prev = sl_get_num_threads();
    sl_set_num_threads(2);
    sl_rng r = sl_rng_seed(4);
    sl_tensor *a = randn(&r, SL_F32, sl_shape(700, 300));
    sl_tensor *b = randn(&r, SL_F32, sl_shape(300, 200));
    sl_tensor *y = sl_matmul(a, b);
    const float *pa = a->data, *pb = b->data, *py = y->data;
    double worst = 0, scale = 0;
    for (int i = 0; i < 700; i++)
        for (int j = 0; j < 200; j++) {
            double s = 0;
            for (int k = 0; k < 300; k++) s += (double)pa[i * 300 + k] * pb[k * 200 + j];
            double d = fabs(py[i * 200 + j] - s);
            worst = d > worst ? d : worst;
            scale = fabs(s) > scale ? fabs(s) : scale;
        }
    ck_assert_msg(worst <= 1e-5 * scale, "max error %.3g for values up to %.3g", worst, scale);
    sl_set_num_threads(prev);
}
END_TEST

/* f32 products whose a is a transposed view, big enough to be split in row blocks, and a
 * batch whose b is broadcast: against the naive loop (f32 runs on the library's own kernel
 * where the build has AVX-512, which reads either layout of a in place). */
START_TEST(f32_transposed_split_and_batched)
{
    int prev = sl_get_num_threads();
    sl_set_num_threads(2);
    sl_rng r = sl_rng_seed(12);
    sl_tensor *at = randn(&r, SL_F32, sl_shape(300, 700));
    sl_tensor *b = randn(&r, SL_F32, sl_shape(300, 130));
    assert_matches_naive(sl_transpose(at, 0, 1), b, 1e-5);
    sl_tensor *bt = randn(&r, SL_F32, sl_shape(130, 300));
    assert_matches_naive(sl_transpose(at, 0, 1), sl_transpose(bt, 0, 1), 1e-5);
    assert_matches_naive(randn(&r, SL_F32, sl_shape(5, 3, 70, 40)),
                         randn(&r, SL_F32, sl_shape(40, 66)), 1e-5);
    assert_matches_naive(randn(&r, SL_F32, sl_shape(4, 70, 40)),
                         sl_transpose(randn(&r, SL_F32, sl_shape(4, 66, 40)), 1, 2), 1e-5);
    sl_set_num_threads(prev);
}
END_TEST

typedef struct {
    sl_tensor *y, *ga, *gb;
} run_out;

static run_out forward_backward(sl_tensor *a, sl_tensor *b, sl_tensor *g)
{
    sl_zero_grad(a);
    sl_zero_grad(b);
    sl_tensor *y = sl_matmul(a, b);
    ck_assert(sl_backward_ex(y, g, 0));
    sl_tensor *ga = sl_empty(a->dtype, a->ndim, a->shape), *gb = sl_empty(b->dtype, b->ndim, b->shape);
    sl_copy_into(ga, a->grad);
    sl_copy_into(gb, b->grad);
    return (run_out){sl_detach(y), ga, gb};
}

START_TEST(one_thread_matches_two)
{
    int prev = sl_get_num_threads();
    sl_rng r = sl_rng_seed(5);
    /* A big 2-D product (row split), a batch (split by entry), a Linear-shaped fold. */
    const int64_t shapes[][2][4] = {{{2, 300, 256}, {2, 256, 200}},
                                    {{3, 16, 64, 96}, {3, 16, 96, 80}},
                                    {{3, 8, 64, 192}, {2, 192, 160}}};
    for (int c = 0; c < 3; c++) {
        sl_tensor *a = sl_requires_grad(randn(&r, SL_F32, (int)shapes[c][0][0], shapes[c][0] + 1), true);
        sl_tensor *b = sl_requires_grad(randn(&r, SL_F32, (int)shapes[c][1][0], shapes[c][1] + 1), true);
        sl_set_grad_enabled(false);
        sl_tensor *y0 = sl_matmul(a, b);
        sl_set_grad_enabled(true);
        sl_tensor *g = randn(&r, SL_F32, y0->ndim, y0->shape);
        sl_set_num_threads(1);
        run_out one = forward_backward(a, b, g);
        sl_set_num_threads(2);
        run_out two = forward_backward(a, b, g);
        ck_assert(tu_max_rel_diff(two.y, one.y) <= 1e-6);
        ck_assert(tu_max_rel_diff(two.ga, one.ga) <= 1e-6);
        ck_assert(tu_max_rel_diff(two.gb, one.gb) <= 1e-6);
        /* and both are right */
        ck_assert(tu_max_rel_diff(one.y, naive_matmul(a, b)) <= 1e-5);
    }
    sl_set_num_threads(prev);
}
END_TEST

/* A Linear layer's backward: dW += X2^T @ dY2 is one gemm, with no [B, K, N] temporary. */
START_TEST(linear_backward_needs_no_temporary)
{
    sl_rng r = sl_rng_seed(6);
    sl_arena *arena = sl_arena_current();
    sl_tensor *x = sl_requires_grad(randn(&r, SL_F32, sl_shape(16, 4, 32)), true);
    sl_tensor *w = sl_requires_grad(randn(&r, SL_F32, sl_shape(32, 64)), true);
    sl_tensor *y = sl_matmul(x, w);
    sl_tensor *g = randn(&r, SL_F32, sl_shape(16, 4, 64));
    size_t before = sl_arena_used(arena);
    ck_assert(sl_backward_ex(y, g, 0));
    /* grad buffers: x 8 KiB, w 8 KiB, y 16 KiB; a temporary would add 128 KiB */
    size_t used = sl_arena_used(arena) - before;
    ck_assert_msg(used < 40 * 1024, "backward used %zu bytes", used);
    /* dW = sum over rows of x^T g, checked against a naive sum */
    for (int i = 0; i < 32; i += 7)
        for (int j = 0; j < 64; j += 9) {
            double s = 0;
            for (int t = 0; t < 64; t++)
                s += (double)((float *)x->data)[t * 32 + i] * ((float *)g->data)[t * 64 + j];
            ck_assert_close(elem(w->grad, (int64_t[]){i, j}), s, 1e-5, 1e-5);
        }
}
END_TEST

/* ---------------------------------------------------------------- gradchecks */

static sl_tensor *g_mm(sl_tensor *const *in, int n, void *u) { return sl_matmul(in[0], in[1]); }
static sl_tensor *g_mm_transposed(sl_tensor *const *in, int n, void *u)
{
    /* in[0] [..., K, M] and in[1] [N, K]: both reach gemm as Trans */
    return sl_matmul(sl_transpose(in[0], -1, -2), sl_transpose(in[1], 0, 1));
}
static sl_tensor *g_mm_expanded(sl_tensor *const *in, int n, void *u)
{
    /* a batch-expanded b (stride-0 batch dim) and a row-expanded one (copied) */
    sl_tensor *b = sl_expand(in[1], sl_shape(3, 4, 5));
    sl_tensor *c = sl_expand(sl_narrow(in[1], 0, 0, 1), sl_shape(4, 5));
    return sl_add(sl_matmul(in[0], b), sl_matmul(in[0], c));
}
static sl_tensor *g_mm_fanin(sl_tensor *const *in, int n, void *u)
{
    /* in[0] and in[1] each used twice: gemm must accumulate (beta = 1), not overwrite */
    sl_tensor *y1 = sl_matmul(in[0], in[1]);
    sl_tensor *y2 = sl_matmul(sl_mul(in[0], in[0]), in[1]);
    return sl_add(y1, y2);
}
static sl_tensor *g_mm_strided_rows(sl_tensor *const *in, int n, void *u)
{
    /* a [2,3,4] slice of [2,5,4] (rows not evenly strided: no fold) and one of [2,3,6]
     * along the last dim (evenly strided rows: folds) */
    sl_tensor *a1 = sl_narrow(in[0], 1, 1, 3);
    sl_tensor *a2 = sl_narrow(in[1], -1, 2, 4);
    return sl_add(sl_matmul(a1, in[2]), sl_matmul(a2, in[2]));
}

START_TEST(gradcheck_matmul)
{
    sl_rng r = sl_rng_seed(7);
    for (size_t c = 0; c < N_PAIRS; c++) {
        sl_tensor *in[] = {tu_randn(&r, SL_F64, (int)pairs[c][0][0], pairs[c][0] + 1),
                           tu_randn(&r, SL_F64, (int)pairs[c][1][0], pairs[c][1] + 1)};
        tu_gradcheck(g_mm, 2, in, NULL);
        tu_f32_matches_f64(g_mm, 2, in, NULL);
        sl_tensor *vin[] = {tu_noncontig(in[0]), tu_noncontig(in[1])};
        tu_gradcheck(g_mm, 2, vin, NULL);
        sl_tensor *mixed[] = {in[0], vin[1]};
        tu_gradcheck(g_mm, 2, mixed, NULL);
    }
    sl_tensor *t[] = {tu_randn(&r, SL_F64, sl_shape(2, 4, 3)), tu_randn(&r, SL_F64, sl_shape(5, 4))};
    tu_gradcheck(g_mm_transposed, 2, t, NULL);
    tu_f32_matches_f64(g_mm_transposed, 2, t, NULL);
    sl_tensor *e[] = {tu_randn(&r, SL_F64, sl_shape(2, 1, 3, 4)), tu_randn(&r, SL_F64, sl_shape(4, 5))};
    tu_gradcheck(g_mm_expanded, 2, e, NULL);
    sl_tensor *f[] = {tu_randn(&r, SL_F64, sl_shape(2, 3, 4)), tu_randn(&r, SL_F64, sl_shape(4, 5))};
    tu_gradcheck(g_mm_fanin, 2, f, NULL);
    sl_tensor *f2[] = {tu_randn(&r, SL_F64, sl_shape(2, 3, 4)), tu_randn(&r, SL_F64, sl_shape(2, 4, 5))};
    tu_gradcheck(g_mm_fanin, 2, f2, NULL);
    sl_tensor *s[] = {tu_randn(&r, SL_F64, sl_shape(2, 5, 4)), tu_randn(&r, SL_F64, sl_shape(2, 3, 6)),
                      tu_randn(&r, SL_F64, sl_shape(4, 5))};
    tu_gradcheck(g_mm_strided_rows, 3, s, NULL);
    tu_f32_matches_f64(g_mm_strided_rows, 3, s, NULL);
    /* Only one side requires grad. */
    sl_requires_grad(s[2], false);
    tu_gradcheck(g_mm_strided_rows, 3, s, NULL);
    sl_tensor *one[] = {sl_requires_grad(sl_rand_normal(&r, SL_F64, sl_shape(3, 4), 0, 1), false),
                        tu_randn(&r, SL_F64, sl_shape(2, 4, 2))};
    tu_gradcheck(g_mm, 2, one, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("matmul");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, values_against_naive_loop);
    tu_add_test(s, tc, vector_products_and_empty_dims);
    tu_add_test(s, tc, errors_name_the_shapes);
    tu_add_test(s, tc, transposed_operands_are_not_copied);
    tu_add_test(s, tc, large_product_row_split);
    tu_add_test(s, tc, f32_transposed_split_and_batched);
    tu_add_test(s, tc, one_thread_matches_two);
    tu_add_test(s, tc, linear_backward_needs_no_temporary);
    tu_add_test(s, tc, gradcheck_matmul);
    return tu_run(s);
}
