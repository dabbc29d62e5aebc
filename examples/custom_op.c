/* examples/custom_op.c — an op of your own, with its gradient, written against the public API.
 *
 * The op: the squared distance of each row of x to a learned center c,
 *
 *     y[n] = sum_d (x[n, d] - c[d])^2              x (N, D), c (D) -> y (N)
 *
 * (the term an RBF layer or a "center loss" is built from). Differentiating the forward line,
 * with g[n] = dL/dy[n] the gradient arriving from above:
 *
 *     dL/dx[n, d] =  2 g[n] (x[n, d] - c[d])
 *     dL/dc[d]    = -2 sum_n g[n] (x[n, d] - c[d])
 *
 * What a custom op needs, in the order of this file:
 *   1. kernels over contiguous memory (plain loops over pointers), for float and double;
 *   2. a strided-input helper, so that the op takes any view (a transpose, a slice, a broadcast);
 *   3. the backward function, which ACCUMULATES (+=) into its inputs' gradient buffers;
 *   4. the op: argument checks (errors through sl_set_error), the output (sl_empty, in the
 *      current arena), sl_record to put the node on the tape, then sl_save_for_backward for
 *      every tensor the backward will read;
 *   5. its tests, as a Check suite: a float64 gradcheck (contiguous, transposed and broadcast
 *      inputs), values against a naive loop, and the error messages. main runs the suite and
 *      exits non-zero if any test fails.
 *
 * Build it against an installed shortlong (Check is the unit-test framework, package check):
 *     cc -O2 custom_op.c $(pkg-config --cflags --libs shortlong check) -lm -o custom_op
 * In the source tree it is built with the other examples when Check is found, and ctest runs it
 * as example_custom_op. Everything it touches is in <shortlong/shortlong.h>.
 */
#include <shortlong/shortlong.h>

#include <check.h>
#include <math.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- 1. kernels */

/* Written once over a type T and made for float (_f32) and double (_f64). x (N, D), c (D), y, g
 * (N) are contiguous. Sums run in double. gx or gc is NULL when that input needs no gradient.
 * (For large inputs, split the rows over the pool with sl_parallel_for: each row is
 * independent, and dc can be reduced per thread in a fixed order, so that the result does not
 * depend on the number of threads.) */
#define SQDIST_KERNELS(T, SUF)                                                                     \
    static void sqdist_forward_##SUF(const T *x, const T *c, T *y, int64_t N, int64_t D)           \
    {                                                                                              \
        for (int64_t n = 0; n < N; n++) {                                                          \
            double s = 0;                                                                          \
            for (int64_t d = 0; d < D; d++) {                                                      \
                double e = (double)x[n * D + d] - (double)c[d];                                    \
                s += e * e;                                                                        \
            }                                                                                      \
            y[n] = (T)s;                                                                           \
        }                                                                                          \
    }                                                                                              \
    static void sqdist_backward_##SUF(const T *x, const T *c, const T *g, T *gx, T *gc, int64_t N, \
                                      int64_t D)                                                   \
    {                                                                                              \
        for (int64_t d = 0; d < D; d++) {                                                          \
            double sc = 0;                                                                         \
            for (int64_t n = 0; n < N; n++) {                                                      \
                double e2g = 2 * ((double)x[n * D + d] - (double)c[d]) * (double)g[n];             \
                if (gx) gx[n * D + d] += (T)e2g;                                                   \
                sc += e2g;                                                                         \
            }                                                                                      \
            if (gc) gc[d] -= (T)sc;                                                                \
        }                                                                                          \
    }
SQDIST_KERNELS(float, f32)
SQDIST_KERNELS(double, f64)

/* ---------------------------------------------------------------- 2. strided inputs */

/* A tensor is a strided view: element (i, j) of a 2-D t lives at
 *     data + (t->offset + i * t->strides[0] + j * t->strides[1]) * element size,
 * with stride 0 along a broadcast (expanded) dim. A kernel can take strides, or the op can hand
 * it contiguous memory. The simple way, and the one to start with: sl_contiguous(t) returns t
 * itself when it is already contiguous (no copy) and otherwise a contiguous copy that is an op
 * of its own, recorded on the tape. Record the custom node with the contiguous tensors as its
 * inputs: the gradient then flows back through sl_contiguous's node to the original view
 * (summed over a broadcast dim), and the kernels above never see a stride. The cost is one copy
 * of a non-contiguous input; write strided kernels (the read_2d helper below shows the address
 * arithmetic) only where a profile says the copy matters. */
static sl_tensor *as_contiguous(sl_tensor *t) { return sl_contiguous(t); }

/* ---------------------------------------------------------------- 3. backward */

/* node->in[0] and node->in[1] are the contiguous x and c that the forward recorded; node->grad
 * is dL/dy (contiguous, y's shape). sl_input_grad gives each input's gradient buffer (zeroed
 * the first time), to accumulate into; ask only for inputs that require grad. (A backward
 * that writes every element anyway can skip that zeroing: sl_input_grad_overwrite says when
 * the buffer is new, to be stored into; autograd.h.) */
