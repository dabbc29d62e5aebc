/* Fast paths of tensor/tensor.c that a training step leans on. Large gradient accumulations:
 * the backward of a view adds the view's gradient into its base's, split over the pool when it
 * is large and sums nothing (values against loops written here, 1 thread against 2 bitwise, and
 * the reducing broadcast case, which stays serial). Fills (sl_fill, sl_zero_grad): one value
 * converted once, then memset or block copies over contiguous runs. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { B = 6, T = 100, H = 4, D = 32 }; /* 76800 elements: above the parallel threshold */

/* x.grad after y = permute(x, 0 2 1 3) (B, T, H, D) -> (B, H, T, D), backward with g, plus
 * z = narrow(x, 1, 10, 50) backward with gz: x.grad[b,t,h,d] = g[b,h,t,d] + gz[b,t-10,h,d]. */
static sl_tensor *views_backward(sl_tensor *x, sl_tensor *g, sl_tensor *gz)
{
    sl_zero_grad(x);
    sl_tensor *y = sl_permute(x, (int[]){0, 2, 1, 3});
    sl_tensor *z = sl_narrow(x, 1, 10, 50);
    ck_assert_msg(y && z && sl_backward_ex(y, g, 0) && sl_backward_ex(z, gz, 0), "%s",
                  sl_error_message());
    return x->grad;
}

START_TEST(view_backwards_values_and_threads)
{
    for (int k = 0; k < 2; k++) { /* f32, f64 */
        sl_dtype dt = k ? SL_F64 : SL_F32;
        size_t es = sl_dtype_size(dt), bytes = es * B * T * H * D;
        sl_rng r = sl_rng_seed(1);
        sl_tensor *x = tu_randn(&r, dt, sl_shape(B, T, H, D));
        sl_tensor *g = sl_rand_normal(&r, dt, sl_shape(B, H, T, D), 0, 1);
        sl_tensor *gz = sl_rand_normal(&r, dt, sl_shape(B, 50, H, D), 0, 1);
        int prev = sl_get_num_threads();
        char *got[2];
        for (int th = 0; th < 2; th++) {
            sl_set_num_threads(th + 1);
            sl_tensor *gx = views_backward(x, g, gz);
            got[th] = malloc(bytes);
            ck_assert(sl_copy_out(gx, got[th]));
        }
        sl_set_num_threads(prev);
        ck_assert(!memcmp(got[0], got[1], bytes));
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) {
                        int64_t at = ((b * T + t) * H + h) * D + d;
                        double want = sl_get(g, ((b * H + h) * T + t) * D + d);
                        if (t >= 10 && t < 60) {
                            double z = sl_get(gz, ((b * 50 + t - 10) * H + h) * D + d);
                            want = dt == SL_F32 ? (double)((float)want + (float)z) : want + z;
                        }
                        double v = dt == SL_F32 ? ((float *)got[0])[at] : ((double *)got[0])[at];
                        ck_assert_msg(v == want, "%s element %lld: %.17g, want %.17g",
                                      sl_dtype_name(dt), (long long)at, v, want);
                    }
        free(got[0]);
        free(got[1]);
    }
}
END_TEST

/* An expanded (broadcast) view's backward sums over the broadcast dim: that accumulation sums,
 * so it is not split (parts would race on the same elements); on 2 threads it is still the
 * sum. */
START_TEST(broadcast_backward_sums)
{
    sl_rng r = sl_rng_seed(2);
    sl_tensor *x = tu_randn(&r, SL_F32, sl_shape(1, T, H, D));
    sl_tensor *g = sl_rand_normal(&r, SL_F32, sl_shape(B, T, H, D), 0, 1);
    int prev = sl_get_num_threads();
    sl_set_num_threads(2);
    sl_tensor *y = sl_expand(x, sl_shape(B, T, H, D));
    ck_assert_msg(y && sl_backward_ex(y, g, 0), "%s", sl_error_message());
    sl_set_num_threads(prev);
    const float *gp = g->data, *gx = x->grad->data;
    for (int i = 0; i < T * H * D; i++) {
        double s = 0;
        for (int b = 0; b < B; b++) s += gp[b * T * H * D + i];
        ck_assert_close(gx[i], s, 1e-6, 1e-6);
    }
}
END_TEST

START_TEST(fills)
{
    sl_tensor *f = sl_empty(SL_F32, sl_shape(3, 1001));
    ck_assert(sl_fill(f, 2.5));
    for (int i = 0; i < 3003; i++) ck_assert_float_eq(((float *)f->data)[i], 2.5f);
    ck_assert(sl_fill(f, 0));
    for (int i = 0; i < 3003; i++) ck_assert_float_eq(((float *)f->data)[i], 0);
    /* -0 is not all-zero bits: copied, sign kept */
    sl_tensor *d = sl_empty(SL_F64, sl_shape(77));
    ck_assert(sl_fill(d, -0.0));
    for (int i = 0; i < 77; i++) ck_assert(signbit(((double *)d->data)[i]));
    sl_tensor *n = sl_empty(SL_I32, sl_shape(5, 3));
    ck_assert(sl_fill(n, -7.9)); /* converted once, as a copy converts */
    for (int i = 0; i < 15; i++) ck_assert_int_eq(((int32_t *)n->data)[i], -7);
    /* a strided view: only its elements change */
    ck_assert(sl_fill(f, 1));
    sl_tensor *col = sl_narrow(f, 1, 10, 1);
    ck_assert(sl_fill(col, 3));
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 1001; j++)
            ck_assert_float_eq(((float *)f->data)[r * 1001 + j], j == 10 ? 3 : 1);
    /* sl_zero_grad on a large gradient */
    sl_rng rng = sl_rng_seed(3);
    sl_tensor *x = tu_randn(&rng, SL_F32, sl_shape(300, 301));
    ck_assert(sl_backward_ex(sl_mul_scalar(x, 2), sl_ones(SL_F32, sl_shape(300, 301)), 0));
    ck_assert_float_eq(((float *)x->grad->data)[300 * 301 - 1], 2);
    sl_zero_grad(x);
    for (int i = 0; i < 300 * 301; i++) ck_assert_float_eq(((float *)x->grad->data)[i], 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("accumulate");
    TCase *tc = tcase_create("accumulate");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, view_backwards_values_and_threads);
    tu_add_test(s, tc, broadcast_backward_sums);
    tu_add_test(s, tc, fills);
    tu_every_isa();
    return tu_run(s);
}
