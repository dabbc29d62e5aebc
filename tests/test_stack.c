/* sl_stack, sl_split, sl_chunk (ops/stack.c): values against naive loops on every dim and
 * layout, stack equal to concat of unsqueezed inputs, pieces that are views, torch.chunk's piece
 * counts, float64 gradchecks, errors. */
#include "testutil.h"

#include <string.h>

#define ck_assert_error(call, code, msg)                                                           \
    do {                                                                                           \
        sl_error_clear();                                                                          \
        ck_assert_ptr_null(call);                                                                  \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)

#define ck_assert_fails(call, code, msg)                                                           \
    do {                                                                                           \
        sl_error_clear();                                                                          \
        ck_assert_int_eq(call, -1);                                                                \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)

/* ---------------------------------------------------------------- stack */

START_TEST(stack_values_every_dim)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3)), *y = tu_randn(&r, SL_F64, sl_shape(2, 3));
    sl_tensor *z = tu_randn(&r, SL_F64, sl_shape(2, 3));
    sl_tensor *in[3] = {x, tu_noncontig(y), tu_permuted_leaf(z)};
    for (int dim = -3; dim <= 2; dim++) {
        int d = dim < 0 ? dim + 3 : dim;
        sl_tensor *s = sl_stack(3, in, dim);
        ck_assert_msg(s != NULL, "%s", sl_error_message());
        ck_assert_int_eq(s->ndim, 3);
        int64_t want_shape[3], c[3];
        for (int k = 0, j = 0; k < 3; k++) want_shape[k] = k == d ? 3 : x->shape[j++];
        for (int k = 0; k < 3; k++) ck_assert_int_eq(s->shape[k], want_shape[k]);
        for (int64_t o = 0; o < 18; o++) { /* s[c] = in[c[d]][c without d] */
            int64_t f = o;
            for (int k = 2; k >= 0; k--) {
                c[k] = f % want_shape[k];
                f /= want_shape[k];
            }
            int64_t rc[2], j = 0;
            for (int k = 0; k < 3; k++)
                if (k != d) rc[j++] = c[k];
            ck_assert_double_eq(sl_get(s, o), sl_get(in[c[d]], rc[0] * 3 + rc[1]));
        }
        /* The same bits as concat of the inputs unsqueezed at dim. */
        sl_tensor *u[3];
        for (int i = 0; i < 3; i++) u[i] = sl_unsqueeze(in[i], dim);
        ck_assert_double_eq(tu_max_abs_diff(s, sl_concat(3, u, d)), 0);
    }
    /* One tensor, 0-d tensors, i32 tensors. */
    ck_assert_str_eq(sl_shape_str(sl_stack(1, &x, 0)), "[1,2,3]");
    sl_tensor *sc[2] = {sl_scalar(SL_F32, 1.5), sl_scalar(SL_F32, -2)};
    sl_tensor *v = sl_stack(2, sc, 0);
    ck_assert_str_eq(sl_shape_str(v), "[2]");
    ck_assert_double_eq(sl_get(v, 1), -2);
    sl_tensor *ii[2] = {sl_full(SL_I32, sl_shape(2), 7), sl_full(SL_I32, sl_shape(2), 8)};
    sl_tensor *iv = sl_stack(2, ii, -1);
    ck_assert_int_eq(iv->dtype, SL_I32);
    ck_assert_double_eq(sl_get(iv, 1), 8);
    ck_assert_double_eq(sl_get(iv, 2), 7);
}
END_TEST

START_TEST(stack_backward)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3)), *y = tu_randn(&r, SL_F64, sl_shape(2, 3));
    sl_tensor *c = sl_rand_normal(&r, SL_F64, sl_shape(2, 3), 0, 1); /* no grad */
    /* x twice: its gradient gets both slices. */
    sl_tensor *s = sl_stack(4, (sl_tensor *[]){x, c, y, x}, 1);
    ck_assert_str_eq(sl_shape_str(s), "[2,4,3]");
    sl_tensor *g = sl_rand_normal(&r, SL_F64, sl_shape(2, 4, 3), 0, 1);
    ck_assert(sl_backward_ex(s, g, 0));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double g0 = sl_get(g, (i * 4 + 0) * 3 + j), g2 = sl_get(g, (i * 4 + 2) * 3 + j);
            double g3 = sl_get(g, (i * 4 + 3) * 3 + j);
            ck_assert_double_eq(sl_get(x->grad, i * 3 + j), g0 + g3);
            ck_assert_double_eq(sl_get(y->grad, i * 3 + j), g2);
        }
    ck_assert_ptr_null(c->grad);
}
END_TEST

