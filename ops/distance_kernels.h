/* ops/distance_kernels.h — filling a bias from a per-distance table and summing a bias gradient
 * per distance, written once over a type T (instantiated by distance.c). */

/* Rows [r0, r1) of out (H tq rows of tk): row r = h tq + i reads table row h at |p_i - j|. */
static void FN(distance_fill_rows)(const T *restrict table, int64_t n, int64_t tq, int64_t tk,
                                   T *restrict out, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t h = r / tq, p = tk - tq + r % tq;
        const T *tab = table + h * n;
        T *o = out + r * tk;
        int64_t before = p + 1 < tk ? (p + 1 > 0 ? p + 1 : 0) : tk; /* keys j <= p */
        for (int64_t j = 0; j < before; j++) o[j] = tab[p - j];
        for (int64_t j = before; j < tk; j++) o[j] = tab[j - p];
    }
}

/* acc[h, |p_i - j|] += g[h,i,j] for heads [h0, h1), in double, rows in order. */
static void FN(distance_sum_heads)(const T *restrict g, int64_t n, int64_t tq, int64_t tk,
                                   double *restrict acc, int64_t h0, int64_t h1)
{
    for (int64_t h = h0; h < h1; h++) {
        double *a = acc + h * n;
        for (int64_t i = 0; i < tq; i++) {
            int64_t p = tk - tq + i;
            const T *gr = g + (h * tq + i) * tk;
            int64_t before = p + 1 < tk ? (p + 1 > 0 ? p + 1 : 0) : tk;
            for (int64_t j = 0; j < before; j++) a[p - j] += gr[j];
            for (int64_t j = before; j < tk; j++) a[j - p] += gr[j];
        }
    }
}
