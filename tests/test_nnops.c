/* nn primitives (ops/layer_norm.c, embedding.c, cross_entropy.c, dropout.c, select.c: layer
 * norm, embedding, cross-entropy, dropout, where, masked_fill): values against naive loops,
 * error messages, float64 gradchecks, views, f32 against f64. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static sl_tensor *i32_tensor(int ndim, const int64_t *shape, const int32_t *vals)
{
    sl_tensor *t = sl_from_data(SL_I32, ndim, shape, vals);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* The same i32 values as a NON-contiguous view (every other element of a wider buffer). */
static sl_tensor *i32_noncontig(const sl_tensor *t)
{
    int64_t shape[SL_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    shape[t->ndim - 1] *= 2;
    sl_tensor *wide = sl_full(SL_I32, t->ndim, shape, -7);
    sl_tensor *v = sl_detach(wide);
    for (int i = 0; i < t->ndim; i++) v->shape[i] = t->shape[i];
    v->strides[t->ndim - 1] = 2;
    v->offset = 1;
    ck_assert(!sl_is_contiguous(v));
    ck_assert(sl_copy_into(v, t));
    return v;
}

/* Random 0/1 values. */
static sl_tensor *random_mask(sl_rng *r, int ndim, const int64_t *shape)
{
    sl_tensor *m = sl_zeros(SL_I32, ndim, shape);
    for (int64_t i = 0; i < sl_numel(m); i++) sl_set(m, i, (double)sl_rng_below(r, 2));
    return m;
}

static sl_tensor *detached_copy(const sl_tensor *t)
{
    sl_tensor *c = sl_empty(t->dtype, t->ndim, t->shape);
    ck_assert(sl_copy_into(c, t));
    return c;
}

#define ck_assert_error(call, code, msg)                                                         \
    do {                                                                                         \
        sl_error_clear();                                                                        \
        ck_assert_ptr_null(call);                                                                \
        ck_assert_int_eq(sl_error(), code);                                                      \
        ck_assert_str_eq(sl_error_message(), msg);                                               \
        sl_error_clear();                                                                        \
    } while (0)

/* ---------------------------------------------------------------- layernorm */

/* Two-pass layernorm over the last dim in double: the test's own reference. w, b may be NULL. */
static void layernorm_ref(const sl_tensor *x, const sl_tensor *w, const sl_tensor *b, double eps,
                          double *out)
{
    int64_t C = x->shape[x->ndim - 1], rows = sl_numel(x) / C;
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t j = 0; j < C; j++) mean += sl_get(x, r * C + j);
        mean /= (double)C;
        for (int64_t j = 0; j < C; j++) {
            double d = sl_get(x, r * C + j) - mean;
            var += d * d;
        }
        var /= (double)C;
        for (int64_t j = 0; j < C; j++) {
            double v = (sl_get(x, r * C + j) - mean) / sqrt(var + eps);
            if (w) v *= sl_get(w, j);
            if (b) v += sl_get(b, j);
            out[r * C + j] = v;
        }
    }
}

static void assert_matches_ref(const sl_tensor *y, const double *ref, double rtol, double atol)
{
    for (int64_t i = 0; i < sl_numel(y); i++) ck_assert_close(sl_get(y, i), ref[i], rtol, atol);
}

/* user: which of weight and bias follow x in the inputs: "wb", "w", "b" or "". */
static sl_tensor *call_layernorm(sl_tensor *const *in, int n, void *user)
{
    const char *which = user;
    int k = 1;
    sl_tensor *w = strchr(which, 'w') ? in[k++] : SL_NONE;
    sl_tensor *b = strchr(which, 'b') ? in[k++] : SL_NONE;
    return sl_layer_norm(in[0], w, b, 1e-5);
}

START_TEST(layernorm_values)
{
    sl_rng r = sl_rng_seed(10);
    sl_tensor *x = sl_rand_normal(&r, SL_F64, sl_shape(3, 7), 5, 2);
    sl_tensor *w = sl_rand_normal(&r, SL_F64, sl_shape(7), 1, 0.5);
    sl_tensor *b = sl_rand_normal(&r, SL_F64, sl_shape(7), 0, 1);
    double ref[21];
    sl_tensor *ws[] = {w, w, NULL, NULL}, *bs[] = {b, NULL, b, NULL};
    for (int k = 0; k < 4; k++) {
        sl_tensor *y = sl_layer_norm(x, ws[k] ? ws[k] : SL_NONE, bs[k] ? bs[k] : SL_NONE, 1e-5);
        ck_assert_ptr_nonnull(y);
        ck_assert_str_eq(sl_shape_str(y), "[3,7]");
        layernorm_ref(x, ws[k], bs[k], 1e-5, ref);
        assert_matches_ref(y, ref, 1e-12, 1e-12);
    }
    /* A large eps visibly changes the result. */
    sl_tensor *y = sl_layer_norm(x, SL_NONE, SL_NONE, 0.5);
    layernorm_ref(x, NULL, NULL, 0.5, ref);
    assert_matches_ref(y, ref, 1e-12, 1e-12);

    /* f32 rows with a large mean and a small spread: statistics in double keep full precision
     * (a one-pass E[x^2] - E[x]^2 in float would lose every digit here). */
    sl_tensor *x32 = sl_rand_normal(&r, SL_F32, sl_shape(4, 64), 1e4, 1);
    sl_tensor *y32 = sl_layer_norm(x32, SL_NONE, SL_NONE, 1e-5);
    ck_assert_int_eq(y32->dtype, SL_F32);
    double ref32[256];
    layernorm_ref(x32, NULL, NULL, 1e-5, ref32);
    assert_matches_ref(y32, ref32, 0, 1e-5);
}
END_TEST

