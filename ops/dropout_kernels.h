/* ops/dropout_kernels.h — the dropout kernels, written once over a type T and instantiated by
 * dropout_isa.c for every SIMD level with T = float and with T = double (SUF names them: _f32,
 * _f64). The backward kernel ACCUMULATES into the input's gradient. */

/* y = keep ? x * scale : 0 over n contiguous elements. */
static void FN(dropout_forward)(const T *restrict x, const uint8_t *restrict keep, T scale,
                                T *restrict y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0;
}

/* gx += keep ? g * scale : 0. */
static void FN(dropout_backward)(const T *restrict g, const uint8_t *restrict keep, T scale,
                                 T *restrict gx, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (keep[i]) gx[i] += g[i] * scale;
}
