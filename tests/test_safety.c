/* API safety (issue 10): an in-place write to a tensor a backward needs fails that backward
 * instead of giving a wrong gradient (every op keeps what its backward reads, and nothing
 * else); a tensor used after its arena was reset is refused by ops, accessors and the backward;
 * released memory is poisoned in debug builds. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define ck_assert_contains(s, part)                                                                \
    ck_assert_msg(strstr((s), (part)) != NULL, "'%s' does not contain '%s'", (s), (part))

/* ---------------------------------------------------------------- in-place writes */

/* The reproducer: y = x * x at x = 1, x set to 5 before the backward. The gradient
 * used to come out as 10 (2 * the new x) where the forward's is 2; now the backward fails,
 * naming the op and the tensor, and accumulates nothing. */
START_TEST(fill_between_forward_and_backward_fails)
{
    sl_tensor *x = sl_requires_grad(sl_full(SL_F64, sl_shape(1), 1.0), true);
    x->name = "x";
    sl_tensor *y = sl_mul(x, x);
    ck_assert(sl_fill(x, 5.0));
    ck_assert(!sl_backward(y));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(),
                     "sl_backward: sl_mul needs input 1 (x) f64 [1] as it was in the forward, but "
                     "it was written in place since (version 0, now 1): its gradient would be "
                     "wrong; change it after the backward, or pass the op a copy");
    ck_assert_ptr_null(x->grad); /* checked before any gradient was accumulated */
    sl_error_clear();
    /* a forward at the new value is fine: d(x^2)/dx = 2 * 5 */
    ck_assert(sl_backward(sl_mul(x, x)));
    ck_assert_double_eq(sl_get(x->grad, 0), 10.0);
}
END_TEST

/* The counter belongs to the storage: a write through any view of it counts, and a view the op
 * kept sees a write to its base. */
START_TEST(writes_through_views_count)
{
    sl_rng r = sl_rng_seed(1);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(4));
    sl_tensor *y = sl_sum_all(sl_mul(x, x));
    ck_assert(sl_copy_into(sl_narrow(x, 0, 1, 2), sl_zeros(SL_F64, sl_shape(2))));
    ck_assert(!sl_backward(y));
    ck_assert_contains(sl_error_message(), "sl_backward: sl_mul needs input 1 f64 [4]");
    sl_error_clear();

    sl_tensor *v = sl_narrow(x, 0, 0, 2); /* the op keeps the view */
    y = sl_sum_all(sl_mul(v, v));
    sl_set(x, 3, 1.0); /* outside the view's elements, but the same storage */
    ck_assert(!sl_backward(y));
    ck_assert_contains(sl_error_message(), "sl_backward: sl_mul needs input 1 f64 [2] as it was");
    sl_error_clear();

    /* sl_set on the tensor itself */
    y = sl_sum_all(sl_mul(x, x));
    sl_set(x, 0, 2.0);
    ck_assert(!sl_backward(y));
    ck_assert_contains(sl_error_message(), "sl_mul needs input 1 f64 [4]");
    sl_error_clear();

    /* a raw write is not seen until sl_mark_modified says so */
    sl_tensor *e = sl_exp(x);
    y = sl_sum_all(e);
    ((double *)e->data)[0] = 0;
    sl_mark_modified(e);
    ck_assert(!sl_backward(y));
    ck_assert_contains(sl_error_message(), "sl_backward: sl_exp needs its output f64 [4] as it");
    sl_error_clear();
}
END_TEST

/* An optimizer step between a forward and its backward changes the weights the backward needs:
 * the backward fails naming the parameter. The ordinary loop (forward, backward, step, next
 * forward) is unaffected, for both optimizers. */
