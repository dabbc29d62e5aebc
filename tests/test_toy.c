/* End to end: a small MLP learns XOR with plain SGD written in the test from the ops alone. */
#include "testutil.h"

enum { HIDDEN = 8, STEPS = 500 };

typedef struct {
    double first_loss, last_loss;
    double out[4];             /* the model's outputs at the last step */
    uint64_t allocs_after_warm; /* heap allocations made by steps 2..STEPS */
} xor_run;

/* out = tanh(x w1 + b1) w2 + b2 on the four XOR points, mean squared error against 0/1
 * targets, full-batch SGD with lr 0.2 for STEPS steps. Parameters live in the test's arena,
 * each step in a step arena reset after the update. */
static xor_run train_xor(void)
{
    const double xs[] = {0, 0, 0, 1, 1, 0, 1, 1}, ys[] = {0, 1, 1, 0};
    sl_rng rng = sl_rng_seed(2022);
    sl_tensor *x = sl_from_data(SL_F64, sl_shape(4, 2), xs); // (4, 2)
    sl_tensor *y = sl_from_data(SL_F64, sl_shape(4, 1), ys); // (4, 1)
    sl_tensor *w1 = tu_randn(&rng, SL_F64, sl_shape(2, HIDDEN));
    sl_tensor *b1 = sl_requires_grad(sl_zeros(SL_F64, sl_shape(HIDDEN)), true);
    sl_tensor *w2 = tu_randn(&rng, SL_F64, sl_shape(HIDDEN, 1));
    sl_tensor *b2 = sl_requires_grad(sl_zeros(SL_F64, sl_shape(1)), true);
    sl_tensor *params[] = {w1, b1, w2, b2};

    xor_run r = {0};
    uint64_t heap_at_step_1 = 0;
    sl_arena *step = sl_arena_new(0);
    sl_arena *outer = sl_arena_set(step);
    for (int it = 0; it < STEPS; it++) {
        if (it == 1) heap_at_step_1 = sl_heap_allocs();
        sl_tensor *out = sl_add(sl_matmul(sl_tanh(sl_add(sl_matmul(x, w1), b1)), w2), b2);
        sl_tensor *err = sl_sub(out, y);
        sl_tensor *loss = sl_mean_all(sl_mul(err, err));
        ck_assert_msg(loss && sl_backward(loss), "step %d: %s", it, sl_error_message());
        r.last_loss = sl_item(loss);
        if (it == 0) r.first_loss = r.last_loss;
        for (int i = 0; i < 4; i++) r.out[i] = sl_get(out, i);

        bool was = sl_set_grad_enabled(false);
        for (int k = 0; k < 4; k++) {
            sl_tensor *p = params[k];
            ck_assert(sl_copy_into(p, sl_sub(p, sl_mul_scalar(p->grad, 0.2))));
            sl_zero_grad(p);
        }
        sl_set_grad_enabled(was);
        sl_arena_reset(step);
    }
    r.allocs_after_warm = sl_heap_allocs() - heap_at_step_1;
    sl_arena_set(outer);
    sl_arena_free(step);
    return r;
}

/* Stated goal: after 500 steps the loss is below 1e-4 and every output is within 0.02 of its
 * target, starting from an untrained loss above 0.1. */
START_TEST(mlp_learns_xor_to_loss_below_1e_4)
{
    const double ys[] = {0, 1, 1, 0};
    xor_run r = train_xor();
    ck_assert_msg(r.first_loss > 0.1,
                  "the untrained loss %g is already small: the test proves nothing", r.first_loss);
    ck_assert_msg(r.last_loss < 1e-4, "loss after %d steps: %g (first %g)", STEPS, r.last_loss,
                  r.first_loss);
    for (int i = 0; i < 4; i++) ck_assert_close(r.out[i], ys[i], 0, 0.02);
}
END_TEST

/* Once the first step has sized the arenas and the leaves' gradients, a whole training step
 * (forward, backward, SGD update, arena reset) makes no heap allocation. */
START_TEST(xor_training_step_allocates_nothing_once_warm)
{
    xor_run r = train_xor();
    ck_assert_msg(r.allocs_after_warm == 0, "steps 2..%d made %llu heap allocations", STEPS,
                  (unsigned long long)r.allocs_after_warm);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("toy");
    TCase *tc = tcase_create("mlp");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, mlp_learns_xor_to_loss_below_1e_4);
    tu_add_test(s, tc, xor_training_step_allocates_nothing_once_warm);
    return tu_run(s);
}