START_TEST(layernorm_errors)
{
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(2, 3));
    sl_tensor *w3 = sl_ones(SL_F64, sl_shape(3)), *w4 = sl_ones(SL_F64, sl_shape(4));
    ck_assert_error(sl_layer_norm(x, w4, SL_NONE, 1e-5), SL_ERR_SHAPE,
                    "sl_layer_norm: weight [4] does not match the last dim of x [2,3] "
                    "(expected [3])");
    ck_assert_error(sl_layer_norm(x, w3, x, 1e-5), SL_ERR_SHAPE,
                    "sl_layer_norm: bias [2,3] does not match the last dim of x [2,3] "
                    "(expected [3])");
    ck_assert_error(sl_layer_norm(x, sl_ones(SL_F32, sl_shape(3)), SL_NONE, 1e-5), SL_ERR_DTYPE,
                    "sl_layer_norm: dtypes differ: f64 [2,3] vs f32 [3]");
    ck_assert_error(sl_layer_norm(sl_scalar(SL_F64, 1), SL_NONE, SL_NONE, 1e-5), SL_ERR_SHAPE,
                    "sl_layer_norm: x must have at least 1 dim (normalised over the last), got []");
    ck_assert_error(sl_layer_norm(x, w3, w3, -1), SL_ERR_ARG,
                    "sl_layer_norm: eps -1 must be finite and >= 0");
    ck_assert_error(sl_layer_norm(sl_zeros(SL_I32, sl_shape(3)), SL_NONE, SL_NONE, 1e-5),
                    SL_ERR_DTYPE, "sl_layer_norm: expected f32 or f64, got i32 [3]");
    ck_assert_error(sl_layer_norm(NULL, w3, w3, 1e-5), SL_ERR_ARG,
                    "sl_layer_norm: argument 'x' is NULL");
    /* A NULL weight that a failed call returned propagates that call's error. */
    ck_assert_error(sl_layer_norm(x, sl_layer_norm(x, w4, SL_NONE, 1e-5), SL_NONE, 1e-5),
                    SL_ERR_SHAPE,
                    "sl_layer_norm: weight [4] does not match the last dim of x [2,3] "
                    "(expected [3])");
}
END_TEST

/* The optional weight and bias: SL_NONE is absent whatever error is pending; a NULL is a failed
 * call's result (its error kept) or, with no error pending, a mistake reported as one. Before
 * SL_NONE, a NULL weight meant "no affine" and, with an unrelated error pending, made the op
 * return NULL with that old message. */
START_TEST(layernorm_optional_arguments)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *x = sl_rand_normal(&r, SL_F64, sl_shape(2, 3), 0, 1);
    sl_tensor *w = sl_rand_normal(&r, SL_F64, sl_shape(3), 1, 0.1);
    double ref[6];
    layernorm_ref(x, NULL, NULL, 1e-5, ref);
    sl_error_clear();
    ck_assert_ptr_null(sl_matmul(x, x)); /* an unrelated error, left pending */
    sl_tensor *y = sl_layer_norm(x, SL_NONE, SL_NONE, 1e-5);
    ck_assert_ptr_nonnull(y);
    assert_matches_ref(y, ref, 1e-12, 1e-12);
    ck_assert_ptr_nonnull(sl_layer_norm(x, w, SL_NONE, 1e-5));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE); /* still the matmul's */
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [2,3] @ [2,3]");
    /* a NULL from a failed call propagates, its message kept, in either optional argument */
    ck_assert_ptr_null(sl_layer_norm(x, SL_NONE, sl_matmul(x, x), 1e-5));
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [2,3] @ [2,3]");
    ck_assert_ptr_null(sl_layer_norm(x, NULL, SL_NONE, 1e-5));
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [2,3] @ [2,3]");
    /* with no error pending, a NULL is reported; SL_NONE is not an input */
    ck_assert_error(sl_layer_norm(x, NULL, SL_NONE, 1e-5), SL_ERR_ARG,
                    "sl_layer_norm: argument 'weight' is NULL");
    ck_assert_error(sl_layer_norm(x, w, NULL, 1e-5), SL_ERR_ARG,
                    "sl_layer_norm: argument 'bias' is NULL");
    ck_assert_error(sl_layer_norm(SL_NONE, w, SL_NONE, 1e-5), SL_ERR_ARG,
                    "sl_layer_norm: argument 'x' is SL_NONE; it is not optional");
}
END_TEST

START_TEST(gradcheck_layernorm)
{
    sl_rng r = sl_rng_seed(11);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(4));
    sl_tensor *b = tu_randn(&r, SL_F64, sl_shape(4));
    tu_gradcheck(call_layernorm, 3, (sl_tensor *[]){x, w, b}, "wb");
    tu_gradcheck(call_layernorm, 2, (sl_tensor *[]){x, w}, "w");
    tu_gradcheck(call_layernorm, 2, (sl_tensor *[]){x, b}, "b");
    tu_gradcheck(call_layernorm, 1, &x, "");
    /* Views. */
    sl_tensor *views[] = {tu_noncontig(x), tu_noncontig(w), tu_noncontig(b)};
    tu_gradcheck(call_layernorm, 3, views, "wb");
    /* Only the parameters require grad (no dx). */
    sl_tensor *xc = detached_copy(x);
    tu_gradcheck(call_layernorm, 3, (sl_tensor *[]){xc, w, b}, "wb");
    tu_f32_matches_f64(call_layernorm, 3, (sl_tensor *[]){x, w, b}, "wb");
    tu_f32_matches_f64(call_layernorm, 1, &x, "");
}
END_TEST

