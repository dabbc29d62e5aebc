/* examples/toy_mlp.c — a small MLP learns "two moons" with autograd and plain SGD.
 *
 * Two interleaving half circles of noisy points, labelled -1 and +1, generated from the seeded
 * RNG. The model is  out = tanh(x W1 + b1) W2 + b2,  trained full-batch on the mean squared
 * error against the labels; a point counts as right when sign(out) is its label.
 *
 * Lifetime: parameters and their gradients live in `params`; every step's activations and tape
 * live in `step`, which is reset after the update, so the loop allocates nothing once warm.
 * The SGD update p -= lr * dL/dp is written from the ops themselves, with grad mode off.
 *
 *     ./build/bin/toy_mlp
 */
#include <shortlong/shortlong.h>

#include <math.h>
#include <stdio.h>

enum { N = 256, D = 2, H = 16, STEPS = 2000, PRINT_EVERY = 200 };
static const double LR = 0.3;

static int fail(const char *where)
{
    fprintf(stderr, "toy_mlp: %s failed: %s\n", where, sl_error_message());
    return 1;
}

/* N points (x: (N, D), y: (N, 1)): even i on the upper moon (label -1), odd i on the lower
 * moon (label +1), with N(0, 0.1) noise on both coordinates. */
static void make_moons(sl_rng *rng, float *x, float *y)
{
    for (int i = 0; i < N; i++) {
        double t = M_PI * sl_rng_uniform(rng);
        bool lower = i % 2;
        double px = lower ? 1 - cos(t) : cos(t), py = lower ? 0.5 - sin(t) : sin(t);
        x[i * D + 0] = (float)(px + 0.1 * sl_rng_normal(rng));
        x[i * D + 1] = (float)(py + 0.1 * sl_rng_normal(rng));
        y[i] = lower ? 1.0f : -1.0f;
    }
}

static double accuracy(const sl_tensor *out, const float *y)
{
    int right = 0;
    for (int i = 0; i < N; i++) right += (sl_get(out, i) > 0) == (y[i] > 0);
    return (double)right / N;
}

int main(void)
{
    sl_arena *params = sl_arena_new(0), *step = sl_arena_new(0);
    if (!params || !step) return fail("sl_arena_new");
    sl_rng rng = sl_rng_seed(42);

    static float xbuf[N * D], ybuf[N];
    make_moons(&rng, xbuf, ybuf);

    sl_arena_set(params);
    sl_tensor *x = sl_from_data(SL_F32, sl_shape(N, D), xbuf); // (N, D)
    sl_tensor *y = sl_from_data(SL_F32, sl_shape(N, 1), ybuf); // (N, 1)
    sl_tensor *w1 = sl_rand_normal(&rng, SL_F32, sl_shape(D, H), 0, 1 / sqrt(D)); // (D, H)
    sl_tensor *b1 = sl_zeros(SL_F32, sl_shape(H));
    sl_tensor *w2 = sl_rand_normal(&rng, SL_F32, sl_shape(H, 1), 0, 1 / sqrt(H)); // (H, 1)
    sl_tensor *b2 = sl_zeros(SL_F32, sl_shape(1));
    sl_tensor *p[] = {w1, b1, w2, b2};
    for (int i = 0; i < 4; i++)
        if (!sl_requires_grad(p[i], true)) return fail("creating the parameters");

    sl_arena_set(step);
    double loss_value = NAN, acc = 0;
    uint64_t heap_at_step_2 = 0;
    for (int it = 1; it <= STEPS; it++) {
        if (it == 2) heap_at_step_2 = sl_heap_allocs();
        sl_tensor *h = sl_tanh(sl_add(sl_matmul(x, w1), b1)); // (N, H)
        sl_tensor *out = sl_add(sl_matmul(h, w2), b2);         // (N, 1)
        sl_tensor *diff = sl_sub(out, y);
        sl_tensor *loss = sl_mean_all(sl_mul(diff, diff));
        if (!loss || !sl_backward(loss)) return fail("the forward or backward pass");
        loss_value = sl_item(loss);
        if (!isfinite(loss_value)) {
            fprintf(stderr, "toy_mlp: the loss diverged at step %d\n", it);
            return 1;
        }
        acc = accuracy(out, ybuf);

        bool grad_was = sl_set_grad_enabled(false);
        for (int i = 0; i < 4; i++) {
            if (!sl_copy_into(p[i], sl_sub(p[i], sl_mul_scalar(p[i]->grad, LR))))
                return fail("the SGD update");
            sl_zero_grad(p[i]);
        }
        sl_set_grad_enabled(grad_was);

        if (it == 1 || it % PRINT_EVERY == 0)
            printf("step %4d  loss %.4f  accuracy %.3f\n", it, loss_value, acc);
        sl_arena_reset(step);
    }
    printf("final: loss %.4f  accuracy %.3f  (%d points, %d steps, %d threads; "
           "%.0f KiB step arena, %llu heap allocations after step 1)\n",
           loss_value, acc, N, STEPS, sl_get_num_threads(), sl_arena_peak(step) / 1024.0,
           (unsigned long long)(sl_heap_allocs() - heap_at_step_2));

    sl_arena_set(NULL);
    sl_arena_free(step);
    sl_arena_free(params);
    return 0;
}