START_TEST(optimizer_step_between_forward_and_backward_fails)
{
    for (int k = 0; k < 2; k++) {
        sl_params *ps = sl_params_new(SL_F32);
        sl_rng r = sl_rng_seed(2);
        sl_tensor *w1 = sl_params_add(ps, "l1.weight", sl_shape(4, 3), true);
        sl_tensor *w2 = sl_params_add(ps, "l2.weight", sl_shape(2, 4), true);
        ck_assert(sl_init_normal(w1, &r, 0.5) && sl_init_normal(w2, &r, 0.5));
        sl_optim *opt = k ? sl_adamw_new(ps, NULL) : sl_sgd_new(ps, 0.9, 0);
        ck_assert_ptr_nonnull(opt);
        sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(5, 3), 0, 1);
        for (int step = 0; step < 3; step++) { /* the ordinary loop */
            sl_tensor *h = sl_linear(x, w1, SL_NONE, SL_ACT_GELU_TANH);
            sl_tensor *loss = sl_mean_all(sl_linear(h, w2, SL_NONE, SL_ACT_NONE));
            ck_assert_msg(sl_backward(loss), "%s", sl_error_message());
            ck_assert(sl_optim_step(opt, 0.1));
            sl_params_zero_grad(ps);
        }
        sl_tensor *h = sl_linear(x, w1, SL_NONE, SL_ACT_GELU_TANH);
        sl_tensor *loss = sl_mean_all(sl_linear(h, w2, SL_NONE, SL_ACT_NONE));
        ck_assert(sl_optim_step(opt, 0.1)); /* grads are there (zeroed): a real update */
        ck_assert(!sl_backward(loss));
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        ck_assert_contains(sl_error_message(),
                           "sl_backward: sl_linear needs input 1 (l2.weight) f32 [2,4] as it was "
                           "in the forward, but it was written in place since");
        sl_error_clear();
        sl_optim_free(opt);
        sl_params_free(ps);
    }
}
END_TEST

/* What each op keeps: after the forward, `victim` is marked written; the backward must fail
 * (naming op) when the op's backward reads it, and succeed when it does not. */
static void expect(sl_tensor *y, sl_tensor *victim, const char *op, bool kept)
{
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    sl_tensor *loss = sl_sum_all(y); /* sum keeps nothing */
    ck_assert_ptr_nonnull(loss);
    sl_mark_modified(victim);
    bool ok = sl_backward(loss);
    if (kept) {
        ck_assert_msg(!ok, "%s: the backward ran on a changed input", op);
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        char want[64];
        snprintf(want, sizeof want, "sl_backward: %s needs ", op);
        ck_assert_contains(sl_error_message(), want);
        sl_error_clear();
    } else {
        ck_assert_msg(ok, "%s: %s", op ? op : "?", sl_error_message());
    }
}

static sl_rng leaf_rng;
static sl_tensor *leaf(int ndim, const int64_t *shape)
{
    return tu_randn(&leaf_rng, SL_F64, ndim, shape);
}
static sl_tensor *positive(int ndim, const int64_t *shape) /* for log, sqrt, pow */
{
    return sl_requires_grad(sl_full(SL_F64, ndim, shape, 1.5), true);
}

static sl_tensor *add_s(sl_tensor *x) { return sl_add_scalar(x, 2); }
static sl_tensor *mul_s(sl_tensor *x) { return sl_mul_scalar(x, 2); }
static sl_tensor *pow_s(sl_tensor *x) { return sl_pow_scalar(x, 3); }
static sl_tensor *gelu_e(sl_tensor *x) { return sl_gelu(x, SL_GELU_ERF); }
static sl_tensor *gelu_t(sl_tensor *x) { return sl_gelu(x, SL_GELU_TANH); }
static sl_tensor *softmax1(sl_tensor *x) { return sl_softmax(x, -1); }
static sl_tensor *log_softmax1(sl_tensor *x) { return sl_log_softmax(x, -1); }
static sl_tensor *var1(sl_tensor *x) { return sl_var(x, 1, (int[]){1}, false, 1); }
static sl_tensor *sum1(sl_tensor *x) { return sl_sum(x, 1, (int[]){1}, false); }
static sl_tensor *mean1(sl_tensor *x) { return sl_mean(x, 1, (int[]){1}, false); }
static sl_tensor *max1(sl_tensor *x) { return sl_max(x, 1, (int[]){1}, false); }
static sl_tensor *reshape1(sl_tensor *x) { return sl_reshape(x, sl_shape(6)); }
static sl_tensor *permute1(sl_tensor *x) { return sl_permute(x, (int[]){1, 0}); }
static sl_tensor *narrow1(sl_tensor *x) { return sl_narrow(x, 1, 1, 2); }
static sl_tensor *contiguous1(sl_tensor *x) { return sl_contiguous(sl_transpose(x, 0, 1)); }
static sl_tensor *concat1(sl_tensor *x) { return sl_concat(2, (sl_tensor *[]){x, x}, 0); }
static sl_tensor *to_f32(sl_tensor *x) { return sl_to_dtype(x, SL_F32); }
static sl_tensor *dropout1(sl_tensor *x)
{
    sl_rng r = sl_rng_seed(3);
    return sl_dropout(x, 0.5, &r, true);
}

