/* Once warm, a training step allocates nothing from the heap.
 *
 * The step: a two-layer MLP classifier (matmul, add, gelu, layernorm, softmax-based
 * cross-entropy, a reduction), backward, and an SGD update, in a step arena that is reset after
 * every step. Two counters watch the heap:
 *   - sl_heap_allocs(): every allocation shortlong itself makes (arenas, the tape's sort buffer);
 *   - in builds without AddressSanitizer, this test also interposes malloc/calloc/realloc for
 *     the whole process, so allocations by anything underneath (OpenBLAS, libc) count too. */
#include "testutil.h"

#include <stdatomic.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define COUNT_LIBC 0
#else
#define COUNT_LIBC 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static atomic_ulong libc_allocs;
void *malloc(size_t n)
{
    atomic_fetch_add(&libc_allocs, 1);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    atomic_fetch_add(&libc_allocs, 1);
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    atomic_fetch_add(&libc_allocs, 1);
    return __libc_realloc(p, n);
}
#endif

typedef struct {
    sl_tensor *w1, *b1, *g, *beta, *w2, *b2;
} mlp;

/* One SGD step on a fixed batch; returns the loss. */
static double step(mlp *m, sl_tensor *x, sl_tensor *y, sl_arena *arena)
{
    sl_arena *prev = sl_arena_set(arena);
    sl_tensor *h = sl_gelu(sl_add(sl_matmul(x, m->w1), m->b1), SL_GELU_TANH); /* (B, H) */
    h = sl_layer_norm(h, m->g, m->beta, 1e-5);
    sl_tensor *logits = sl_add(sl_matmul(h, sl_transpose(m->w2, 0, 1)), m->b2); /* (B, C) */
    sl_tensor *loss = sl_add(sl_cross_entropy(logits, y, SL_NO_IGNORE),
                             sl_mul_scalar(sl_mean_all(sl_mul(m->w1, m->w1)), 1e-4));
    sl_tensor *probs = sl_softmax(logits, -1); /* not used by the loss: a dead branch */
    /* No Check assertions in here: Check allocates when it records an assertion. */
    if (!loss || !probs || !sl_backward(loss)) {
        sl_arena_set(prev);
        return NAN;
    }
    double v = sl_item(loss);
    sl_tensor *ps[] = {m->w1, m->b1, m->g, m->beta, m->w2, m->b2};
    for (int k = 0; k < 6; k++) {
        float *p = ps[k]->data, *gr = ps[k]->grad->data;
        for (int64_t i = 0; i < sl_numel(ps[k]); i++) {
            p[i] -= 0.1f * gr[i];
            gr[i] = 0;
        }
    }
    sl_arena_set(prev);
    sl_arena_reset(arena);
    return v;
}

START_TEST(warm_training_step_allocates_nothing)
{
    sl_rng r = sl_rng_seed(11);
    enum { B = 64, D = 32, H = 128, C = 10 };
    mlp m = {tu_randn(&r, SL_F32, sl_shape(D, H)), tu_randn(&r, SL_F32, sl_shape(H)),
             sl_requires_grad(sl_ones(SL_F32, sl_shape(H)), true),
             sl_requires_grad(sl_zeros(SL_F32, sl_shape(H)), true),
             tu_randn(&r, SL_F32, sl_shape(C, H)), tu_randn(&r, SL_F32, sl_shape(C))};
    sl_fill(m.b1, 0);
    sl_fill(m.b2, 0);
    sl_tensor *x = sl_rand_normal(&r, SL_F32, sl_shape(B, D), 0, 1);
    sl_tensor *y = sl_empty(SL_I32, sl_shape(B));
    for (int i = 0; i < B; i++) ((int32_t *)y->data)[i] = (int32_t)sl_rng_below(&r, C);
    sl_arena *arena = sl_arena_new(1 << 16); /* small blocks: the warm-up must grow it */
    double first = step(&m, x, y, arena);
    step(&m, x, y, arena);
    uint64_t ours = sl_heap_allocs();
#if COUNT_LIBC
    unsigned long libc = atomic_load(&libc_allocs);
#endif
    size_t reserved = sl_arena_reserved(arena);
    double last = 0;
    for (int i = 0; i < 20; i++) last = step(&m, x, y, arena);
    /* Read every counter before the first assertion: Check allocates when it records one. */
    uint64_t ours_after = sl_heap_allocs();
#if COUNT_LIBC
    unsigned long libc_after = atomic_load(&libc_allocs);
#endif
    size_t reserved_after = sl_arena_reserved(arena);
    ck_assert_msg(!isnan(first) && !isnan(last), "a step failed: %s", sl_error_message());
    ck_assert_uint_eq(ours_after, ours);
#if COUNT_LIBC
    ck_assert_uint_eq(libc_after, libc);
#endif
    ck_assert_uint_eq(reserved_after, reserved);
    ck_assert_msg(last < first, "the steps did train: %g -> %g", first, last);
    sl_arena_free(arena);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("steady_state");
    TCase *tc = tcase_create("steady_state");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, warm_training_step_allocates_nothing);
    tu_every_isa();
    return tu_run(s);
}