/* Rows of 19: two 8-wide vector groups and 3 leftover elements in every sum and every update
 * (the kernels' two paths), values against the reference and gradchecks, f32 against f64. */
START_TEST(layernorm_vector_and_tail)
{
    sl_rng r = sl_rng_seed(13);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 19));
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(19));
    sl_tensor *b = tu_randn(&r, SL_F64, sl_shape(19));
    double ref[57];
    layernorm_ref(x, w, b, 1e-5, ref);
    assert_matches_ref(sl_layer_norm(x, w, b, 1e-5), ref, 1e-12, 1e-12);
    tu_gradcheck(call_layernorm, 3, (sl_tensor *[]){x, w, b}, "wb");
    tu_gradcheck(call_layernorm, 1, &x, "");
    tu_f32_matches_f64(call_layernorm, 3, (sl_tensor *[]){x, w, b}, "wb");
}
END_TEST

/* Large enough for several row blocks on the pool: gradients against naive double loops, and
 * the same bits with 1 and 2 threads. */
START_TEST(layernorm_large_parallel)
{
    enum { R = 600, C = 256 };
    sl_rng r = sl_rng_seed(12);
    sl_tensor *x = tu_randn(&r, SL_F32, sl_shape(R, C));
    sl_tensor *w = tu_randn(&r, SL_F32, sl_shape(C));
    sl_tensor *b = tu_randn(&r, SL_F32, sl_shape(C));
    sl_tensor *g = sl_rand_normal(&r, SL_F32, sl_shape(R, C), 0, 1);
    int n0 = sl_get_num_threads();
    float *grads[2][3];
    for (int t = 0; t < 2; t++) {
        sl_set_num_threads(t + 1);
        sl_zero_grad(x);
        sl_zero_grad(w);
        sl_zero_grad(b);
        sl_tensor *y = sl_layer_norm(x, w, b, 1e-5);
        ck_assert(sl_backward_ex(y, g, 0));
        sl_tensor *gs[3] = {x->grad, w->grad, b->grad};
        for (int k = 0; k < 3; k++) {
            grads[t][k] = malloc(sizeof(float) * (size_t)sl_numel(gs[k]));
            memcpy(grads[t][k], gs[k]->data, sizeof(float) * (size_t)sl_numel(gs[k]));
        }
    }
    sl_set_num_threads(n0);
    ck_assert(!memcmp(grads[0][0], grads[1][0], sizeof(float) * R * C));
    ck_assert(!memcmp(grads[0][1], grads[1][1], sizeof(float) * C));
    ck_assert(!memcmp(grads[0][2], grads[1][2], sizeof(float) * C));

    /* Naive double loops: db = sum g, dw = sum g * xhat, dx from the closed form. */
    static double xhat[R * C];
    layernorm_ref(x, NULL, NULL, 1e-5, xhat);
    for (int j = 0; j < C; j++) {
        double db = 0, dw = 0;
        for (int i = 0; i < R; i++) {
            db += sl_get(g, i * C + j);
            dw += sl_get(g, i * C + j) * xhat[i * C + j];
        }
        ck_assert_close(grads[0][2][j], db, 1e-5, 1e-4);
        ck_assert_close(grads[0][1][j], dw, 1e-5, 1e-4);
    }
    for (int i = 0; i < R; i += 97) {
        double mean = 0, var = 0, md = 0, mdx = 0;
        for (int j = 0; j < C; j++) mean += sl_get(x, i * C + j) / C;
        for (int j = 0; j < C; j++) var += pow(sl_get(x, i * C + j) - mean, 2) / C;
        for (int j = 0; j < C; j++) {
            double dh = sl_get(g, i * C + j) * sl_get(w, j);
            md += dh / C;
            mdx += dh * xhat[i * C + j] / C;
        }
        for (int j = 0; j < C; j++) {
            double dh = sl_get(g, i * C + j) * sl_get(w, j);
            double want = (dh - md - xhat[i * C + j] * mdx) / sqrt(var + 1e-5);
            ck_assert_close(grads[0][0][i * C + j], want, 1e-4, 1e-5);
        }
    }
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 3; k++) free(grads[t][k]);
}
END_TEST

/* ---------------------------------------------------------------- embedding */

static sl_tensor *call_embedding(sl_tensor *const *in, int n, void *u)
{
    return sl_embedding(in[0], in[1]);
}