START_TEST(every_op_keeps_what_its_backward_reads)
{
    leaf_rng = sl_rng_seed(4);
    static const struct {
        const char *op;
        sl_tensor *(*f)(sl_tensor *);
        bool x, y; /* whether the backward reads the input, the output */
    } unary[] = {
        {"sl_neg", sl_neg, false, false},        {"sl_add_scalar", add_s, false, false},
        {"sl_mul_scalar", mul_s, false, false},  {"sl_pow_scalar", pow_s, true, false},
        {"sl_exp", sl_exp, false, true},         {"sl_log", sl_log, true, false},
        {"sl_sqrt", sl_sqrt, false, true},       {"sl_tanh", sl_tanh, false, true},
        {"sl_sigmoid", sl_sigmoid, false, true}, {"sl_relu", sl_relu, true, false},
        {"sl_gelu", gelu_e, true, false},        {"sl_gelu", gelu_t, true, false},
        {"sl_softmax", softmax1, false, true},   {"sl_log_softmax", log_softmax1, false, true},
        {"sl_var", var1, true, false},           {"sl_sum", sum1, false, false},
        {"sl_mean", mean1, false, false},        {"sl_max", max1, false, false},
        {"sl_reshape", reshape1, false, false},  {"sl_permute", permute1, false, false},
        {"sl_narrow", narrow1, false, false},    {"sl_contiguous", contiguous1, false, false},
        {"sl_concat", concat1, false, false},    {"sl_to_dtype", to_f32, false, false},
        {"sl_dropout", dropout1, false, false},
    };
    for (size_t i = 0; i < sizeof unary / sizeof *unary; i++)
        for (int which = 0; which < 2; which++) {
            sl_tensor *x = positive(sl_shape(2, 3));
            sl_tensor *y = unary[i].f(x);
            expect(y, which ? y : x, unary[i].op, which ? unary[i].y : unary[i].x);
        }

    /* binary: mul and div read their operands, add and sub do not */
    sl_tensor *(*const binary[])(sl_tensor *, sl_tensor *) = {sl_add, sl_sub, sl_mul, sl_div};
    const char *const bname[] = {"sl_add", "sl_sub", "sl_mul", "sl_div"};
    for (int i = 0; i < 4; i++)
        for (int which = 0; which < 2; which++) {
            sl_tensor *a = leaf(sl_shape(2, 3)), *b = positive(sl_shape(3));
            expect(binary[i](a, b), which ? b : a, bname[i], i >= 2);
        }
    /* a * c with c constant: da reads c, and nothing reads a */
    sl_tensor *a = leaf(sl_shape(3)), *c = sl_full(SL_F64, sl_shape(3), 2);
    expect(sl_mul(a, c), a, "sl_mul", false);
    a = leaf(sl_shape(3));
    expect(sl_mul(a, c), c, "sl_mul", true);

    /* matmul and linear read both operands; not the bias */
    for (int which = 0; which < 2; which++) {
        sl_tensor *p = leaf(sl_shape(2, 3)), *q = leaf(sl_shape(3, 4));
        expect(sl_matmul(p, q), which ? q : p, "sl_matmul", true);
    }
    for (int which = 0; which < 3; which++) {
        sl_tensor *x = leaf(sl_shape(2, 3)), *w = leaf(sl_shape(4, 3)), *b = leaf(sl_shape(4));
        sl_tensor *in[3] = {x, w, b};
        expect(sl_linear(x, w, b, SL_ACT_GELU_TANH), in[which], "sl_linear", which < 2);
    }
    /* layer norm reads x and the weight, not the bias; a non-contiguous x is copied, and the
     * copy is what the backward reads */
    for (int which = 0; which < 3; which++) {
        sl_tensor *x = leaf(sl_shape(2, 3)), *w = leaf(sl_shape(3)), *b = leaf(sl_shape(3));
        sl_tensor *in[3] = {x, w, b};
        expect(sl_layer_norm(x, w, b, 1e-5), in[which], "sl_layer_norm", which < 2);
    }
    sl_tensor *xt = tu_noncontig(leaf(sl_shape(2, 3)));
    expect(sl_layer_norm(xt, SL_NONE, SL_NONE, 1e-5), xt, "sl_layer_norm", false);

    /* integer arguments: the targets, the indices, the condition, the mask */
    sl_tensor *tgt = sl_from_data(SL_I32, sl_shape(2), (int32_t[]){0, 2});
    sl_tensor *logits = leaf(sl_shape(2, 3));
    expect(sl_cross_entropy(logits, tgt, -1), logits, "sl_cross_entropy", true);
    expect(sl_cross_entropy(leaf(sl_shape(2, 3)), tgt, -1), tgt, "sl_cross_entropy", true);
    sl_tensor *idx = sl_from_data(SL_I32, sl_shape(3), (int32_t[]){1, 0, 1});
    sl_tensor *table = leaf(sl_shape(2, 4));
    expect(sl_embedding(table, idx), table, "sl_embedding", false);
    expect(sl_embedding(leaf(sl_shape(2, 4)), idx), idx, "sl_embedding", true);
    sl_tensor *cond = sl_from_data(SL_I32, sl_shape(3), (int32_t[]){1, 0, 1});
    sl_tensor *wa = leaf(sl_shape(3)), *wb = leaf(sl_shape(3));
    expect(sl_where(cond, wa, wb), wa, "sl_where", false);
    expect(sl_where(cond, leaf(sl_shape(3)), leaf(sl_shape(3))), cond, "sl_where", true);
    sl_tensor *mx = leaf(sl_shape(2, 3));
    expect(sl_masked_fill(mx, cond, -1), mx, "sl_masked_fill", false);
    expect(sl_masked_fill(leaf(sl_shape(2, 3)), cond, -1), cond, "sl_masked_fill", true);

    /* attention reads q, k, v and its output, not the slopes (their values are copied) */
    for (int which = 0; which < 5; which++) {
        sl_tensor *q = leaf(sl_shape(1, 2, 4, 8)), *k = leaf(sl_shape(1, 2, 4, 8));
        sl_tensor *v = leaf(sl_shape(1, 2, 4, 8));
        sl_tensor *m = sl_requires_grad(sl_to_dtype(sl_alibi_slopes(2), SL_F64), true);
        sl_tensor *y = sl_alibi_attention(q, k, v, m, NULL);
        sl_tensor *in[5] = {q, k, v, y, m};
        expect(y, in[which], "sl_alibi_attention", which < 4);
    }
    /* rotary and T5's bias keep only tables of their own */
    sl_tensor *rx = leaf(sl_shape(1, 2, 3, 4));
    expect(sl_rotary(rx, 0, 10000), rx, "sl_rotary", false);
    sl_tensor *t5 = leaf(sl_shape(2, 8));
    expect(sl_t5_bias(t5, 3, 3, 16), t5, "sl_t5_bias", false);
}
END_TEST