static bool sqdist_backward(sl_node *node)
{
    sl_tensor *x = node->in[0], *c = node->in[1];
    sl_tensor *gx = x->requires_grad ? sl_input_grad(node, 0) : NULL;
    sl_tensor *gc = c->requires_grad ? sl_input_grad(node, 1) : NULL;
    if ((x->requires_grad && !gx) || (c->requires_grad && !gc)) return false; /* out of memory */
    int64_t N = x->shape[0], D = x->shape[1];
    if (x->dtype == SL_F32)
        sqdist_backward_f32(sl_ptr(x), sl_ptr(c), sl_ptr(node->grad), gx ? sl_ptr(gx) : NULL,
                            gc ? sl_ptr(gc) : NULL, N, D);
    else
        sqdist_backward_f64(sl_ptr(x), sl_ptr(c), sl_ptr(node->grad), gx ? sl_ptr(gx) : NULL,
                            gc ? sl_ptr(gc) : NULL, N, D);
    return true;
}

/* ---------------------------------------------------------------- 4. the op */

/* x (N, D), c (D) -> y (N), f32 or f64 (both alike), any strides. NULL on error, with a message
 * naming the op and the shapes (sl_error_message). */
static sl_tensor *sqdist(sl_tensor *x, sl_tensor *c)
{
    /* A NULL argument is a failed call's result: pass its error on (or report one). */
    if (!x || !c) {
        if (sl_error() == SL_OK) sl_set_error(SL_ERR_ARG, "sqdist: x or c is NULL");
        return NULL;
    }
    if (x->dtype != c->dtype || x->dtype == SL_I32) {
        sl_set_error(SL_ERR_DTYPE, "sqdist: x %s %s and c %s %s: need one float dtype",
                     sl_dtype_name(x->dtype), sl_shape_str(x), sl_dtype_name(c->dtype),
                     sl_shape_str(c));
        return NULL;
    }
    if (x->ndim != 2 || c->ndim != 1 || c->shape[0] != x->shape[1]) {
        sl_set_error(SL_ERR_SHAPE, "sqdist: x %s and c %s: need x (N, D) and c (D)",
                     sl_shape_str(x), sl_shape_str(c));
        return NULL;
    }
    sl_tensor *xc = as_contiguous(x), *cc = as_contiguous(c);
    int64_t N = x->shape[0], D = x->shape[1];
    sl_tensor *y = xc && cc ? sl_empty(x->dtype, 1, (int64_t[]){N}) : NULL;
    if (!y) return NULL;
    if (x->dtype == SL_F32) sqdist_forward_f32(sl_ptr(xc), sl_ptr(cc), sl_ptr(y), N, D);
    else sqdist_forward_f64(sl_ptr(xc), sl_ptr(cc), sl_ptr(y), N, D);
    /* With grad mode on and an input requiring grad, this puts a node on the tape (node is NULL
     * otherwise, and the calls below do nothing). Then keep what the backward reads: if xc or cc
     * is written in place before the backward runs, the backward fails with a message naming
     * "sqdist" instead of computing a wrong gradient. */
    sl_node *node;
    if (!sl_record(&node, "sqdist", y, 2, (sl_tensor *[]){xc, cc}, sqdist_backward, 0)) return NULL;
    if (!sl_save_for_backward(node, xc) || !sl_save_for_backward(node, cc)) return NULL;
    return y;
}

/* ---------------------------------------------------------------- 5. tests */

static sl_arena *arena;

/* Each test runs in a fresh arena, made current, with no pending error. */
static void setup(void)
{
    sl_error_clear();
    arena = sl_arena_new(0);
    sl_arena_set(arena);
}

static void teardown(void)
{
    sl_arena_set(NULL);
    sl_arena_free(arena);
    sl_error_clear();
}

/* Element (i, j) of a 2-D (or, with j = 0 and a 1-D t, element i) through its strides. */
static double read_2d(const sl_tensor *t, int64_t i, int64_t j)
{
    int64_t at = t->offset + i * t->strides[0] + (t->ndim > 1 ? j * t->strides[1] : 0);
    return t->dtype == SL_F32 ? ((const float *)t->data)[at] : ((const double *)t->data)[at];
}

/* A leaf (N, D) of normal(0, 1) values that requires grad. */
static sl_tensor *randn(sl_rng *rng, sl_dtype dtype, int64_t rows, int64_t cols)
{
    sl_tensor *t = cols ? sl_rand_normal(rng, dtype, 2, (int64_t[]){rows, cols}, 0, 1)
                        : sl_rand_normal(rng, dtype, 1, (int64_t[]){rows}, 0, 1);
    return sl_requires_grad(t, true);
}

/* The functions under gradcheck: sqdist itself; sqdist of a transposed x (a strided view: the
 * leaf in[0] is (D, N)); sqdist with c broadcast from a single learned value (stride 0). */