START_TEST(embedding_values_and_backward)
{
    /* weight[v, d] = 10 v + d */
    sl_tensor *w = sl_empty(SL_F64, sl_shape(5, 3));
    for (int v = 0; v < 5; v++)
        for (int d = 0; d < 3; d++) sl_set(w, v * 3 + d, 10 * v + d);
    sl_requires_grad(w, true);
    int32_t ids[] = {4, 0, 4, 1, 1, 2};
    sl_tensor *idx = i32_tensor(sl_shape(2, 3), ids);
    sl_tensor *views[2] = {idx, i32_noncontig(idx)}; /* and through a non-contiguous view */
    for (int k = 0; k < 2; k++) {
        sl_tensor *y = sl_embedding(w, views[k]);
        ck_assert_ptr_nonnull(y);
        ck_assert_int_eq(y->ndim, 3);
        ck_assert_int_eq(y->shape[2], 3);
        for (int i = 0; i < 6; i++)
            for (int d = 0; d < 3; d++)
                ck_assert_close(sl_get(y, i * 3 + d), 10 * ids[i] + d, 0, 0);
    }
    /* Backward: a scatter-add, repeated indices accumulate, unused rows stay 0. */
    sl_rng r = sl_rng_seed(20);
    sl_tensor *y = sl_embedding(w, idx);
    sl_tensor *g = sl_rand_normal(&r, SL_F64, sl_shape(2, 3, 3), 0, 1);
    ck_assert(sl_backward_ex(y, g, 0));
    for (int v = 0; v < 5; v++)
        for (int d = 0; d < 3; d++) {
            double want = 0;
            for (int i = 0; i < 6; i++)
                if (ids[i] == v) want += sl_get(g, i * 3 + d);
            ck_assert_close(sl_get(w->grad, v * 3 + d), want, 1e-15, 1e-15);
        }
    ck_assert_close(sl_get(w->grad, 3 * 3 + 1), 0, 0, 0);
}
END_TEST

START_TEST(embedding_errors)
{
    sl_tensor *w = sl_zeros(SL_F64, sl_shape(5, 3));
    ck_assert_error(sl_embedding(w, i32_tensor(sl_shape(4), (int32_t[]){0, 1, 5, 2})), SL_ERR_INDEX,
                    "sl_embedding: index 5 at flat position 2 is out of range [0, 5) for "
                    "weight [5,3]");
    ck_assert_error(sl_embedding(w, i32_tensor(sl_shape(2, 2), (int32_t[]){0, 1, 2, -1})),
                    SL_ERR_INDEX,
                    "sl_embedding: index -1 at flat position 3 is out of range [0, 5) for "
                    "weight [5,3]");
    ck_assert_error(sl_embedding(w, sl_zeros(SL_F32, sl_shape(2, 3))), SL_ERR_DTYPE,
                    "sl_embedding: indices must be i32, got f32 [2,3]");
    sl_tensor *zero = i32_tensor(sl_shape(1), (int32_t[]){0});
    ck_assert_error(sl_embedding(sl_zeros(SL_F64, sl_shape(5)), zero), SL_ERR_SHAPE,
                    "sl_embedding: weight must be 2-D [V, D], got [5]");
    ck_assert_error(sl_embedding(w, NULL), SL_ERR_ARG, "sl_embedding: argument 'indices' is NULL");
}
END_TEST

START_TEST(gradcheck_embedding)
{
    sl_rng r = sl_rng_seed(21);
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(6, 4));
    sl_tensor *idx = i32_tensor(sl_shape(2, 4), (int32_t[]){5, 0, 5, 2, 2, 2, 1, 3});
    tu_gradcheck(call_embedding, 2, (sl_tensor *[]){w, idx}, NULL);
    tu_gradcheck(call_embedding, 2, (sl_tensor *[]){tu_noncontig(w), i32_noncontig(idx)}, NULL);
    /* 0-d indices give one row. */
    sl_tensor *one = i32_tensor(0, NULL, (int32_t[]){3});
    tu_gradcheck(call_embedding, 2, (sl_tensor *[]){w, one}, NULL);
    tu_f32_matches_f64(call_embedding, 2, (sl_tensor *[]){w, idx}, NULL);
}
END_TEST

/* Enough tokens and columns for the pool: forward and backward against naive loops. */
START_TEST(embedding_large_parallel)
{
    enum { V = 50, D = 64, N = 4096 };
    sl_rng r = sl_rng_seed(22);
    sl_tensor *w = tu_randn(&r, SL_F32, sl_shape(V, D));
    static int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)sl_rng_below(&r, V);
    sl_tensor *y = sl_embedding(w, i32_tensor(sl_shape(N), ids));
    const float *pw = w->data, *py = y->data;
    for (int i = 0; i < N; i++) ck_assert(!memcmp(py + i * D, pw + ids[i] * D, sizeof(float) * D));
    sl_tensor *g = sl_rand_normal(&r, SL_F32, sl_shape(N, D), 0, 1);
    ck_assert(sl_backward_ex(y, g, 0));
    static double want[V * D];
    const float *pg = g->data;
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) want[ids[i] * D + d] += pg[i * D + d];
    const float *pgw = w->grad->data;
    for (int k = 0; k < V * D; k++) ck_assert_close(pgw[k], want[k], 1e-4, 1e-4);
}
END_TEST

/* ---------------------------------------------------------------- cross-entropy */

/* The reference: mean over counted rows of log(sum_j exp(x_j)) - x_t, the sum written out. */
static double cross_entropy_ref(const sl_tensor *x, const int32_t *tgt, int32_t ignore)
{
    int64_t C = x->shape[x->ndim - 1], rows = sl_numel(x) / C, count = 0;
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (ignore != SL_NO_IGNORE && tgt[r] == ignore) continue;
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += exp(sl_get(x, r * C + j));
        total += log(s) - sl_get(x, r * C + tgt[r]);
        count++;
    }
    return count ? total / (double)count : 0;
}