static sl_tensor *call_stack(sl_tensor *const *in, int n, void *u)
{
    return sl_stack(n, in, *(const int *)u);
}

START_TEST(gradcheck_stack)
{
    sl_rng r = sl_rng_seed(3);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(2, 3, 2)),
              *b = tu_randn(&r, SL_F64, sl_shape(2, 3, 2));
    sl_tensor *c = tu_randn(&r, SL_F64, sl_shape(2, 3, 2));
    for (int dim = -4; dim <= 3; dim++) {
        tu_gradcheck(call_stack, 3, (sl_tensor *[]){a, b, c}, &dim);
        tu_gradcheck(call_stack, 3, (sl_tensor *[]){tu_noncontig(a), tu_permuted_leaf(b), a}, &dim);
        tu_f32_matches_f64(call_stack, 3, (sl_tensor *[]){a, b, c}, &dim);
    }
}
END_TEST

START_TEST(stack_errors)
{
    sl_tensor *a = sl_zeros(SL_F64, sl_shape(2, 3)), *b = sl_zeros(SL_F64, sl_shape(2, 4));
    ck_assert_error(sl_stack(0, &a, 0), SL_ERR_ARG, "sl_stack: no tensors (n = 0, tensors given)");
    ck_assert_error(sl_stack(2, NULL, 0), SL_ERR_ARG, "sl_stack: no tensors (n = 2, tensors NULL)");
    ck_assert_error(sl_stack(2, (sl_tensor *[]){a, b}, 0), SL_ERR_SHAPE,
                    "sl_stack: shapes differ: tensors[0] [2,3] vs tensors[1] [2,4]");
    ck_assert_error(sl_stack(3, (sl_tensor *[]){a, a, sl_zeros(SL_F32, sl_shape(2, 3))}, 0),
                    SL_ERR_DTYPE,
                    "sl_stack: dtypes differ: tensors[0] f64 [2,3] vs tensors[2] f32 [2,3]");
    ck_assert_error(sl_stack(2, (sl_tensor *[]){a, a}, 3), SL_ERR_ARG,
                    "sl_stack: dim 3 out of range for stacking [2,3] (from -3 to 2)");
    ck_assert_error(sl_stack(2, (sl_tensor *[]){a, a}, -4), SL_ERR_ARG,
                    "sl_stack: dim -4 out of range for stacking [2,3] (from -3 to 2)");
    ck_assert_error(sl_stack(2, (sl_tensor *[]){a, NULL}, 0), SL_ERR_ARG,
                    "sl_stack: argument 'tensors[1]' is NULL");
    ck_assert_error(sl_stack(2, (sl_tensor *[]){SL_NONE, a}, 0), SL_ERR_ARG,
                    "sl_stack: argument 'tensors[0]' is SL_NONE; it is not optional");
    sl_tensor *big = sl_zeros(SL_F64, sl_shape(1, 1, 1, 1, 1, 1, 1, 1));
    ck_assert_error(sl_stack(1, &big, 0), SL_ERR_SHAPE,
                    "sl_stack: [1,1,1,1,1,1,1,1] already has 8 dims");
}
END_TEST

/* ---------------------------------------------------------------- split, chunk */

/* Asserts that out[0..n) are the consecutive pieces of a along dim with the given sizes: views
 * of a's storage with a's values. */
static void check_pieces(sl_tensor *a, int dim, int n, const int64_t *sizes, sl_tensor **out)
{
    int d = dim < 0 ? dim + a->ndim : dim;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(out[i]);
        ck_assert_ptr_eq(out[i]->data, a->data); /* a view */
        ck_assert_int_eq(out[i]->ndim, a->ndim);
        for (int k = 0; k < a->ndim; k++)
            ck_assert_int_eq(out[i]->shape[k], k == d ? sizes[i] : a->shape[k]);
        for (int64_t o = 0; o < sl_numel(out[i]); o++) {
            int64_t c[SL_MAX_DIMS], f = o, src = 0;
            for (int k = a->ndim - 1; k >= 0; k--) {
                c[k] = f % out[i]->shape[k];
                f /= out[i]->shape[k];
            }
            c[d] += at;
            for (int k = 0; k < a->ndim; k++) src = src * a->shape[k] + c[k];
            ck_assert_double_eq(sl_get(out[i], o), sl_get(a, src));
        }
        at += sizes[i];
    }
    ck_assert_int_eq(at, a->shape[d]);
}

