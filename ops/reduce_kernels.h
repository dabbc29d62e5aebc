/* ops/reduce_kernels.h — the reduction kernels, written once over a type T and instantiated by
 * reduce_isa.c for every SIMD level with T = float and with T = double (SUF names them: _f32,
 * _f64): per-row helpers over a contiguous row of n elements, and the backward runs (byte
 * strides; operand 0 is the gradient buffer, accumulated into). */

static double FN(row_sum)(const T *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

/* sum (x - mean)^2 */
static double FN(row_sq_dev)(const T *x, int64_t n, double mean)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)x[i] - mean) * ((double)x[i] - mean);
    return s;
}

/* The first index of the maximum; a NaN is the maximum (it propagates). n >= 1. */
static int64_t FN(row_argmax)(const T *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 0; i < n && !isnan(x[best]); i++)
        if (x[i] > x[best] || isnan(x[i])) best = i;
    return best;
}

/* The first index of the minimum; a NaN is the minimum (it propagates). n >= 1. */
static int64_t FN(row_argmin)(const T *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 0; i < n && !isnan(x[best]); i++)
        if (x[i] < x[best] || isnan(x[i])) best = i;
    return best;
}

/* gx += scale * g */
static void FN(spread_run)(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    T scale = (T) * (const double *)ctx, *gx = (T *)p[0];
    const T *g = (const T *)p[1];
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    for (int64_t i = 0; i < n; i++) gx[i * sd] += scale * g[i * sg];
}

/* gx += g * 2 (x - mean) * scale; mean is double */
static void FN(var_grad_run)(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    double scale = *(const double *)ctx;
    T *gx = (T *)p[0];
    const T *g = (const T *)p[1], *x = (const T *)p[2];
    const double *mean = (const double *)p[3];
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    int64_t sx = bs[2] / (int64_t)sizeof(T), sm = bs[3] / (int64_t)sizeof(double);
    for (int64_t i = 0; i < n; i++)
        gx[i * sd] += g[i * sg] * (T)(2 * ((double)x[i * sx] - mean[i * sm]) * scale);
}