static sl_tensor *call_cross_entropy(sl_tensor *const *in, int n, void *u)
{
    return sl_cross_entropy(in[0], in[1], -100);
}

START_TEST(cross_entropy_values)
{
    sl_rng r = sl_rng_seed(30);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(4, 5));
    int32_t tg[] = {1, 4, 0, 2};
    sl_tensor *t = i32_tensor(sl_shape(4), tg);
    sl_tensor *loss = sl_cross_entropy(x, t, SL_NO_IGNORE);
    ck_assert_int_eq(loss->ndim, 0);
    ck_assert_close(sl_item(loss), cross_entropy_ref(x, tg, SL_NO_IGNORE), 1e-14, 0);
    /* The gradient: (softmax - onehot) / count. */
    ck_assert(sl_backward(loss));
    for (int i = 0; i < 4; i++) {
        double s = 0;
        for (int j = 0; j < 5; j++) s += exp(sl_get(x, i * 5 + j));
        for (int j = 0; j < 5; j++)
            ck_assert_close(sl_get(x->grad, i * 5 + j),
                            (exp(sl_get(x, i * 5 + j)) / s - (j == tg[i])) / 4, 1e-12, 1e-15);
    }
    /* Logits around 1000: exp would overflow without the max subtracted.
     * Row 0 [1000, 1001, 1002], target 0: 2 + log(1 + e^-1 + e^-2).
     * Row 1 [-1000, 0, 1000], target 2: log(1 + e^-1000 + e^-2000) = 0 in double. */
    double big[] = {1000, 1001, 1002, -1000, 0, 1000};
    double want = (2 + log(1 + exp(-1.0) + exp(-2.0))) / 2;
    for (int k = 0; k < 2; k++) {
        sl_tensor *xb = sl_from_data(SL_F64, sl_shape(2, 3), big);
        if (k) xb = sl_to_dtype(xb, SL_F32);
        sl_requires_grad(xb, true);
        sl_tensor *l = sl_cross_entropy(xb, i32_tensor(sl_shape(2), (int32_t[]){0, 2}), -100);
        ck_assert_close(sl_item(l), want, k ? 1e-7 : 1e-12, 0); /* lse ~ 1002: ulp 1e-13 */
        ck_assert(sl_backward(l));
        double z = 1 + exp(-1.0) + exp(-2.0);
        ck_assert_close(sl_get(xb->grad, 0), (exp(-2.0) / z - 1) / 2, 1e-6, 0);
        ck_assert_close(sl_get(xb->grad, 2), (1 / z) / 2, 1e-6, 0);
        ck_assert_close(sl_get(xb->grad, 5), 0, 0, 1e-15);
        ck_assert(isfinite(sl_get(xb->grad, 3)) && isfinite(sl_get(xb->grad, 4)));
    }
}
END_TEST

START_TEST(cross_entropy_ignore_index)
{
    sl_rng r = sl_rng_seed(31);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    int32_t tg[] = {1, -100, 3, 0, -100, 2};
    sl_tensor *t = i32_tensor(sl_shape(2, 3), tg);
    sl_tensor *loss = sl_cross_entropy(x, t, -100);
    ck_assert_close(sl_item(loss), cross_entropy_ref(x, tg, -100), 1e-14, 0);
    /* Ignored rows get no gradient; counted rows are divided by 4, not 6. */
    ck_assert(sl_backward(loss));
    for (int i = 0; i < 6; i++) {
        double s = 0;
        for (int j = 0; j < 4; j++) s += exp(sl_get(x, i * 4 + j));
        for (int j = 0; j < 4; j++) {
            double want = tg[i] == -100 ? 0 : (exp(sl_get(x, i * 4 + j)) / s - (j == tg[i])) / 4;
            ck_assert_close(sl_get(x->grad, i * 4 + j), want, 1e-12, 1e-15);
        }
    }
    /* An ignore_index inside [0, C) ignores that class. */
    int32_t tg2[] = {1, 2, 3, 0, 2, 2};
    sl_tensor *l2 = sl_cross_entropy(x, i32_tensor(sl_shape(2, 3), tg2), 2);
    ck_assert_close(sl_item(l2), cross_entropy_ref(x, tg2, 2), 1e-14, 0);
    /* SL_NO_IGNORE counts every target, so -100 is out of range. */
    ck_assert_error(sl_cross_entropy(x, t, SL_NO_IGNORE), SL_ERR_INDEX,
                    "sl_cross_entropy: target -100 at flat position 1 is out of range [0, 4) for "
                    "logits [2,3,4]");
    /* Every target ignored: the loss is 0 and the gradient 0 (not NaN). */
    sl_zero_grad(x);
    int32_t none[] = {-100, -100, -100, -100, -100, -100};
    sl_tensor *l3 = sl_cross_entropy(x, i32_tensor(sl_shape(2, 3), none), -100);
    ck_assert_ptr_nonnull(l3);
    ck_assert(sl_item(l3) == 0.0);
    ck_assert(sl_backward(l3));
    ck_assert_ptr_nonnull(x->grad);
    for (int i = 0; i < 24; i++) ck_assert(sl_get(x->grad, i) == 0.0);
}
END_TEST

/* f32 rows of 37 classes: two 16-wide vectors and a padded tail in the kernels, loss and
 * gradient against the definition in double, with an ignored row; and large logits. */