/* ---------------------------------------------------------------- output allocation */

/* An op whose output cannot be made says which op it was (the message used to name sl_empty).
 * The inputs are expanded views of one element, so nothing large is allocated. */
START_TEST(output_allocation_errors_name_the_op)
{
    const int64_t big = INT64_C(1) << 30;
    sl_tensor *one = sl_ones(SL_F32, sl_shape(1, 1));
    sl_tensor *col = sl_expand(one, sl_shape(big, 1)), *row = sl_expand(one, sl_shape(1, big));
    ck_assert_ptr_nonnull(col);
    ck_assert_ptr_nonnull(row);
    ck_assert_ptr_null(sl_matmul(col, row));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_matmul: [1073741824,1073741824] is too large");
    sl_error_clear();
    ck_assert_ptr_null(sl_add(col, row));
    ck_assert_str_eq(sl_error_message(), "sl_add: [1073741824,1073741824] is too large");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear(col, col, SL_NONE, SL_ACT_NONE)); /* W is [2^30, 1] */
    ck_assert_str_eq(sl_error_message(), "sl_linear: [1073741824,1073741824] is too large");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- released tensors */

#define ck_assert_released(op, arg)                                                                \
    do {                                                                                           \
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);                                                \
        ck_assert_str_eq(sl_error_message(),                                                       \
                         op ": argument '" arg "' was released by a reset of the arena it was "    \
                            "made in (sl_arena_reset): its memory may hold something else now; "   \
                            "make it again, or keep it in an arena that outlives its use");        \
        sl_error_clear();                                                                          \
    } while (0)

