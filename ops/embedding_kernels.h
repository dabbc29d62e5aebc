/* ops/embedding_kernels.h — the embedding kernels, written once over a type T and instantiated
 * by embedding_isa.c for every SIMD level with T = float and with T = double (SUF names them:
 * _f32, _f64). The backward kernel ACCUMULATES into the weight's gradient. */

/* Tokens [i0, i1): y[i, :] = w[idx[i], :], w (V, D) read through element strides ws0, ws1,
 * y (n, D) contiguous. */
static void FN(embedding_forward)(const T *restrict w, int64_t ws0, int64_t ws1,
                                  const int32_t *restrict idx, T *restrict y, int64_t i0,
                                  int64_t i1, int64_t D)
{
    for (int64_t i = i0; i < i1; i++) {
        const T *wr = w + idx[i] * ws0;
        T *yr = y + i * D;
        if (ws1 == 1) memcpy(yr, wr, sizeof(T) * (size_t)D);
        else
            for (int64_t d = 0; d < D; d++) yr[d] = wr[d * ws1];
    }
}

/* d += s over n elements. Not inlined: inlined into the loop over tokens, GCC loses the
 * pointers' restrict and leaves the loop scalar. */
static __attribute__((noinline)) void FN(add_run)(T *restrict d, const T *restrict s, int64_t n)
{
    SL_EACH(n, d[i] += s[i]);
}

/* Columns [d0, d1): dw[idx[i], d] += g[i, d] for every token i, in token order. Each column has
 * one owner, so repeated indices accumulate without a race, the same way on any thread count. */
static void FN(embedding_backward)(const int32_t *restrict idx, const T *restrict g,
                                   T *restrict dw, int64_t n, int64_t D, int64_t d0, int64_t d1)
{
    for (int64_t i = 0; i < n; i++) FN(add_run)(dw + idx[i] * D + d0, g + i * D + d0, d1 - d0);
}
