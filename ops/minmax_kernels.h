/* ops/minmax_kernels.h — the kernels of sl_abs, sl_clamp, sl_minimum and sl_maximum, written
 * once over a type T and included by minmax.c with T = float and with T = double (SUF names
 * them: _f32, _f64). The unary kernels run over contiguous ranges; the binary ones are runs of
 * sl__foreach (byte pointers, byte strides). Backward kernels ACCUMULATE into the gradient. */

/* y = |x| over n contiguous elements (a NaN stays NaN). */
static void FN(abs_forward)(const T *restrict x, T *restrict y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0 ? -x[i] : x[i] == 0 ? 0 : x[i];
}

/* gx += g sign(x), sign(0) = 0 (and 0 at a NaN). */
static void FN(abs_backward)(const T *restrict x, const T *restrict g, T *restrict gx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) gx[i] += x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0;
}

/* y = min(max(x, lo), hi); a NaN stays NaN (both comparisons are false). lo <= hi. */
static void FN(clamp_forward)(const T *restrict x, T *restrict y, int64_t n, T lo, T hi)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
}

/* gx += g where lo <= x <= hi (the bounds included, as PyTorch), 0 elsewhere and at a NaN. */
static void FN(clamp_backward)(const T *restrict x, const T *restrict g, T *restrict gx, int64_t n,
                               T lo, T hi)
{
    for (int64_t i = 0; i < n; i++) gx[i] += x[i] >= lo && x[i] <= hi ? g[i] : 0;
}

/* One run of y = max(a, b) (max) or min(a, b); operands y, a, b. A NaN in either gives NaN. On a
 * tie y is b's value (equal, but for the sign of a zero). */
static void FN(extreme_forward)(bool max, char *const *p, const int64_t *bs, int64_t n)
{
    T *y = (T *)p[0];
    const T *a = (const T *)p[1], *b = (const T *)p[2];
    int64_t sy = bs[0] / (int64_t)sizeof(T), sa = bs[1] / (int64_t)sizeof(T);
    int64_t sb = bs[2] / (int64_t)sizeof(T);
    if (max)
        for (int64_t i = 0; i < n; i++) {
            T u = a[i * sa], v = b[i * sb];
            y[i * sy] = u > v || isnan(u) ? u : v;
        }
    else
        for (int64_t i = 0; i < n; i++) {
            T u = a[i * sa], v = b[i * sb];
            y[i * sy] = u < v || isnan(u) ? u : v;
        }
}

/* One run of the backward of y = max(a, b) (or min) for input `which` (0: a, 1: b); operands d
 * (the gradient buffer, stride 0 where the input was broadcast), g, a, b. The input that is
 * strictly the extreme gets g, the other 0, and a tie splits g in halves (PyTorch's rule); where
 * either is NaN, neither comparison holds and both get g (PyTorch's formula gives the same). */
static void FN(extreme_backward)(bool max, int which, char *const *p, const int64_t *bs, int64_t n)
{
    T *d = (T *)p[0];
    const T *g = (const T *)p[1], *a = (const T *)p[2], *b = (const T *)p[3];
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    int64_t sa = bs[2] / (int64_t)sizeof(T), sb = bs[3] / (int64_t)sizeof(T);
    /* This input loses where the other one is strictly beyond it: for max(a, b), a loses where
     * a < b, and b where b < a. */
    bool lose_when_less = max;
    for (int64_t i = 0; i < n; i++) {
        T self = which == 0 ? a[i * sa] : b[i * sb], other = which == 0 ? b[i * sb] : a[i * sa];
        T gi = g[i * sg];
        if (self == other) d[i * sd] += gi / 2;
        else if (lose_when_less ? !(self < other) : !(self > other)) d[i * sd] += gi;
    }
}
