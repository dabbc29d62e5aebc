/* ops/kerple_kernels.h — KERPLE's logarithmic kernel as a per-head table of distance, and its
 * parameters' gradients from the gradient summed per distance, written once over a type T
 * (instantiated by kerple.c). The logarithm is taken in double. */
#include <math.h>

/* tab[h, d] = -r1[h] log(1 + r2[h] d), d in [0, n), for heads [h0, h1). */
static void FN(kerple_table)(const T *restrict r1, const T *restrict r2, int64_t n, T *restrict tab,
                             int64_t h0, int64_t h1)
{
    for (int64_t h = h0; h < h1; h++)
        for (int64_t d = 0; d < n; d++)
            tab[h * n + d] = (T)(-(double)r1[h] * log1p((double)r2[h] * (double)d));
}

/* With G[h, d] the bias gradient summed over the pairs at distance d:
 *     dL/dr1[h] += -sum_d G[h,d] log(1 + r2[h] d)
 *     dL/dr2[h] += -r1[h] sum_d G[h,d] d / (1 + r2[h] d)
 * (g1 / g2 NULL: that input needs no gradient). */
static void FN(kerple_backward)(const T *restrict r1, const T *restrict r2, const double *G,
                                int64_t H, int64_t n, T *restrict g1, T *restrict g2)
{
    for (int64_t h = 0; h < H; h++) {
        double s1 = 0, s2 = 0, b = r2[h];
        for (int64_t d = 0; d < n; d++) {
            s1 += G[h * n + d] * log1p(b * (double)d);
            s2 += G[h * n + d] * (double)d / (1 + b * (double)d);
        }
        if (g1) g1[h] += (T)-s1;
        if (g2) g2[h] += (T)(-(double)r1[h] * s2);
    }
}
