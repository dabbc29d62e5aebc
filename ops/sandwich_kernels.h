/* ops/sandwich_kernels.h — Sandwich's bias as a per-head table of distance, written once over a
 * type T (instantiated by sandwich.c). The sums of cosines are taken in double. */
#include <math.h>

/* tab[h, d] = (sum_{k=1}^{dim/2} cos(d w_k) - dim/2) H / (8 (h + 1)), w_k = 10000^(-2k/dim),
 * for the distances [d0, d1) of every head; w[k - 1] = w_k. */
static void FN(sandwich_table)(int64_t H, int64_t dim, const double *w, int64_t n, T *restrict tab,
                               int64_t d0, int64_t d1)
{
    for (int64_t d = d0; d < d1; d++) {
        double s = 0;
        for (int64_t k = 0; k < dim / 2; k++) s += cos((double)d * w[k]);
        s -= (double)(dim / 2);
        for (int64_t h = 0; h < H; h++)
            tab[h * n + d] = (T)(s * (double)H / (8.0 * (double)(h + 1)));
    }
}