START_TEST(cross_entropy_f32_vectors_and_tail)
{
    enum { R = 5, C = 37 };
    sl_rng r = sl_rng_seed(21);
    sl_tensor *x = sl_requires_grad(sl_rand_normal(&r, SL_F32, sl_shape(R, C), 0, 3), true);
    int32_t tg[R] = {0, 15, 16, 36, -1};
    sl_tensor *loss = sl_cross_entropy(x, i32_tensor(sl_shape(R), tg), -1);
    ck_assert_ptr_nonnull(loss);
    ck_assert_close(sl_item(loss), cross_entropy_ref(x, tg, -1), 1e-6, 0);
    ck_assert(sl_backward(loss));
    for (int i = 0; i < R; i++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += exp(sl_get(x, i * C + j));
        for (int j = 0; j < C; j++) {
            double want = i == 4 ? 0 : (exp(sl_get(x, i * C + j)) / s - (j == tg[i])) / (R - 1);
            ck_assert_close(sl_get(x->grad, i * C + j), want, 1e-5, 1e-8);
        }
    }
    /* logits near 1000 on every lane: the max is subtracted in the vector path too */
    sl_tensor *big = sl_add_scalar(sl_rand_normal(&r, SL_F32, sl_shape(2, C), 0, 1), 1000);
    sl_tensor *lb = sl_cross_entropy(big, i32_tensor(sl_shape(2), (int32_t[]){3, 20}), -1);
    ck_assert(isfinite(sl_item(lb)));
    sl_tensor *shifted = sl_add_scalar(big, -1000);
    ck_assert_close(sl_item(lb),
                    sl_item(sl_cross_entropy(shifted, i32_tensor(sl_shape(2), (int32_t[]){3, 20}),
                                             -1)),
                    1e-4, 0);
}
END_TEST

START_TEST(cross_entropy_errors)
{
    sl_tensor *x = sl_zeros(SL_F64, sl_shape(4, 5));
    ck_assert_error(sl_cross_entropy(x, i32_tensor(sl_shape(4), (int32_t[]){0, 1, 5, 2}), -100),
                    SL_ERR_INDEX,
                    "sl_cross_entropy: target 5 at flat position 2 is out of range [0, 5) for "
                    "logits [4,5]");
    ck_assert_error(sl_cross_entropy(x, i32_tensor(sl_shape(4), (int32_t[]){-1, 1, 1, 2}), -100),
                    SL_ERR_INDEX,
                    "sl_cross_entropy: target -1 at flat position 0 is out of range [0, 5) for "
                    "logits [4,5]");
    ck_assert_error(sl_cross_entropy(x, i32_tensor(sl_shape(3), (int32_t[]){0, 1, 2}), -100),
                    SL_ERR_SHAPE,
                    "sl_cross_entropy: targets [3] do not match the leading dims of logits [4,5] "
                    "(expected [4])");
    ck_assert_error(sl_cross_entropy(x, sl_zeros(SL_I32, sl_shape(4, 5)), -100), SL_ERR_SHAPE,
                    "sl_cross_entropy: targets [4,5] do not match the leading dims of logits [4,5] "
                    "(expected [4])");
    ck_assert_error(sl_cross_entropy(x, sl_zeros(SL_F64, sl_shape(4)), -100), SL_ERR_DTYPE,
                    "sl_cross_entropy: targets must be i32, got f64 [4]");
    ck_assert_error(sl_cross_entropy(sl_scalar(SL_F64, 0), sl_zeros(SL_I32, 0, NULL), -100),
                    SL_ERR_SHAPE,
                    "sl_cross_entropy: logits must have at least 1 dim (classes last), got []");
}
END_TEST

START_TEST(gradcheck_cross_entropy)
{
    sl_rng r = sl_rng_seed(32);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 5));
    sl_tensor *t = i32_tensor(sl_shape(2, 3), (int32_t[]){4, -100, 0, 2, 2, 1});
    tu_gradcheck(call_cross_entropy, 2, (sl_tensor *[]){x, t}, NULL);
    tu_gradcheck(call_cross_entropy, 2, (sl_tensor *[]){tu_noncontig(x), i32_noncontig(t)}, NULL);
    tu_f32_matches_f64(call_cross_entropy, 2, (sl_tensor *[]){x, t}, NULL);
    /* One row: logits [5], a 0-d target. */
    sl_tensor *x1 = tu_randn(&r, SL_F64, sl_shape(5));
    tu_gradcheck(call_cross_entropy, 2, (sl_tensor *[]){x1, i32_tensor(0, NULL, (int32_t[]){3})},
                 NULL);
}
END_TEST

/* ---------------------------------------------------------------- dropout */

/* user: the rng, copied on every call so each call draws the same mask. */
static sl_tensor *call_dropout(sl_tensor *const *in, int n, void *user)
{
    sl_rng r = *(const sl_rng *)user;
    return sl_dropout(in[0], 0.4, &r, true);
}

