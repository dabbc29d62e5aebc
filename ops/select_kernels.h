/* ops/select_kernels.h — the kernels of sl_where and sl_masked_fill, written once over a type T
 * and included by select.c with T = float and with T = double (SUF names them: _f32, _f64).
 * Each is one run of sl__foreach_broadcast (tensor/internal.h): byte pointers and byte
 * strides, the condition or mask i32. The backward kernel ACCUMULATES into the gradient. */

/* One run of y = c ? a : b, c i32; p and the byte strides bs in the order y, c, a, b. */
static void FN(where_forward)(char *const *p, const int64_t *bs, int64_t n)
{
    T *y = (T *)p[0];
    const int32_t *c = (const int32_t *)p[1];
    const T *a = (const T *)p[2], *b = (const T *)p[3];
    int64_t sy = bs[0] / (int64_t)sizeof(T), sc = bs[1] / (int64_t)sizeof(int32_t);
    int64_t sa = bs[2] / (int64_t)sizeof(T), sb = bs[3] / (int64_t)sizeof(T);
    for (int64_t i = 0; i < n; i++) y[i * sy] = c[i * sc] ? a[i * sa] : b[i * sb];
}

/* One run of y = m ? value : x, m i32; operands y, x, m. */
static void FN(masked_fill_forward)(char *const *p, const int64_t *bs, int64_t n, T value)
{
    T *y = (T *)p[0];
    const T *x = (const T *)p[1];
    const int32_t *m = (const int32_t *)p[2];
    int64_t sy = bs[0] / (int64_t)sizeof(T), sx = bs[1] / (int64_t)sizeof(T);
    int64_t sm = bs[2] / (int64_t)sizeof(int32_t);
    for (int64_t i = 0; i < n; i++) y[i * sy] = m[i * sm] ? value : x[i * sx];
}

/* One run of a selection's backward: d += g where (c != 0) == when; operands d, g, c. d may have
 * stride 0 (its input was broadcast along the run): the run then sums into one element. */
static void FN(select_backward)(char *const *p, const int64_t *bs, int64_t n, bool when)
{
    T *d = (T *)p[0];
    const T *g = (const T *)p[1];
    const int32_t *c = (const int32_t *)p[2];
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    int64_t sc = bs[2] / (int64_t)sizeof(int32_t);
    for (int64_t i = 0; i < n; i++)
        if ((c[i * sc] != 0) == when) d[i * sd] += g[i * sg];
}