START_TEST(split_values_and_views)
{
    sl_rng r = sl_rng_seed(4);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 7, 4));
    sl_tensor *views[] = {a, tu_noncontig(a), tu_permuted_leaf(a)};
    sl_tensor *out[4];
    for (int v = 0; v < 3; v++) {
        ck_assert_int_eq(sl_split(views[v], 1, 3, (int64_t[]){2, 0, 5}, out), 3);
        check_pieces(views[v], 1, 3, (int64_t[]){2, 0, 5}, out);
        ck_assert_int_eq(sl_split(views[v], -1, 2, (int64_t[]){1, 3}, out), 2);
        check_pieces(views[v], -1, 2, (int64_t[]){1, 3}, out);
        ck_assert_int_eq(sl_split(views[v], 0, 1, (int64_t[]){3}, out), 1);
        check_pieces(views[v], 0, 1, (int64_t[]){3}, out);
    }
    /* A write through a piece is a write to a. */
    sl_tensor *c = sl_zeros(SL_F64, sl_shape(4));
    ck_assert_int_eq(sl_split(c, 0, 2, (int64_t[]){1, 3}, out), 2);
    ck_assert(sl_fill(out[1], 5));
    ck_assert_double_eq(sl_get(c, 0), 0);
    ck_assert_double_eq(sl_get(c, 3), 5);
}
END_TEST

/* The pieces' counts and sizes follow torch.chunk. */
START_TEST(chunk_counts_follow_torch)
{
    struct {
        int64_t len;
        int n, count;
        int64_t sizes[6];
    } cases[] = {{6, 3, 3, {2, 2, 2}},     {5, 4, 3, {2, 2, 1}},
                 {7, 3, 3, {3, 3, 1}},     {2, 5, 2, {1, 1}},
                 {1, 1, 1, {1}},           {0, 3, 3, {0, 0, 0}},
                 {10, 4, 4, {3, 3, 3, 1}}, {9, 6, 5, {2, 2, 2, 2, 1}}};
    sl_rng r = sl_rng_seed(5);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        sl_tensor *a = tu_randn(&r, SL_F32, sl_shape(2, cases[k].len));
        sl_tensor *out[6];
        ck_assert_int_eq(sl_chunk(a, 1, cases[k].n, out), cases[k].count);
        check_pieces(a, 1, cases[k].count, cases[k].sizes, out);
        for (int i = cases[k].count; i < cases[k].n; i++) ck_assert_ptr_null(out[i]);
    }
    /* Splitting q, k, v out of one projection. */
    sl_tensor *qkv = tu_randn(&r, SL_F64, sl_shape(2, 5, 12)), *out[3];
    ck_assert_int_eq(sl_chunk(qkv, -1, 3, out), 3);
    check_pieces(qkv, -1, 3, (int64_t[]){4, 4, 4}, out);
}
END_TEST

/* fn(a) uses every piece differently, so a gradient routed to the wrong part shows. */
static sl_tensor *combine(int n, sl_tensor **p, int d)
{
    sl_tensor *parts[4];
    for (int i = 0; i < n; i++) parts[i] = sl_mul_scalar(sl_pow_scalar(p[i], i + 1), i + 2);
    return sl_concat(n, parts, d);
}

typedef struct {
    int dim, n;
    int64_t sizes[4];
    bool chunk;
} split_spec;

static sl_tensor *call_split(sl_tensor *const *in, int n, void *u)
{
    const split_spec *s = u;
    sl_tensor *p[4];
    int count =
        s->chunk ? sl_chunk(in[0], s->dim, s->n, p) : sl_split(in[0], s->dim, s->n, s->sizes, p);
    if (count < 0) return NULL;
    return combine(count, p, s->dim < 0 ? s->dim + in[0]->ndim : s->dim);
}

START_TEST(gradcheck_split)
{
    sl_rng r = sl_rng_seed(6);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 5, 2));
    split_spec specs[] = {{.dim = 1, .n = 3, .sizes = {2, 1, 2}},
                          {.dim = -1, .n = 2, .sizes = {1, 1}},
                          {.dim = 0, .n = 2, .sizes = {3, 0}},
                          {.dim = 1, .n = 1, .sizes = {5}}};
    for (int k = 0; k < 4; k++) {
        tu_gradcheck(call_split, 1, &a, &specs[k]);
        tu_gradcheck(call_split, 1, (sl_tensor *[]){tu_permuted_leaf(a)}, &specs[k]);
        tu_f32_matches_f64(call_split, 1, &a, &specs[k]);
    }
}
END_TEST