START_TEST(dropout_mask)
{
    sl_rng r = sl_rng_seed(40);
    sl_tensor *x = tu_noncontig(sl_rand_normal(&r, SL_F64, sl_shape(30, 40), 0, 1));
    sl_rng a = sl_rng_seed(7), b = sl_rng_seed(7), replay = sl_rng_seed(7);
    sl_tensor *ya = sl_dropout(x, 0.3, &a, true), *yb = sl_dropout(x, 0.3, &b, true);
    ck_assert_double_eq(tu_max_abs_diff(ya, yb), 0);
    /* One uniform per element in row-major order: element i is kept when u_i >= p. */
    for (int64_t i = 0; i < 1200; i++) {
        double want = sl_rng_uniform(&replay) >= 0.3 ? sl_get(x, i) * (1 / (1 - 0.3)) : 0;
        ck_assert_double_eq(sl_get(ya, i), want);
    }
    ck_assert(!memcmp(&a, &replay, sizeof a)); /* exactly numel draws */
    sl_rng c = sl_rng_seed(8);
    ck_assert_double_gt(tu_max_abs_diff(sl_dropout(x, 0.3, &c, true), ya), 0);
    /* The backward passes the gradient through the same mask, scaled. */
    ck_assert(sl_backward_ex(ya, sl_ones(SL_F64, sl_shape(30, 40)), 0));
    for (int64_t i = 0; i < 1200; i++)
        ck_assert_double_eq(sl_get(x->grad, i), sl_get(ya, i) != 0 ? 1 / (1 - 0.3) : 0);
}
END_TEST

START_TEST(dropout_fraction_and_identity)
{
    enum { N = 200000 };
    sl_rng r = sl_rng_seed(41);
    sl_tensor *x = sl_ones(SL_F32, sl_shape(N));
    sl_tensor *y = sl_dropout(x, 0.25, &r, true);
    const float *py = y->data;
    int64_t kept = 0;
    for (int i = 0; i < N; i++) {
        if (py[i] != 0) {
            kept++;
            ck_assert_float_eq(py[i], (float)(1 / 0.75));
        }
    }
    /* The standard deviation of the fraction is sqrt(0.25 * 0.75 / N) = 0.001. */
    ck_assert_double_lt(fabs((double)kept / N - 0.75), 0.005);
    /* Eval and p = 0: x itself, no draws. */
    sl_rng before = r;
    ck_assert_ptr_eq(sl_dropout(x, 0.25, &r, false), x);
    ck_assert_ptr_eq(sl_dropout(x, 0.0, &r, true), x);
    ck_assert_ptr_eq(sl_dropout(x, 0.5, NULL, false), x);
    ck_assert(!memcmp(&before, &r, sizeof r));
    /* Errors. */
    ck_assert_error(sl_dropout(x, 1.0, &r, true), SL_ERR_ARG,
                    "sl_dropout: p = 1 is outside [0, 1)");
    ck_assert_error(sl_dropout(x, -0.5, &r, false), SL_ERR_ARG,
                    "sl_dropout: p = -0.5 is outside [0, 1)");
    ck_assert_error(sl_dropout(x, NAN, &r, true), SL_ERR_ARG,
                    "sl_dropout: p = nan is outside [0, 1)");
    ck_assert_error(sl_dropout(x, 0.5, NULL, true), SL_ERR_ARG,
                    "sl_dropout: rng is NULL (needed to train with p > 0)");
    ck_assert_error(sl_dropout(sl_zeros(SL_I32, sl_shape(2)), 0.5, &r, true), SL_ERR_DTYPE,
                    "sl_dropout: expected f32 or f64, got i32 [2]");
}
END_TEST

START_TEST(gradcheck_dropout)
{
    sl_rng r = sl_rng_seed(42);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 5));
    sl_rng mask_rng = sl_rng_seed(43);
    tu_gradcheck(call_dropout, 1, &x, &mask_rng);
    sl_tensor *v = tu_noncontig(x);
    tu_gradcheck(call_dropout, 1, &v, &mask_rng);
    tu_f32_matches_f64(call_dropout, 1, &x, &mask_rng);
}
END_TEST

/* ---------------------------------------------------------------- where, masked_fill */

static sl_tensor *call_where(sl_tensor *const *in, int n, void *u)
{
    return sl_where(in[0], in[1], in[2]);
}

static sl_tensor *call_masked_fill(sl_tensor *const *in, int n, void *u)
{
    return sl_masked_fill(in[0], in[1], 2.5);
}

START_TEST(where_values)
{
    /* cond [2,1,3], a [3], b [4,1] -> [2,4,3] */
    int32_t cv[] = {1, 0, 7, 0, 0, -1};
    double av[] = {10, 20, 30}, bv[] = {-1, -2, -3, -4};
    sl_tensor *c = i32_tensor(sl_shape(2, 1, 3), cv);
    sl_tensor *a = sl_from_data(SL_F64, sl_shape(3), av);
    sl_tensor *b = sl_from_data(SL_F64, sl_shape(4, 1), bv);
    sl_tensor *y = sl_where(c, a, b);
    ck_assert_int_eq(y->ndim, 3);
    ck_assert(y->shape[0] == 2 && y->shape[1] == 4 && y->shape[2] == 3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++)
                ck_assert_double_eq(sl_get(y, (i * 4 + j) * 3 + k), cv[i * 3 + k] ? av[k] : bv[j]);

    sl_tensor *f = sl_zeros(SL_F64, sl_shape(2, 3));
    ck_assert_error(sl_where(f, a, b), SL_ERR_DTYPE, "sl_where: cond must be i32, got f64 [2,3]");
    ck_assert_error(sl_where(c, a, sl_zeros(SL_F32, sl_shape(3))), SL_ERR_DTYPE,
                    "sl_where: dtypes differ: f64 [3] vs f32 [3]");
    ck_assert_error(sl_where(sl_zeros(SL_I32, sl_shape(2, 3)), sl_zeros(SL_F64, sl_shape(4)), a),
                    SL_ERR_SHAPE, "sl_where: shapes do not broadcast: cond [2,3], a [4], b [3]");
    ck_assert_error(sl_where(c, a, NULL), SL_ERR_ARG, "sl_where: argument 'b' is NULL");
}
END_TEST