/* The reproducer: slopes made in an arena, the arena reset and a tensor of 7s made in
 * it, which used to take the slopes' place (the attention then read slopes 7 7). */
START_TEST(ops_refuse_a_released_tensor)
{
    sl_arena *a = sl_arena_new(0), *prev = sl_arena_set(a);
    sl_tensor *slopes = sl_alibi_slopes(2);
    sl_arena_reset(a);
    sl_tensor *seven = sl_full(SL_F32, sl_shape(2), 7);
    sl_tensor *q = sl_zeros(SL_F32, sl_shape(1, 2, 3, 4));
    ck_assert_ptr_null(sl_alibi_attention(q, q, q, slopes, NULL));
    ck_assert_released("sl_alibi_attention", "slopes");
    ck_assert_ptr_null(sl_add(seven, slopes));
    ck_assert_released("sl_add", "b");
    ck_assert_ptr_null(sl_concat(2, (sl_tensor *[]){seven, slopes}, 0));
    ck_assert_released("sl_concat", "tensors[i]");
    sl_rng rng = sl_rng_seed(1);
    sl_params *ps = sl_params_new(SL_F32);
    sl_linear_module *lin = sl_linear_new(ps, "lin", 2, 2, true, &rng);
    ck_assert_ptr_nonnull(lin);
    ck_assert_ptr_null(sl_linear_forward_residual(lin, slopes, seven));
    ck_assert_released("sl_linear_forward", "x");
    ck_assert_ptr_null(sl_linear_residual(seven, lin->weight, lin->bias, SL_ACT_NONE, slopes));
    ck_assert_released("sl_linear_residual", "residual");
    sl_params_free(ps);
    ck_assert_ptr_nonnull(sl_alibi_attention(q, q, q, SL_NONE, NULL)); /* the live ones work */

    /* the accessors */
    ck_assert(isnan(sl_get(slopes, 0)));
    ck_assert_released("sl_get", "t");
    ck_assert(isnan(sl_item(sl_narrow(slopes, 0, 0, 1))));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE); /* sl_narrow refused it */
    sl_error_clear();
    ck_assert(!sl_fill(slopes, 1));
    ck_assert_released("sl_fill", "t");
    sl_set(slopes, 0, 1);
    ck_assert_released("sl_set", "t");
    ck_assert(!sl_copy_into(slopes, seven));
    ck_assert_released("sl_copy_into", "dst");
    ck_assert(!sl_copy_into(seven, slopes));
    ck_assert_released("sl_copy_into", "src");
    ck_assert_double_eq(sl_get(seven, 0), 7); /* untouched */

    /* released memory now holding zeros (a raw allocation over the old header) */
    sl_arena_reset(a);
    sl_tensor *t = sl_full(SL_F32, sl_shape(2), 1);
    sl_arena_reset(a);
    memset(sl_arena_alloc(a, 4096, 64), 0, 4096);
    ck_assert(isnan(sl_get(t, 0)));
    ck_assert_released("sl_get", "t");
    sl_arena_set(prev);
    sl_arena_free(a);
}
END_TEST

/* A loss whose tape was reset is released (the message used to be "does not require grad"); a
 * tape whose input was released fails before reading it. */
