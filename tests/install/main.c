/* A consumer of an installed shortlong: y = x * x + x, dy/dx = 2x + 1 by autograd.
 * Built out of tree by tests/install/CMakeLists.txt (find_package) and by .ci/run (pkg-config). */
#include <shortlong/shortlong.h>

#include <math.h>
#include <stdio.h>

int main(void)
{
    sl_arena *arena = sl_arena_new(0);
    sl_arena_set(arena);
    const double xs[] = {-1.5, 0.0, 2.0};
    sl_tensor *x = sl_requires_grad(sl_from_data(SL_F64, sl_shape(3), xs), true);
    sl_tensor *y = sl_add(sl_mul(x, x), x);
    if (!y || !sl_backward_ex(y, sl_ones(SL_F64, sl_shape(3)), 0)) {
        fprintf(stderr, "install test: %s\n", sl_error_message());
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        double g = sl_get(x->grad, i);
        if (fabs(g - (2 * xs[i] + 1)) > 1e-12) {
            fprintf(stderr, "install test: dy/dx[%d] = %g, want %g\n", i, g, 2 * xs[i] + 1);
            bad = 1;
        }
    }
    /* The error mechanism works across the library boundary. */
    if (sl_add(x, sl_zeros(SL_F64, sl_shape(2))) != NULL || sl_error() != SL_ERR_SHAPE) {
        fprintf(stderr, "install test: a shape mismatch was not reported\n");
        bad = 1;
    }
    sl_error_clear();
    sl_arena_set(NULL);
    sl_arena_free(arena);
    if (!bad) printf("install test: ok (shortlong with %d threads)\n", sl_get_num_threads());
    return bad;
}