START_TEST(gradcheck_where)
{
    sl_rng r = sl_rng_seed(50);
    sl_tensor *c = random_mask(&r, sl_shape(2, 1, 4));
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *b = tu_randn(&r, SL_F64, sl_shape(3, 1)); /* broadcast over dims 0 and 2 */
    tu_gradcheck(call_where, 3, (sl_tensor *[]){c, a, b}, NULL);
    tu_gradcheck(call_where, 3, (sl_tensor *[]){i32_noncontig(c), tu_noncontig(a), tu_noncontig(b)},
                 NULL);
    tu_gradcheck(call_where, 3, (sl_tensor *[]){c, b, a}, NULL);
    tu_gradcheck(call_where, 3, (sl_tensor *[]){c, a, a}, NULL); /* both branches, one tensor */
    tu_f32_matches_f64(call_where, 3, (sl_tensor *[]){c, a, b}, NULL);
    /* The summed gradient of the broadcast b, by hand: g = 1 counts where cond is 0. */
    sl_zero_grad(b);
    sl_tensor *y = sl_where(c, a, b);
    ck_assert(sl_backward_ex(y, sl_ones(SL_F64, sl_shape(2, 3, 4)), 0));
    int zeros = 0;
    for (int i = 0; i < 8; i++) zeros += sl_get(c, i) == 0;
    for (int j = 0; j < 3; j++) ck_assert_double_eq(sl_get(b->grad, j), zeros);
}
END_TEST

START_TEST(masked_fill_values_and_errors)
{
    double xv[] = {1, 2, 3, 4, 5, 6};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(2, 3), xv), true);
    sl_tensor *m = i32_tensor(sl_shape(3), (int32_t[]){0, 1, 0});
    sl_tensor *y = sl_masked_fill(x, m, -INFINITY);
    for (int i = 0; i < 6; i++)
        ck_assert_double_eq(sl_get(y, i), i % 3 == 1 ? -INFINITY : xv[i]);
    ck_assert(sl_backward_ex(y, sl_full(SL_F64, sl_shape(2, 3), 3.0), 0));
    for (int i = 0; i < 6; i++) ck_assert_double_eq(sl_get(x->grad, i), i % 3 == 1 ? 0 : 3);

    ck_assert_error(sl_masked_fill(x, sl_zeros(SL_I32, sl_shape(2, 4)), 0), SL_ERR_SHAPE,
                    "sl_masked_fill: mask [2,4] does not broadcast to x [2,3]");
    ck_assert_error(sl_masked_fill(x, sl_zeros(SL_I32, sl_shape(2, 2, 3)), 0), SL_ERR_SHAPE,
                    "sl_masked_fill: mask [2,2,3] does not broadcast to x [2,3]");
    ck_assert_error(sl_masked_fill(x, sl_zeros(SL_F64, sl_shape(2, 3)), 0), SL_ERR_DTYPE,
                    "sl_masked_fill: mask must be i32, got f64 [2,3]");
}
END_TEST

START_TEST(gradcheck_masked_fill)
{
    sl_rng r = sl_rng_seed(51);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    sl_tensor *m = random_mask(&r, sl_shape(2, 1, 4));
    tu_gradcheck(call_masked_fill, 2, (sl_tensor *[]){x, m}, NULL);
    tu_gradcheck(call_masked_fill, 2, (sl_tensor *[]){tu_noncontig(x), i32_noncontig(m)}, NULL);
    tu_f32_matches_f64(call_masked_fill, 2, (sl_tensor *[]){x, m}, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nnops");
    TCase *tc = tcase_create("nnops");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, layernorm_values);
    tu_add_test(s, tc, layernorm_errors);
    tu_add_test(s, tc, layernorm_optional_arguments);
    tu_add_test(s, tc, gradcheck_layernorm);
    tu_add_test(s, tc, layernorm_vector_and_tail);
    tu_add_test(s, tc, layernorm_large_parallel);
    tu_add_test(s, tc, embedding_values_and_backward);
    tu_add_test(s, tc, embedding_errors);
    tu_add_test(s, tc, gradcheck_embedding);
    tu_add_test(s, tc, embedding_large_parallel);
    tu_add_test(s, tc, cross_entropy_values);
    tu_add_test(s, tc, cross_entropy_ignore_index);
    tu_add_test(s, tc, cross_entropy_f32_vectors_and_tail);
    tu_add_test(s, tc, cross_entropy_errors);
    tu_add_test(s, tc, gradcheck_cross_entropy);
    tu_add_test(s, tc, dropout_mask);
    tu_add_test(s, tc, dropout_fraction_and_identity);
    tu_add_test(s, tc, gradcheck_dropout);
    tu_add_test(s, tc, where_values);
    tu_add_test(s, tc, gradcheck_where);
    tu_add_test(s, tc, masked_fill_values_and_errors);
    tu_add_test(s, tc, gradcheck_masked_fill);
    tu_every_isa();
    return tu_run(s);
}