static sl_tensor *call_plain(sl_tensor *const *in, int n, void *user)
{
    (void)n, (void)user;
    return sqdist(in[0], in[1]);
}
static sl_tensor *call_transposed(sl_tensor *const *in, int n, void *user)
{
    (void)n, (void)user;
    return sqdist(sl_transpose(in[0], 0, 1), in[1]);
}
static sl_tensor *call_broadcast(sl_tensor *const *in, int n, void *user)
{
    (void)n, (void)user;
    return sqdist(in[0], sl_expand(in[1], 1, (int64_t[]){in[0]->shape[1]}));
}

/* The analytic gradient against central differences, in float64 (sl_gradcheck's defaults:
 * eps 1e-6, |a - n| <= 1e-5 + 1e-3 |n|), for both inputs. */
START_TEST(gradcheck_sqdist)
{
    sl_rng rng = sl_rng_seed(1);
    sl_gradcheck_result r;
    sl_tensor *x = randn(&rng, SL_F64, 5, 3), *c = randn(&rng, SL_F64, 3, 0);
    ck_assert_msg(sl_gradcheck(call_plain, 2, (sl_tensor *[]){x, c}, NULL, NULL, &r), "%s",
                  r.message);
    sl_tensor *xt = randn(&rng, SL_F64, 3, 5); /* read as its transpose, (5, 3) */
    ck_assert_msg(sl_gradcheck(call_transposed, 2, (sl_tensor *[]){xt, c}, NULL, NULL, &r), "%s",
                  r.message);
    sl_tensor *c1 = randn(&rng, SL_F64, 1, 0); /* one value, broadcast to (3) */
    ck_assert_msg(sl_gradcheck(call_broadcast, 2, (sl_tensor *[]){x, c1}, NULL, NULL, &r), "%s",
                  r.message);
}
END_TEST

/* y against a naive loop that reads x and c through their strides, in f64 and f32, on a
 * contiguous and a transposed x; and the gradient of sum(y) in closed form. */
START_TEST(values_match_naive_loop)
{
    sl_rng rng = sl_rng_seed(2);
    for (int f = 0; f < 2; f++) {
        sl_dtype dtype = f ? SL_F32 : SL_F64;
        double tol = f ? 1e-5 : 1e-12;
        sl_tensor *c = randn(&rng, dtype, 4, 0);
        sl_tensor *xs[2] = {randn(&rng, dtype, 6, 4), sl_transpose(randn(&rng, dtype, 4, 6), 0, 1)};
        for (int k = 0; k < 2; k++) {
            sl_tensor *x = xs[k], *y = sqdist(x, c);
            ck_assert_msg(y != NULL, "%s", sl_error_message());
            ck_assert_int_eq(y->ndim, 1);
            ck_assert_int_eq(y->shape[0], 6);
            for (int64_t n = 0; n < 6; n++) {
                double want = 0;
                for (int64_t d = 0; d < 4; d++) want += pow(read_2d(x, n, d) - read_2d(c, d, 0), 2);
                ck_assert_double_eq_tol(sl_get(y, n), want, tol * (1 + want));
            }
        }
        /* d sum(y) / dc[d] = -2 sum_n (x[n, d] - c[d]) */
        sl_tensor *x = xs[0];
        ck_assert(sl_backward(sl_sum_all(sqdist(x, c))));
        for (int64_t d = 0; d < 4; d++) {
            double want = 0;
            for (int64_t n = 0; n < 6; n++) want -= 2 * (read_2d(x, n, d) - read_2d(c, d, 0));
            ck_assert_double_eq_tol(sl_get(c->grad, d), want, tol * (1 + fabs(want)));
        }
    }
}
END_TEST

START_TEST(errors_name_the_op_and_shapes)
{
    sl_tensor *x = sl_zeros(SL_F64, 2, (int64_t[]){4, 3});
    ck_assert_ptr_null(sqdist(x, sl_zeros(SL_F64, 1, (int64_t[]){5})));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sqdist: x [4,3] and c [5]: need x (N, D) and c (D)");
    sl_error_clear();
    ck_assert_ptr_null(sqdist(x, sl_zeros(SL_F32, 1, (int64_t[]){3})));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    ck_assert_str_eq(sl_error_message(), "sqdist: x f64 [4,3] and c f32 [3]: need one float dtype");
    sl_error_clear();
    /* A failed call's NULL passes through, keeping the first message. */
    ck_assert_ptr_null(sqdist(sl_matmul(x, x), sl_zeros(SL_F64, 1, (int64_t[]){3})));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [4,3] @ [4,3]");
    sl_error_clear();
    /* Writing an input in place between forward and backward is caught. */
    sl_rng rng = sl_rng_seed(3);
    sl_tensor *xr = randn(&rng, SL_F64, 4, 3), *c = randn(&rng, SL_F64, 3, 0);
    sl_tensor *loss = sl_sum_all(sqdist(xr, c));
    ck_assert(sl_fill(c, 0));
    ck_assert(!sl_backward(loss));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    sl_error_clear();
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("custom_op");
    TCase *tc = tcase_create("sqdist");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, gradcheck_sqdist);
    tcase_add_test(tc, values_match_naive_loop);
    tcase_add_test(tc, errors_name_the_op_and_shapes);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_set_fork_status(runner, CK_NOFORK); /* one process: simpler to debug */
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