START_TEST(backward_through_a_released_tape_fails)
{
    sl_arena *step = sl_arena_new(0), *other = sl_arena_new(0);
    sl_rng r = sl_rng_seed(5);
    sl_tensor *w = tu_randn(&r, SL_F64, sl_shape(3)); /* in the test's arena */
    sl_arena *prev = sl_arena_set(step);
    sl_tensor *loss = sl_sum_all(sl_mul(w, w));
    sl_arena_reset(step);
    ck_assert(!sl_backward(loss));
    ck_assert_released("sl_backward", "out");

    sl_tensor *y = sl_mul(w, w);
    sl_arena_set(other);
    sl_tensor *gout = sl_ones(SL_F64, sl_shape(3));
    sl_arena_reset(other);
    ck_assert(!sl_backward_ex(y, gout, 0));
    ck_assert_released("sl_backward", "grad_out");

    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3));
    sl_arena_set(step);
    loss = sl_sum_all(sl_mul(x, w));
    sl_arena_reset(other);
    ck_assert(!sl_backward(loss));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(),
                     "sl_backward: input 0 of sl_mul (which made f64 [3]) was released by a reset "
                     "of the arena it was made in (sl_arena_reset) before the backward; keep an "
                     "op's inputs in an arena that outlives its backward");
    sl_error_clear();
    ck_assert_ptr_null(w->grad);
    sl_arena_set(prev);
    sl_arena_free(step);
    sl_arena_free(other);
}
END_TEST

/* A reset moves the arena's allocations, so the same tensors made again after a reset do not
 * land on the headers of the old ones, and a stale pointer is caught however the loop goes. */
START_TEST(a_training_loop_catches_a_tensor_kept_across_steps)
{
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    sl_tensor *kept = NULL;
    for (int i = 0; i < 4; i++) {
        sl_arena_reset(step);
        sl_tensor *x = sl_full(SL_F32, sl_shape(8), i);
        ck_assert_ptr_nonnull(sl_exp(x));
        if (kept) {
            ck_assert_ptr_ne(kept, x);
            ck_assert_ptr_null(sl_exp(kept));
            ck_assert_released("sl_exp", "a");
        }
        kept = x;
    }
    sl_arena_set(prev);
    sl_arena_free(step);
}
END_TEST

/* Debug builds fill released memory with 0xFF bytes: a raw pointer into a released tensor reads
 * NaN (f32, f64) or -1 (i32). AddressSanitizer builds poison it instead (reading it would be
 * reported), and release builds leave it as it is (a reset costs nothing there): in those, the
 * test checks what it can. */
START_TEST(released_memory_is_poisoned_in_debug_builds)
{
    sl_arena *a = sl_arena_new(0), *prev = sl_arena_set(a);
    sl_tensor *f = sl_full(SL_F32, sl_shape(16), 1);
    sl_tensor *i = sl_full(SL_I32, sl_shape(16), 1);
    const unsigned char *fb = sl_ptr(f);
    const int32_t *ib = sl_ptr(i);
    sl_arena_reset(a);
    (void)fb, (void)ib; /* unread in release builds */
#if defined(__SANITIZE_ADDRESS__)
    ck_assert(__asan_address_is_poisoned(fb));
    ck_assert(__asan_address_is_poisoned(fb + 63));
    ck_assert(__asan_address_is_poisoned(ib));
#elif !defined(NDEBUG)
    for (int k = 0; k < 64; k++) ck_assert_uint_eq(fb[k], 0xff);
    ck_assert(isnan(((const float *)fb)[3]));
    ck_assert_int_eq(ib[5], -1);
#endif
    ck_assert(isnan(sl_get(f, 0))); /* every build refuses it through the API */
    ck_assert_released("sl_get", "t");
    sl_arena_set(prev);
    sl_arena_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safety");
    TCase *tc = tcase_create("safety");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, fill_between_forward_and_backward_fails);
    tu_add_test(s, tc, writes_through_views_count);
    tu_add_test(s, tc, optimizer_step_between_forward_and_backward_fails);
    tu_add_test(s, tc, every_op_keeps_what_its_backward_reads);
    tu_add_test(s, tc, output_allocation_errors_name_the_op);
    tu_add_test(s, tc, ops_refuse_a_released_tensor);
    tu_add_test(s, tc, backward_through_a_released_tape_fails);
    tu_add_test(s, tc, a_training_loop_catches_a_tensor_kept_across_steps);
    tu_add_test(s, tc, released_memory_is_poisoned_in_debug_builds);
    return tu_run(s);
}