START_TEST(gradcheck_chunk)
{
    sl_rng r = sl_rng_seed(7);
    sl_tensor *a = tu_randn(&r, SL_F64, sl_shape(3, 5, 2));
    split_spec specs[] = {{.dim = 1, .n = 4, .chunk = true},
                          {.dim = 0, .n = 2, .chunk = true},
                          {.dim = -1, .n = 3, .chunk = true}};
    for (int k = 0; k < 3; k++) {
        tu_gradcheck(call_split, 1, &a, &specs[k]);
        tu_gradcheck(call_split, 1, (sl_tensor *[]){tu_noncontig(a)}, &specs[k]);
        tu_f32_matches_f64(call_split, 1, &a, &specs[k]);
    }
}
END_TEST

START_TEST(split_chunk_errors)
{
    sl_tensor *a = sl_zeros(SL_F64, sl_shape(3, 5)), *out[4] = {a, a, a, a};
    ck_assert_fails(sl_split(a, 1, 2, (int64_t[]){2, 2}, out), SL_ERR_SHAPE,
                    "sl_split: 2 sizes add up to 4, not 5, the size of dim 1 of [3,5]");
    ck_assert_ptr_null(out[0]); /* the n entries are cleared on failure */
    ck_assert_ptr_null(out[1]);
    ck_assert_ptr_eq(out[2], a);
    ck_assert_fails(sl_split(a, 0, 2, (int64_t[]){4, -1}, out), SL_ERR_ARG,
                    "sl_split: size -1 at position 1 is negative");
    ck_assert_fails(sl_split(a, 0, 2, (int64_t[]){INT64_MAX, 2}, out), SL_ERR_SHAPE,
                    "sl_split: 2 sizes add up to more than 9223372036854775807, not 3, the size "
                    "of dim 0 of [3,5]");
    ck_assert_fails(sl_split(a, 2, 1, (int64_t[]){3}, out), SL_ERR_ARG,
                    "sl_split: axis 2 out of range for [3,5]");
    ck_assert_fails(sl_split(a, 0, 0, (int64_t[]){3}, out), SL_ERR_ARG,
                    "sl_split: n = 0, sizes given, out given: need n >= 1 and both");
    ck_assert_fails(sl_split(a, 0, 1, NULL, out), SL_ERR_ARG,
                    "sl_split: n = 1, sizes NULL, out given: need n >= 1 and both");
    ck_assert_fails(sl_split(NULL, 0, 1, (int64_t[]){3}, out), SL_ERR_ARG,
                    "sl_split: argument 'a' is NULL");
    ck_assert_fails(sl_chunk(a, 0, 0, out), SL_ERR_ARG,
                    "sl_chunk: n = 0, out given: need n >= 1 and out");
    ck_assert_fails(sl_chunk(a, 0, 2, NULL), SL_ERR_ARG,
                    "sl_chunk: n = 2, out NULL: need n >= 1 and out");
    ck_assert_fails(sl_chunk(a, -3, 2, out), SL_ERR_ARG,
                    "sl_chunk: axis -3 out of range for [3,5]");
    ck_assert_fails(sl_chunk(SL_NONE, 0, 2, out), SL_ERR_ARG,
                    "sl_chunk: argument 'a' is SL_NONE; it is not optional");
    /* A NULL from a failed call keeps its message. */
    sl_error_clear();
    ck_assert_int_eq(sl_chunk(sl_add(a, sl_zeros(SL_F64, sl_shape(2))), 0, 2, out), -1);
    ck_assert_str_eq(sl_error_message(), "sl_add: shapes do not broadcast: [3,5] vs [2]");
    sl_error_clear();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stack");
    TCase *tc = tcase_create("stack");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, stack_values_every_dim);
    tu_add_test(s, tc, stack_backward);
    tu_add_test(s, tc, gradcheck_stack);
    tu_add_test(s, tc, stack_errors);
    tu_add_test(s, tc, split_values_and_views);
    tu_add_test(s, tc, chunk_counts_follow_torch);
    tu_add_test(s, tc, gradcheck_split);
    tu_add_test(s, tc, gradcheck_chunk);
    tu_add_test(s, tc, split_chunk_errors);
    return tu_run(s);
}
